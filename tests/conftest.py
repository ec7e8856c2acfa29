"""Make the project importable as in `pulumi up` (the program runs from the project directory)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
