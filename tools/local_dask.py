"""A local Dask cluster of real processes on 127.0.0.1 (benches and tests): `dask scheduler` and `dask worker`.

    with LocalDaskCluster(tmp_path, n_workers=2) as cluster:
        cluster.address          # tcp://127.0.0.1:<port>, ready, with 2 workers registered
        cluster.workers[0].kill() # SIGKILL one worker, as when a pod is OOMKilled

Each process runs in its own session (process group), so stopping it stops what it spawned (a nanny's worker); they
are stopped by PID when the context exits, and at interpreter exit as a last resort; orphans of a crashed run end by
`--death-timeout` (workers) and `--idle-timeout` (schedulers). The processes choose their ports (port 0), read back
from the scheduler file, so parallel runs never race for one.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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


DASK = str(Path(sys.executable).with_name("dask"))
_LIVE: dict[int, DaskProcess] = {}


@dataclass
class DaskProcess:
    """One `dask scheduler` or `dask worker` process that we started."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal this process and everything in its process group (our own session, so nothing else)."""
        if self.alive():
            with suppress(ProcessLookupError):
                os.killpg(self.pid, sig)

    def stop(self, grace: float = 5.0) -> None:
        stop_process_groups([self.popen], grace)
        _LIVE.pop(self.pid, None)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@atexit.register
def _stop_everything() -> None:
    for proc in list(_LIVE.values()):
        proc.stop(grace=2.0)


def spawn(
    argv: Sequence[str], log: Path, env: Mapping[str, str], cwd: Path | None = None, executable: Path | None = None
) -> subprocess.Popen[bytes]:
    """`argv` in its own session (a process group: stopping it stops what it spawned), output appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            list(argv),
            executable=executable,
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _spawn(name: str, argv: Sequence[str], log: Path, cwd: Path | None, env: Mapping[str, str]) -> DaskProcess:
    proc = DaskProcess(name, spawn(argv, log, env, cwd), log)
    _LIVE[proc.pid] = proc
    return proc


@dataclass
class LocalDaskCluster:
    """A scheduler and `n_workers` workers as separate processes, like the pods of a DaskCluster.

    `worker_cwd` emulates the worker pods' view of the filesystem: a relative catalog path resolves only there,
    so a client that tried to open it itself would fail. `worker_env` and `worker_preload` (files passed as
    `dask worker --preload`) customize the workers, e.g. to inject faults.
    """

    workdir: Path
    n_workers: int = 2
    nthreads: int = 1
    worker_cwd: Path | None = None
    worker_env: dict[str, str] = field(default_factory=dict)
    worker_preload: Sequence[Path] = ()
    memory_limit: str = "2GiB"
    nanny: bool = False
    dashboard: bool = False
    start_timeout: float = 60.0
    scheduler: DaskProcess | None = None
    workers: list[DaskProcess] = field(default_factory=list)
    address: str = ""
    dashboard_address: str | None = None

    def __enter__(self) -> LocalDaskCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def processes(self) -> list[DaskProcess]:
        return [p for p in (self.scheduler, *self.workers) if p is not None]

    def by_pid(self, pid: int) -> DaskProcess:
        return next(p for p in self.processes if p.pid == pid)

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        scheduler_file = self.workdir / "scheduler.json"
        scheduler_file.unlink(missing_ok=True)
        argv = [DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--scheduler-file", str(scheduler_file)]
        argv += ["--idle-timeout", "900s"]
        argv += ["--dashboard-address", "127.0.0.1:0"] if self.dashboard else ["--no-dashboard"]
        self.scheduler = _spawn("scheduler", argv, self.workdir / "scheduler.log", None, dict(os.environ))
        info = self._wait_for_file(scheduler_file)
        self.address = info["address"]
        dash = (info.get("services") or {}).get("dashboard")
        self.dashboard_address = f"127.0.0.1:{dash}" if dash else None
        for i in range(self.n_workers):
            self.add_worker(f"worker-{i}")
        self.wait_for_workers(self.n_workers)

    def add_worker(self, name: str) -> DaskProcess:
        argv = [DASK, "worker", self.address, "--host", "127.0.0.1", "--name", name]
        argv += ["--nthreads", str(self.nthreads), "--memory-limit", self.memory_limit]
        argv += ["--no-dashboard", "--death-timeout", "60s"]
        argv += ["--nanny"] if self.nanny else ["--no-nanny"]
        for preload in self.worker_preload:
            argv += ["--preload", str(preload)]
        env = {**os.environ, **self.worker_env}
        proc = _spawn(name, argv, self.workdir / f"{name}.log", self.worker_cwd, env)
        self.workers.append(proc)
        return proc

    def wait_for_workers(self, n: int, timeout: float | None = None) -> None:
        """Block until the scheduler lists `n` running workers; fail fast if a process died."""
        from distributed import Client

        deadline = time.monotonic() + (timeout or self.start_timeout)
        with Client(self.address, timeout=10, set_as_default=False) as client:  # type: ignore[no-untyped-call]
            while True:
                self._check_alive()
                if len(client.scheduler_info(n_workers=-1)["workers"]) >= n:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"only {len(client.nthreads())} of {n} workers joined {self.address}")
                time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM all workers at once and wait for them, then the scheduler; SIGKILL past the grace period.

        Workers go first: a worker told to stop while its scheduler is also going away waits for the scheduler
        instead of exiting (seconds, up to --death-timeout), whereas with the scheduler still up it exits at once.
        """
        for proc in self.workers:
            proc.kill(signal.SIGTERM)
        for proc in self.workers:
            proc.stop()
        if self.scheduler is not None:
            self.scheduler.stop()

    def _check_alive(self) -> None:
        if self.scheduler is not None and not self.scheduler.alive():
            code, tail = self.scheduler.popen.returncode, self.scheduler.log_tail()
            raise RuntimeError(f"scheduler exited ({code}):\n{tail}")

    def _wait_for_file(self, path: Path) -> dict[str, Any]:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            self._check_alive()
            if path.exists():
                try:
                    info: dict[str, Any] = json.loads(path.read_text())
                    return info
                except ValueError:  # being written
                    pass
            time.sleep(0.05)
        raise TimeoutError(f"the scheduler did not write {path} within {self.start_timeout} s")


# Ports are handed out below the kernel's ephemeral range (32768-60999 by default): a port got by binding port 0
# comes from that range, where an outgoing connection of any process may take it before the listener binds it (a
# Dask nanny then exits with "Address already in use"). Each pytest-xdist worker draws from its own block.
PORT_BLOCKS = range(20000, 32000, 1000)
_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
_block = PORT_BLOCKS[(int(_worker[2:]) + 1 if _worker[2:].isdigit() else 0) % len(PORT_BLOCKS)]
_candidates = itertools.cycle(range(_block, _block + PORT_BLOCKS.step))


def free_port() -> int:
    """A port nobody listens on right now (a listener's, or for 'connection refused' tests)."""
    for port in itertools.islice(_candidates, PORT_BLOCKS.step):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {_block}-{_block + PORT_BLOCKS.step - 1}")
