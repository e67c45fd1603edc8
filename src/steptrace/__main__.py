"""``python -m steptrace``: the command line."""

from steptrace.cli import main

if __name__ == "__main__":
    main()
