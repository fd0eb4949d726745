"""`python -m fleetsched`: the same command as `fleetsched`."""

import sys

from fleetsched.cli import main

sys.exit(main())
