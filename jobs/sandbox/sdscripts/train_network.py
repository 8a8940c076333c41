"""Stand-in for sd-scripts' train_network.py (see README.md): same flags, same checks, same files, no GPU."""

from _standin import main

if __name__ == "__main__":
    main("train_network.py")
