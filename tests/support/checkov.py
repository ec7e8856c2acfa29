"""checkov for the tests: where `make scan-venv` puts it, and what its tests do when it is missing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from components.lock import PROJECT_DIR

CHECKOV = PROJECT_DIR / "scan" / "venv" / "bin" / "checkov"
# `make test` sets it: there, a missing checkov fails the suite instead of skipping the scan CI relies on.
REQUIRE_CHECKOV = "LSDB_REQUIRE_CHECKOV"


def require_checkov(binary: Path = CHECKOV) -> None:
    """Skip without checkov, or fail when REQUIRE_CHECKOV is set (`make test`: CI's scan must not skip)."""
    if not binary.is_file():
        missing = f"{binary} missing: `make scan-venv` builds scan/venv"
        if os.environ.get(REQUIRE_CHECKOV):
            pytest.fail(f"{missing} ({REQUIRE_CHECKOV} is set: checkov must run)")
        pytest.skip(missing)
