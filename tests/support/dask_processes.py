"""Test-only Dask helpers: a silent TCP listener and a worker preload that blocks the first task.

The local Dask cluster itself is product code (tools/local_dask.py: the benches use it too).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def silent_listener() -> Iterator[str]:
    """A TCP server on 127.0.0.1 that accepts connections and never sends or reads a byte; yields tcp://host:port."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.1)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except (TimeoutError, OSError):
                continue
            held.append(conn)

    thread = threading.Thread(target=accept, name="silent-listener", daemon=True)
    thread.start()
    try:
        yield f"tcp://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(2)
        for conn in held:
            conn.close()
        server.close()


# `dask worker --preload` file for worker-kill tests: the first worker to start a task whose key does not start
# with one of SKIP_PREFIXES writes its PID to MARKER (atomically, so only one worker ever does) and then blocks
# its event loop, so the task cannot finish before the test SIGKILLs that worker.
BLOCK_FIRST_TASK_PRELOAD = """
import os
import time

from distributed import WorkerPlugin

MARKER = os.environ["DASK_TEST_BLOCK_MARKER"]
SKIP_PREFIXES = tuple(p for p in os.environ.get("DASK_TEST_BLOCK_SKIP", "").split(",") if p)


class BlockFirstTask(WorkerPlugin):
    name = "block-first-task"

    def transition(self, key, start, finish, **kwargs):
        if finish != "executing":
            return
        name = key if isinstance(key, str) else str(key[0])
        if SKIP_PREFIXES and name.startswith(SKIP_PREFIXES):
            return
        try:
            fd = os.open(MARKER, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, f"{os.getpid()} {name}".encode())
        os.close(fd)
        time.sleep(300)


async def dask_setup(worker):
    await worker.plugin_add(BlockFirstTask())
"""


def block_first_task_preload(directory: Path) -> Path:
    """Write the BLOCK_FIRST_TASK_PRELOAD file into `directory` and return its path."""
    path = directory / "block_first_task.py"
    path.write_text(BLOCK_FIRST_TASK_PRELOAD)
    return path
