"""``python -m quantrack``: the command line."""

from quantrack.cli import main

if __name__ == "__main__":
    main()
