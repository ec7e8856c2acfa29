"""`python -m components.verification ...`: the command line (components/verification/cli.py)."""

import sys

from components.verification.cli import main

sys.exit(main())
