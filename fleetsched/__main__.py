"""`python -m fleetsched`: the same command as `fleetsched`."""

import sys

from fleetsched.cli import main

if __name__ == "__main__":
    sys.exit(main())
