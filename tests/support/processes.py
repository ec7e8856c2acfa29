"""The one reaper for processes the tests start in their own process group (Dask processes, emulated pods)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence


def stop_process_groups(processes: Sequence[subprocess.Popen[bytes]], grace: float) -> None:
    """SIGTERM each live process group, wait up to `grace` seconds in all, then SIGKILL whatever is left of each
    group (even when the leader already exited) and reap the leaders."""
    live = [p for p in processes if p.poll() is None]
    for p in live:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in live:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(max(0.0, deadline - time.monotonic()))
    for p in processes:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(5)
