"""Stand-in for sd-scripts' gen_img.py (see _standin_gen.py): same flags, same output file names, no GPU."""

from _standin_gen import main

if __name__ == "__main__":
    main("gen_img.py")
