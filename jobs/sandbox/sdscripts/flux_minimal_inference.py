"""Stand-in for sd-scripts' flux_minimal_inference.py (see _standin_gen.py): same flags and output names, no GPU."""

from _standin_gen import main

if __name__ == "__main__":
    main("flux_minimal_inference.py")
