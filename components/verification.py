"""Post-deploy verification: prove that the deployed Dask cluster answers an LSDB cone query end to end.

Three entry points share one check, `verify_catalog_query`:

* the function itself (no Pulumi inside), for tests and notebooks;
* the command line, `python -m components.verification --scheduler ADDR --catalog PATH --ra .. --dec ..
  --radius-arcsec ..` (see `main`);
* the Pulumi dynamic resource `LsdbVerification`, which runs the check during `pulumi up` and fails the
  update with the same stage-named message when the cluster does not work.

The check runs in stages, each with its own deadline (never longer than what is left of the overall timeout):
config, connect, workers, versions, open, compute, rows. Any failure raises `VerificationError`, whose
`.stage` names the stage and whose message ends with the fix from the guide's troubleshooting section.

Where the catalog is opened: on a worker. With a port-forward the client runs on a workstation that cannot see
the worker volume (the catalog at /data/... exists only inside worker pods, object-store credentials live only
in the pods), so the client submits `lsdb.open_catalog(path, search_filter=ConeSearch(...), columns=...)` as a
task, gets the lazy catalog back (metadata only, no rows), builds the graph locally and computes it on the
cluster. The client never touches the catalog storage.

Module imports stay light: the Pulumi program imports this module during evaluation, so lsdb, dask,
distributed, pandas and kr8s are imported inside the functions that need them. The module is also
self-contained (it imports nothing from this project at module level): the dynamic provider ships its source
and runs it as a script in a child process (see `LsdbVerificationProvider`).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pulumi
import pulumi.dynamic

STAGES = ("config", "connect", "workers", "versions", "open", "compute", "rows")

# Per-stage ceilings in seconds; each stage also stops when the overall timeout runs out.
DEFAULT_STAGE_TIMEOUTS: dict[str, float] = {
    "connect": 30.0,
    "workers": 180.0,
    "versions": 30.0,
    "open": 120.0,
    "compute": 600.0,
}
DEFAULT_TIMEOUT = 300.0
SCHEDULER_PORT = 8786
DASHBOARD_PORT = 8787

# Compared between client, scheduler and every worker (python by major.minor, the rest exactly, against the lock).
CHECKED_PACKAGES = (
    "dask",
    "distributed",
    "lsdb",
    "hats",
    "nested-pandas",
    "pandas",
    "pyarrow",
    "numpy",
    "cloudpickle",
    "msgpack",
)
# Asked of the scheduler and workers on top of distributed's own list (dask, distributed, numpy, pandas, ...).
# distributed answers with importlib.metadata, so nothing is imported remotely just to read a version.
EXTRA_VERSION_PACKAGES = ("lsdb", "hats", "nested-pandas", "pyarrow")
OPEN_TASK_PREFIX = "lsdb-verify-open"


class VerificationError(RuntimeError):
    """The verification failed at `stage`; `problem` says what happened and `fix` what to do about it."""

    def __init__(self, stage: str, problem: str, fix: str) -> None:
        self.stage = stage
        self.problem = problem
        self.fix = fix
        super().__init__(f"LSDB verification failed at stage '{stage}': {problem}\nFix: {fix}")

    def to_dict(self) -> dict[str, str]:
        return {"ok": False, "stage": self.stage, "problem": self.problem, "fix": self.fix, "message": str(self)}


@dataclasses.dataclass
class VerificationResult:
    """What a successful verification saw. JSON-serializable (`to_dict`)."""

    rows: int
    partitions: int
    workers: int
    elapsed_seconds: float
    versions: dict[str, str]
    sample: list[dict[str, Any]]
    scheduler: str
    catalog_path: str
    stage_seconds: dict[str, float]
    warnings: list[str]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_outputs(self) -> dict[str, Any]:
        """The Pulumi output properties of `LsdbVerification`."""
        return {
            "rows": self.rows,
            "partitions": self.partitions,
            "workers": self.workers,
            "elapsedSeconds": self.elapsed_seconds,
            "versions": self.versions,
            "sample": self.sample,
            "stageSeconds": self.stage_seconds,
            "warnings": self.warnings,
        }


class _Fixes:
    """The guide's troubleshooting, with the real namespace and cluster names when they are known."""

    def __init__(self, namespace: str | None, cluster_name: str | None, kube_context: str | None = None) -> None:
        self.ns = namespace or "<namespace>"
        self.cl = cluster_name or "<cluster>"
        self.kubectl = f"kubectl --context {kube_context}" if kube_context else "kubectl"

    def port_forward(self) -> str:
        """The fix when the port-forward itself cannot start (before any Dask traffic)."""
        return (
            f"check this machine reaches the cluster with the stack's kube context (kubeContext in the stack config,"
            f" KUBECONFIG): `{self.kubectl} get svc {self.cl}-scheduler -n {self.ns}`; then: {self('connect')}"
        )

    def __call__(self, stage: str) -> str:
        return self._text(stage).replace("`kubectl ", f"`{self.kubectl} ")

    def _text(self, stage: str) -> str:
        ns, cl = self.ns, self.cl
        svc = f"{cl}-scheduler"
        sel = f"dask.org/cluster-name={cl}"
        return {
            "config": "check the verification settings (verify.* in the stack config, or the command-line flags)",
            "connect": (
                "verify the scheduler pod is running:"
                f" `kubectl get pods -n {ns} -l {sel},dask.org/component=scheduler`;"
                f" check the service exists: `kubectl get svc {svc} -n {ns}`; inside the cluster use the fully"
                f" qualified name tcp://{svc}.{ns}.svc.cluster.local:{SCHEDULER_PORT}; from a workstation use"
                f" connect: portForward (or `kubectl port-forward -n {ns} svc/{svc} {SCHEDULER_PORT}:{SCHEDULER_PORT}`"
                f" and tcp://localhost:{SCHEDULER_PORT}). Port {SCHEDULER_PORT} speaks the Dask protocol;"
                f" {DASHBOARD_PORT} is the dashboard (HTTP) and cannot be the scheduler address"
            ),
            "workers": (
                f"`kubectl get pods -n {ns} -l {sel},dask.org/component=worker`; worker pods stay Pending until the"
                f" catalog PVC is Bound (`kubectl get pvc -n {ns}`); look for OOMKilled, ImagePullBackOff or"
                f" CrashLoopBackOff in `kubectl describe pod -n {ns} <worker-pod>` and read `kubectl logs -n {ns}"
                f" <worker-pod>`; with the autoscaler, verify.minWorkers must not exceed its minimum"
            ),
            "versions": (
                "use the digest-pinned image built from docker/requirements.lock for scheduler and workers, and"
                " install the same lock in the client (`pip install -r docker/requirements.lock`); a package missing"
                f" on the cluster means a pod runs another image: `kubectl get pods -n {ns} -l {sel}"
                " -o jsonpath='{..image}'`"
            ),
            "open": (
                "give the catalog path as the workers see it (the volume mountPath inside the worker pods, e.g."
                f" /data/<catalog>), not a path on this machine; check the catalog PVC is Bound (`kubectl get pvc -n"
                f" {ns}`) and mounted in the workers"
                f" (`kubectl describe pod -n {ns} -l {sel},dask.org/component=worker`);"
                " for object stores (s3://, gs://, abfs://) check the workers' credentials secret;"
                " requested columns must exist in the catalog"
            ),
            "compute": (
                f"a worker failed while reading the partitions: look for OOMKilled in `kubectl describe pod -n {ns}"
                f" -l {sel},dask.org/component=worker` and errors in `kubectl logs -n {ns} <worker-pod>`; raise the"
                " worker memory or query a smaller cone; check every partition file of the catalog is readable by"
                " the workers"
            ),
            "rows": (
                "the cone has no (or too few) rows: check verify.cone ra/dec (degrees) and radiusArcsec (arcseconds)"
                " point at a region the catalog covers, or lower verify.minRows"
            ),
        }[stage]


class _Clock:
    """The overall deadline and the per-stage ceilings; records how long each stage took."""

    def __init__(self, timeout: float, stage_timeouts: Mapping[str, float] | None, fixes: _Fixes) -> None:
        self.start = time.monotonic()
        self.timeout = float(timeout)
        self.limits = {**DEFAULT_STAGE_TIMEOUTS, **(stage_timeouts or {})}
        self.fixes = fixes
        self.seconds: dict[str, float] = {}

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def budget(self, stage: str) -> float:
        remaining = self.timeout - self.elapsed()
        if remaining <= 0:
            raise VerificationError(
                stage, f"the overall timeout of {self.timeout:g} s ran out before this stage started", self.fixes(stage)
            )
        return min(self.limits.get(stage, remaining), remaining)

    @contextmanager
    def stage(self, name: str) -> Iterator[float]:
        began = time.monotonic()
        try:
            yield self.budget(name)
        finally:
            self.seconds[name] = round(time.monotonic() - began, 4)


class _Abandoned(Exception):
    """Raised by `_call_with_deadline` when the call did not return in time (it keeps running, unobserved)."""


def _call_with_deadline(
    fn: Callable[[], Any], seconds: float, on_late_result: Callable[[Any], Any] | None = None
) -> Any:
    """Run `fn()` in a daemon thread and wait at most `seconds` for it.

    Returns its value or re-raises its exception; raises `_Abandoned` when it is still running at the deadline.
    A daemon thread never keeps the process alive; `on_late_result` disposes of a value that arrives after we
    stopped waiting (for example closes a Client that connected too late).
    """
    lock = threading.Lock()
    box: dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        try:
            value = fn()
        except BaseException as exc:
            box["error"] = exc
            value = None
        else:
            box["value"] = value
        with lock:
            done.set()
            late = box.get("abandoned", False)
        if late and "value" in box and on_late_result is not None:
            with suppress(Exception):
                on_late_result(value)

    thread = threading.Thread(target=target, name="lsdb-verify-stage", daemon=True)
    thread.start()
    done.wait(max(seconds, 0.0))
    with lock:
        if not done.is_set():
            box["abandoned"] = True
            raise _Abandoned()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _normalize_address(address: str) -> str:
    address = address.strip()
    if "://" not in address:
        address = f"tcp://{address}"
    scheme, _, rest = address.partition("://")
    if rest and ":" not in rest.rsplit("]", 1)[-1]:
        address = f"{scheme}://{rest}:{SCHEDULER_PORT}"
    return address


def _probe_scheduler(address: str, seconds: float) -> dict[str, Any]:
    """Open one Dask comm to `address` and ask who it is, all within `seconds`.

    `distributed.comm.connect` retries refused connections until its timeout, but then waits for the peer's
    handshake without any bound; `Client(timeout=...)` inherits that. `asyncio.wait_for` bounds the whole
    exchange, so a peer that accepts TCP and never speaks Dask (a dashboard port, a stuck proxy) fails in time.
    """
    from distributed.comm import connect

    async def probe() -> dict[str, Any]:
        comm = await connect(address, timeout=seconds)
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    async def bounded() -> dict[str, Any]:
        return await asyncio.wait_for(probe(), timeout=seconds)

    return asyncio.run(bounded())


def compare_versions(
    report: Mapping[str, Any], locked: Mapping[str, str] | None
) -> tuple[dict[str, str], list[str], list[str]]:
    """Check a `Client.get_versions()` report against the lock.

    Returns (agreed versions, problems, warnings). A package of `CHECKED_PACKAGES` is a problem when any side
    (client, scheduler, a worker) lacks it or, if the lock pins it, runs another version; without a pin, when
    the sides disagree. Python must agree on major.minor (pickled code does not cross minor versions); a
    different micro version is only a warning.
    """
    sides: list[tuple[str, Mapping[str, Any]]] = [
        ("client", (report.get("client") or {}).get("packages") or {}),
        ("scheduler", (report.get("scheduler") or {}).get("packages") or {}),
    ]
    workers = report.get("workers") or {}
    for addr in sorted(workers):
        sides.append((f"worker {addr}", (workers[addr] or {}).get("packages") or {}))
    n_workers = len(workers)
    pins = {_canonical(k): v for k, v in (locked or {}).items()}
    problems: list[str] = []
    warnings: list[str] = []
    agreed: dict[str, str] = {}

    def where(found: Mapping[str, list[str]]) -> str:
        parts = []
        for version, names in sorted(found.items()):
            shown = [n for n in names if not n.startswith("worker ")]
            wk = [n for n in names if n.startswith("worker ")]
            if wk:
                listed = ", ".join(w.removeprefix("worker ") for w in wk[:3]) + (", ..." if len(wk) > 3 else "")
                shown.append(f"{len(wk)} of {n_workers} workers ({listed})")
            what = "nothing (not installed)" if version == "MISSING" else version
            named = shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]
            parts.append(f"{named} {'have' if len(names) > 1 else 'has'} {what}")
        return "; ".join(parts)

    pythons: dict[str, list[str]] = {}
    for side, pkgs in sides:
        pythons.setdefault(str(pkgs.get("python") or "MISSING"), []).append(side)
    minors = {".".join(v.split(".")[:2]) for v in pythons}
    if len(minors) > 1:
        problems.append(f"python: {where(pythons)}")
    elif len(pythons) > 1:
        warnings.append(f"python micro versions differ: {where(pythons)}")
    agreed["python"] = ".".join(str(sides[1][1].get("python") or sides[0][1].get("python") or "").split(".")[:3])

    for pkg in CHECKED_PACKAGES:
        expected = pins.get(_canonical(pkg))
        found: dict[str, list[str]] = {}
        for side, pkgs in sides:
            found.setdefault(str(pkgs.get(pkg) or "MISSING"), []).append(side)
        if expected is not None:
            bad = {v: names for v, names in found.items() if v != expected}
            if bad:
                problems.append(f"{pkg}: docker/requirements.lock pins {expected}, but {where(bad)}")
            agreed[pkg] = expected
        elif len(found) > 1 or "MISSING" in found:
            problems.append(f"{pkg}: {where(found)}")
        else:
            agreed[pkg] = next(iter(found))
    return agreed, problems, warnings


def _jsonable(value: Any) -> Any:
    """A plain JSON value for one cell of the sample (numpy scalars, pandas NA, NaN, nested values)."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return _jsonable(item())
        except (TypeError, ValueError):
            pass
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    try:
        import pandas as pd

        if value is pd.NA or value is pd.NaT:
            return None
    except ImportError:  # pragma: no cover - pandas is always there when rows are
        pass
    return str(value)


def _sample_records(df: Any, n: int) -> list[dict[str, Any]]:
    if df is None or n <= 0:
        return []
    head = df.head(n)
    return [{str(k): _jsonable(v) for k, v in row.items()} for row in head.to_dict(orient="records")]


def _default_lock() -> tuple[dict[str, str] | None, str | None]:
    try:
        from components.lock import read_lock
    except ImportError:
        return None, "docker/requirements.lock is not importable here: versions were only compared with each other"
    return dict(read_lock()), None


def verify_catalog_query(
    scheduler_address: str,
    catalog_path: str,
    *,
    ra: float,
    dec: float,
    radius_arcsec: float,
    columns: Sequence[str] | None = None,
    min_rows: int = 1,
    min_workers: int = 1,
    timeout: float = DEFAULT_TIMEOUT,
    stage_timeouts: Mapping[str, float] | None = None,
    namespace: str | None = None,
    cluster_name: str | None = None,
    kube_context: str | None = None,
    locked_versions: Mapping[str, str] | None = None,
    sample_rows: int = 5,
) -> VerificationResult:
    """Connect to the scheduler, check workers and versions, run a cone query on the cluster, check its rows.

    `catalog_path` is the path as the workers see it (it is opened on a worker). `locked_versions` maps package
    names to the pinned versions (default: docker/requirements.lock); pass a modified mapping to test the check.
    `namespace`, `cluster_name` and `kube_context` only make the error messages name the real Kubernetes objects.
    Raises `VerificationError` naming the failed stage; returns a `VerificationResult` otherwise.
    """
    fixes = _Fixes(namespace, cluster_name, kube_context)
    clock = _Clock(timeout, stage_timeouts, fixes)
    warnings: list[str] = []
    columns = list(columns) if columns else None
    _validate_inputs(scheduler_address, catalog_path, ra, dec, radius_arcsec, min_rows, min_workers, timeout, fixes)
    if locked_versions is None:
        locked_versions, note = _default_lock()
        if note:
            warnings.append(note)
    address = _normalize_address(scheduler_address)

    client = None
    try:
        with clock.stage("connect") as budget:
            client = _connect(address, budget, fixes)

        with clock.stage("workers") as budget:
            n_workers = _wait_for_workers(client, address, min_workers, budget, fixes)

        with clock.stage("versions") as budget:
            versions, version_warnings = _check_versions(client, locked_versions, budget, fixes)
            warnings.extend(version_warnings)

        with clock.stage("open") as budget:
            catalog = _open_on_worker(client, catalog_path, ra, dec, radius_arcsec, columns, budget, fixes)
            partitions = int(catalog.npartitions)

        with clock.stage("compute") as budget:
            df = _compute(client, catalog, partitions, budget, fixes)
            rows = 0 if df is None else len(df)
            after = _count_workers(client, 5.0)
            if after is not None and after < n_workers:
                warnings.append(
                    f"{n_workers - after} worker(s) left the cluster during the query; the scheduler re-ran their"
                    " tasks on the remaining workers and the result is complete"
                )

        with clock.stage("rows"):
            if rows < min_rows:
                detail = (
                    "no partition of the catalog overlaps the cone"
                    if partitions == 0
                    else f"{partitions} partition(s) overlap the cone but only {rows} row(s) fall inside it"
                )
                raise VerificationError(
                    "rows",
                    f'the cone ra={ra:g} dec={dec:g} radius={radius_arcsec:g}" on {catalog_path} returned {rows}'
                    f" row(s), fewer than min_rows={min_rows} ({detail})",
                    fixes("rows"),
                )
            sample = _sample_records(df, sample_rows)
    finally:
        if client is not None:
            _close_client(client)

    return VerificationResult(
        rows=rows,
        partitions=partitions,
        workers=n_workers,
        elapsed_seconds=round(clock.elapsed(), 4),
        versions=versions,
        sample=sample,
        scheduler=address,
        catalog_path=catalog_path,
        stage_seconds=clock.seconds,
        warnings=warnings,
    )


def _validate_inputs(
    scheduler_address: str,
    catalog_path: str,
    ra: float,
    dec: float,
    radius_arcsec: float,
    min_rows: int,
    min_workers: int,
    timeout: float,
    fixes: _Fixes,
) -> None:
    problems = []
    if not scheduler_address or not str(scheduler_address).strip():
        problems.append("the scheduler address is empty")
    if not catalog_path or not str(catalog_path).strip():
        problems.append("the catalog path is empty")
    if not (isinstance(ra, int | float) and math.isfinite(ra)):
        problems.append(f"ra={ra!r} is not a number of degrees")
    if not (isinstance(dec, int | float) and -90.0 <= dec <= 90.0):
        problems.append(f"dec={dec!r} is outside [-90, 90] degrees")
    if not (isinstance(radius_arcsec, int | float) and 0 < radius_arcsec < 180 * 3600):
        problems.append(f"radius_arcsec={radius_arcsec!r} must be positive (arcseconds)")
    if min_rows < 0:
        problems.append(f"min_rows={min_rows} must not be negative")
    if min_workers < 1:
        problems.append(f"min_workers={min_workers} must be at least 1")
    if not timeout > 0:
        problems.append(f"timeout={timeout!r} must be positive")
    if problems:
        raise VerificationError("config", "; ".join(problems), fixes("config"))


def _connect(address: str, budget: float, fixes: _Fixes) -> Any:
    try:
        identity = _call_with_deadline(lambda: _probe_scheduler(address, budget), budget + 1.0)
    except (_Abandoned, TimeoutError) as exc:
        raise VerificationError(
            "connect",
            f"no Dask scheduler answered at {address} within {budget:g} s"
            + ("" if isinstance(exc, _Abandoned) else f" ({_describe(exc)})")
            + " (refused, unresolvable, or a peer that accepts TCP but does not speak the Dask protocol)",
            fixes("connect"),
        ) from None
    except Exception as exc:
        raise VerificationError(
            "connect", f"could not talk to a Dask scheduler at {address}: {_describe(exc)}", fixes("connect")
        ) from exc
    kind = identity.get("type") if isinstance(identity, dict) else None
    if kind != "Scheduler":
        raise VerificationError(
            "connect",
            f"{address} answered as a Dask {kind or 'peer of unknown type'}, not as the scheduler",
            fixes("connect"),
        )

    def make_client() -> Any:
        from distributed import Client

        return Client(address, timeout=budget, set_as_default=False, direct_to_workers=False)

    try:
        return _call_with_deadline(make_client, budget, on_late_result=lambda c: c.close(timeout=5))
    except _Abandoned:
        raise VerificationError(
            "connect", f"the Dask client could not register with {address} within {budget:g} s", fixes("connect")
        ) from None
    except Exception as exc:
        raise VerificationError(
            "connect", f"the Dask client could not connect to {address}: {_describe(exc)}", fixes("connect")
        ) from exc


def _count_workers(client: Any, seconds: float) -> int | None:
    try:
        return len(_call_with_deadline(client.nthreads, seconds))
    except Exception:
        return None


def _wait_for_workers(client: Any, address: str, min_workers: int, budget: float, fixes: _Fixes) -> int:
    try:
        _call_with_deadline(lambda: client.wait_for_workers(min_workers, timeout=budget), budget + 2.0)
    except (_Abandoned, TimeoutError):
        have = _count_workers(client, 5.0)
        have_text = "an unknown number of" if have is None else str(have)
        raise VerificationError(
            "workers",
            f"{have_text} worker(s) joined the scheduler at {address}, fewer than min_workers={min_workers},"
            f" within {budget:g} s",
            fixes("workers"),
        ) from None
    except Exception as exc:
        raise VerificationError(
            "workers", f"could not list the workers of {address}: {_describe(exc)}", fixes("workers")
        ) from exc
    have = _count_workers(client, 5.0)
    return have if have is not None else min_workers


def _check_versions(
    client: Any, locked: Mapping[str, str] | None, budget: float, fixes: _Fixes
) -> tuple[dict[str, str], list[str]]:
    try:
        report = _call_with_deadline(
            lambda: client.get_versions(check=False, packages=list(EXTRA_VERSION_PACKAGES)), budget
        )
    except _Abandoned:
        raise VerificationError(
            "versions",
            f"the scheduler and workers did not report their versions within {budget:g} s",
            fixes("versions"),
        ) from None
    except Exception as exc:
        raise VerificationError(
            "versions", f"could not collect package versions: {_describe(exc)}", fixes("versions")
        ) from exc
    agreed, problems, warnings = compare_versions(report, locked)
    if problems:
        raise VerificationError(
            "versions", "client, scheduler and workers do not run the locked packages: " + "; ".join(problems),
            fixes("versions"),
        )  # fmt: skip
    return agreed, warnings


def _open_on_worker(
    client: Any,
    catalog_path: str,
    ra: float,
    dec: float,
    radius_arcsec: float,
    columns: list[str] | None,
    budget: float,
    fixes: _Fixes,
) -> Any:
    """`lsdb.open_catalog` as a task: it reads the catalog metadata where the catalog is (on a worker).

    The lazy catalog comes back to the client (metadata and the pixels the cone overlaps, no rows); its
    graph reads the partitions on the workers when computed. `error_empty_filter=False` lets a cone that
    overlaps no partition reach the rows stage, which names the real problem.
    """
    try:
        import lsdb
    except ImportError as exc:
        raise VerificationError(
            "open", f"lsdb is not installed in this client ({_describe(exc)})", fixes("versions")
        ) from exc
    search = lsdb.ConeSearch(ra, dec, radius_arcsec)
    key = f"{OPEN_TASK_PREFIX}-{uuid.uuid4().hex}"
    future = client.submit(
        lsdb.open_catalog, catalog_path, search_filter=search, columns=columns, error_empty_filter=False, key=key
    )
    try:
        return _call_with_deadline(lambda: future.result(timeout=budget), budget + 2.0)
    except (_Abandoned, TimeoutError):
        raise VerificationError(
            "open",
            f"opening {catalog_path} on a worker did not finish within {budget:g} s (slow or hung storage?)",
            fixes("open"),
        ) from None
    except Exception as exc:
        raise VerificationError(
            "open", f"a worker could not open the catalog {catalog_path}: {_describe(exc)}", fixes("open")
        ) from exc
    finally:
        future.release()


def _compute(client: Any, catalog: Any, partitions: int, budget: float, fixes: _Fixes) -> Any:
    """`catalog.compute()`, the call the guide's manual check makes, explicitly on this client.

    lsdb computes with the current dask scheduler and client; `as_current` and `scheduler=client.get` route
    it to our client (never made the process default) whatever the caller's dask config says: a global
    `scheduler="synchronous"` would otherwise run it here, where the catalog is not. lsdb then submits one
    task per partition and gathers them through the scheduler. The deadline abandons the waiting thread;
    closing the client afterwards cancels the tasks.
    """
    if partitions == 0:
        return None
    import dask

    def run() -> Any:
        with client.as_current(), dask.config.set(scheduler=client.get):
            return catalog.compute(progress_bar=False)

    try:
        return _call_with_deadline(run, budget)
    except _Abandoned:
        raise VerificationError(
            "compute",
            f"the query over {partitions} partition(s) did not finish on the cluster within {budget:g} s",
            fixes("compute"),
        ) from None
    except Exception as exc:
        raise VerificationError(
            "compute", f"the query over {partitions} partition(s) failed on the cluster: {_describe(exc)}",
            fixes("compute"),
        ) from exc  # fmt: skip


def _close_client(client: Any) -> None:
    with suppress(Exception):
        _call_with_deadline(lambda: client.close(timeout=5), 7.0)


class SchedulerPortForward:
    """Port-forward `<cluster>-scheduler` in `namespace` to a free local port with kr8s, like dask-kubernetes.

    `with SchedulerPortForward(...) as address:` yields `tcp://127.0.0.1:<port>` and closes the forward on exit.
    The forward runs in a daemon thread with its own event loop (as dask-kubernetes' KubeCluster does), so it
    serves the Dask client's connections while this thread blocks on the check. `service_getter` replaces the
    kr8s lookup (tests); it is an async callable (name, namespace, kube_context) -> object with `.spec.ports`
    and `.portforward(remote_port, local_port="auto")`.
    """

    def __init__(
        self,
        namespace: str,
        cluster_name: str,
        kube_context: str | None = None,
        *,
        timeout: float = 30.0,
        fixes: _Fixes | None = None,
        service_getter: Callable[..., Any] | None = None,
    ) -> None:
        self.namespace = namespace
        self.service_name = f"{cluster_name}-scheduler"
        self.kube_context = kube_context
        self.timeout = timeout
        self.fixes = fixes or _Fixes(namespace, cluster_name, kube_context)
        self.service_getter = service_getter or _kr8s_service
        self.local_port: int | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> str:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), name="lsdb-verify-pf", daemon=True)
        self._thread.start()
        where = f"service {self.service_name} in namespace {self.namespace}" + (
            f" (kube context {self.kube_context})" if self.kube_context else " (current kube context)"
        )
        if not self._ready.wait(self.timeout):
            self.close()
            raise VerificationError(
                "connect",
                f"the port-forward to {where} did not start within {self.timeout:g} s",
                self.fixes.port_forward(),
            )
        if self._error is not None:
            self.close()
            raise VerificationError(
                "connect", f"could not port-forward to {where}: {_describe(self._error)}", self.fixes.port_forward()
            ) from self._error
        return f"tcp://127.0.0.1:{self.local_port}"

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._loop is not None and self._stop is not None:
            with suppress(RuntimeError):  # the loop is already closed
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            svc = await self.service_getter(self.service_name, self.namespace, self.kube_context)
            remote = _scheduler_port(svc)
            async with svc.portforward(remote, local_port="auto") as port:
                self.local_port = int(port)
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()


async def _kr8s_service(name: str, namespace: str, kube_context: str | None) -> Any:
    import kr8s.asyncio
    from kr8s.asyncio.objects import Service

    api = await kr8s.asyncio.api(context=kube_context) if kube_context else await kr8s.asyncio.api()
    return await Service.get(name, namespace=namespace, api=api)


def _scheduler_port(svc: Any) -> int:
    """The Dask comm port of the scheduler Service: the port named tcp-comm (as the operator names it), else 8786."""
    ports = list(getattr(getattr(svc, "spec", None), "ports", None) or [])
    for port in ports:
        if (port.get("name") if isinstance(port, dict) else getattr(port, "name", None)) == "tcp-comm":
            return int(port["port"] if isinstance(port, dict) else port.port)
    return SCHEDULER_PORT


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------


def format_summary(result: VerificationResult) -> str:
    """Human-readable success report, with the sample rows as a small table."""
    lines = [
        f"LSDB verification passed in {result.elapsed_seconds:.2f} s",
        f"  scheduler  {result.scheduler} ({result.workers} worker{'s' if result.workers != 1 else ''})",
        f"  catalog    {result.catalog_path}: {result.rows} row(s) in {result.partitions} partition(s)",
        "  versions   " + ", ".join(f"{k} {v}" for k, v in result.versions.items()),
        "  stages     " + ", ".join(f"{k} {v:.2f}s" for k, v in result.stage_seconds.items()),
    ]
    lines += [f"  warning    {w}" for w in result.warnings]
    if result.sample:
        cols = list(result.sample[0])
        cells = [[_cell(row.get(c)) for c in cols] for row in result.sample]
        widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
        lines.append(f"  first {len(result.sample)} row(s):")
        lines.append("    " + "  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True)))
        lines += ["    " + "  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m components.verification",
        description="Verify a Dask cluster end to end with an LSDB cone query (exit 0 on success, 1 on failure).",
    )
    p.add_argument("--scheduler", help="scheduler address, e.g. tcp://localhost:8786 (or use --port-forward)")
    p.add_argument("--catalog", required=True, help="catalog path as the workers see it, e.g. /data/sample")
    p.add_argument("--ra", type=float, required=True, help="cone centre right ascension, degrees")
    p.add_argument("--dec", type=float, required=True, help="cone centre declination, degrees")
    p.add_argument("--radius-arcsec", type=float, required=True, help="cone radius, arcseconds")
    p.add_argument("--columns", default=None, help="comma-separated columns to load (default: the catalog's)")
    p.add_argument("--min-rows", type=int, default=1, help="fail when the cone returns fewer rows (default 1)")
    p.add_argument("--min-workers", type=int, default=1, help="workers to wait for (default 1)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="overall deadline, seconds (default 300)")
    p.add_argument("--json", action="store_true", help="print the result (or the failure) as JSON on stdout")
    p.add_argument("--sample-rows", type=int, default=5, help="rows to show (default 5)")
    p.add_argument("--namespace", help="Kubernetes namespace (names the real objects in error messages)")
    p.add_argument("--cluster-name", help="DaskCluster name (names the real objects in error messages)")
    p.add_argument(
        "--port-forward",
        action="store_true",
        help="port-forward svc/<cluster-name>-scheduler in --namespace with kr8s instead of --scheduler",
    )
    p.add_argument("--kube-context", help="kube context for --port-forward and messages (default: the current one)")
    p.add_argument("--lock-json", type=Path, help="JSON object of pinned versions (default: docker/requirements.lock)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if bool(args.scheduler) == bool(args.port_forward):
        _parser().error("give exactly one of --scheduler ADDR or --port-forward")
    if args.port_forward and not (args.namespace and args.cluster_name):
        _parser().error("--port-forward needs --namespace and --cluster-name")
    import logging

    # The failure message says what went wrong; distributed's own reconnect chatter would only bury it.
    logging.getLogger("distributed").setLevel(logging.CRITICAL)
    columns = [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None
    locked = json.loads(args.lock_json.read_text()) if args.lock_json else None
    fixes = _Fixes(args.namespace, args.cluster_name, args.kube_context)
    try:
        if args.port_forward:
            forward = SchedulerPortForward(
                args.namespace, args.cluster_name, args.kube_context, timeout=min(30.0, args.timeout), fixes=fixes
            )
        started = time.monotonic()
        with forward if args.port_forward else _nullcontext(args.scheduler) as address:
            result = verify_catalog_query(
                address,
                args.catalog,
                ra=args.ra,
                dec=args.dec,
                radius_arcsec=args.radius_arcsec,
                columns=columns,
                min_rows=args.min_rows,
                min_workers=args.min_workers,
                timeout=max(args.timeout - (time.monotonic() - started), 0.001),
                namespace=args.namespace,
                cluster_name=args.cluster_name,
                kube_context=args.kube_context,
                locked_versions=locked,
                sample_rows=args.sample_rows,
            )
    except VerificationError as exc:
        if args.json:
            print(json.dumps(exc.to_dict()))
        print(str(exc), file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"ok": True, **result.to_dict()}))
    else:
        print(format_summary(result))
    return 0


@contextmanager
def _nullcontext(value: str) -> Iterator[str]:
    yield value


# ---------------------------------------------------------------------------------------------------------------
# Pulumi dynamic resource
# ---------------------------------------------------------------------------------------------------------------


def _provider_class() -> type:
    """Define the provider class inside a function, so that dill pickles it BY VALUE.

    dill pickles a class or function by reference (module + name) whenever it can find it again by that name,
    and a reference to `components.verification` would not resolve in the dynamic-provider process when it
    does not run from the project directory. A class defined here has the qualified name
    `_provider_class.<locals>.LsdbVerificationProvider`, which dill cannot look up, so it pickles the class and
    its methods by value. The methods therefore reference nothing from this module: they import what they need
    (standard library and pulumi only) inside their bodies and find the check itself in `runtime_source`.
    """
    from pulumi.dynamic import ResourceProvider

    class LsdbVerificationProvider(ResourceProvider):
        """Runs the verification in a child process: `python <runtime_source> --json ...`.

        State is plain data: `runtime_source` (the text of components/verification.py) and `locked_versions`
        (docker/requirements.lock as a dict). Same source and lock give the same pickle in every process.
        The child process gets a hard deadline (timeoutSeconds + a grace period) and is killed past it, so a
        hung connection can never hang `pulumi up`; lsdb and dask are imported only in the child.
        """

        # Inputs whose change re-runs the check: the cluster, the image, the catalog and the query.
        RERUN_KEYS = (
            "clusterSpecHash",
            "imageRef",
            "catalogPath",
            "ra",
            "dec",
            "radiusArcsec",
            "columns",
            "minRows",
            "minWorkers",
        )
        NUMBER_KEYS = ("ra", "dec", "radiusArcsec", "minRows", "minWorkers", "timeoutSeconds")
        GRACE_SECONDS = 60.0

        def __init__(self, runtime_source: str, locked_versions: dict[str, str]) -> None:
            self.runtime_source = runtime_source
            self.locked_versions = dict(sorted(locked_versions.items()))

        def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> Any:
            from pulumi.dynamic import CheckFailure, CheckResult

            failures = []
            connect = news.get("connect")
            if isinstance(connect, str) and connect not in ("portForward", "direct"):
                failures.append(CheckFailure("connect", f"must be portForward or direct, not {connect!r}"))
            if connect == "direct" and not news.get("schedulerAddress"):
                failures.append(CheckFailure("schedulerAddress", "is required with connect: direct"))
            return CheckResult(news, failures)

        def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> Any:
            from pulumi.dynamic import DiffResult

            unknown = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"  # pulumi.runtime.rpc.UNKNOWN

            def norm(key: str, value: Any) -> Any:
                if value == unknown:
                    return unknown
                if key in self.NUMBER_KEYS and isinstance(value, int | float):
                    return float(value)
                if isinstance(value, list | tuple):
                    return [str(v) for v in value]
                return value

            changed = [
                k for k in self.RERUN_KEYS if news.get(k) == unknown or norm(k, olds.get(k)) != norm(k, news.get(k))
            ]
            return DiffResult(changes=bool(changed), replaces=[], delete_before_replace=False)

        def create(self, props: dict[str, Any]) -> Any:
            import hashlib
            import json

            from pulumi.dynamic import CreateResult

            outs = self._verify(props)
            query = {k: outs.get(k) for k in ("clusterName", "namespace", "catalogPath", "ra", "dec", "radiusArcsec")}
            digest = hashlib.sha256(json.dumps(query, sort_keys=True, default=str).encode()).hexdigest()[:16]
            return CreateResult(f"lsdb-verification-{digest}", outs)

        def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> Any:
            from pulumi.dynamic import UpdateResult

            return UpdateResult(self._verify(news))

        def delete(self, _id: str, _props: dict[str, Any]) -> None:
            """Nothing to delete: the verification owns no cluster object."""

        def _verify(self, props: dict[str, Any]) -> dict[str, Any]:
            import json
            import subprocess
            import sys
            import tempfile
            from pathlib import Path

            inputs = {k: v for k, v in props.items() if k != "__provider"}
            timeout = float(inputs.get("timeoutSeconds") or 300.0)
            columns = [str(c) for c in (inputs.get("columns") or [])]
            argv = [
                "--json",
                "--catalog", str(inputs["catalogPath"]),
                "--ra", repr(float(inputs["ra"])),
                "--dec", repr(float(inputs["dec"])),
                "--radius-arcsec", repr(float(inputs["radiusArcsec"])),
                "--min-rows", str(int(inputs.get("minRows") or 0)),
                "--min-workers", str(int(inputs.get("minWorkers") or 1)),
                "--timeout", repr(timeout),
            ]  # fmt: skip
            if columns:
                argv += ["--columns", ",".join(columns)]
            for flag, key in (("--namespace", "namespace"), ("--cluster-name", "clusterName")):
                if inputs.get(key):
                    argv += [flag, str(inputs[key])]
            if inputs.get("kubeContext"):
                argv += ["--kube-context", str(inputs["kubeContext"])]
            if (inputs.get("connect") or "portForward") == "portForward":
                argv.append("--port-forward")
            else:
                argv += ["--scheduler", str(inputs["schedulerAddress"])]

            with tempfile.TemporaryDirectory(prefix="lsdb-verification-") as tmp:
                script = Path(tmp, "lsdb_k8s_verification.py")
                script.write_text(self.runtime_source, encoding="utf-8")
                lock = Path(tmp, "lock.json")
                lock.write_text(json.dumps(self.locked_versions), encoding="utf-8")
                cmd = [sys.executable, str(script), "--lock-json", str(lock), *argv]
                try:
                    proc = subprocess.run(
                        cmd, cwd=tmp, capture_output=True, text=True, timeout=timeout + self.GRACE_SECONDS
                    )
                except subprocess.TimeoutExpired:
                    raise RuntimeError(
                        f"LSDB verification failed: the check did not finish within {timeout + self.GRACE_SECONDS:g} s"
                        " (timeoutSeconds plus a grace period) and was killed"
                    ) from None
            report = None
            for line in reversed(proc.stdout.splitlines()):
                if line.startswith("{"):
                    try:
                        report = json.loads(line)
                    except ValueError:
                        continue
                    break
            if report is None:
                tail = "\n".join((proc.stderr or "").strip().splitlines()[-15:])
                raise RuntimeError(f"LSDB verification crashed (exit code {proc.returncode}):\n{tail}")
            if not report.get("ok"):
                raise RuntimeError(report.get("message") or "LSDB verification failed")
            return {
                **inputs,
                "rows": int(report["rows"]),
                "partitions": int(report["partitions"]),
                "workers": int(report["workers"]),
                "elapsedSeconds": float(report["elapsed_seconds"]),
                "versions": report["versions"],
                "sample": report["sample"],
                "stageSeconds": report["stage_seconds"],
                "warnings": report["warnings"],
            }

    return LsdbVerificationProvider


LsdbVerificationProvider = _provider_class()


def new_provider() -> Any:
    """A provider carrying this module's source and the lock: what `LsdbVerification` serializes into the state."""
    from components.lock import read_lock

    return LsdbVerificationProvider(Path(__file__).read_text(encoding="utf-8"), dict(read_lock()))


@dataclasses.dataclass
class VerificationArgs:
    """TEMPORARY (replaced by the verification package)."""

    namespace: Any
    cluster_name: Any
    catalog_path: Any
    ra: Any
    dec: Any
    radius_arcsec: Any
    image_ref: Any
    cluster_spec_hash: Any
    scheduler_address: Any = None
    kube_context: Any = None
    connect: Any = "portForward"
    columns: Any = None
    min_rows: Any = 1
    min_workers: Any = 1
    timeout_seconds: Any = DEFAULT_TIMEOUT


OUTPUT_KEYS = ("rows", "partitions", "workers", "elapsedSeconds", "versions", "sample", "stageSeconds", "warnings")


class LsdbVerification(pulumi.dynamic.Resource, module="lsdb", name="Verification"):
    """Runs `verify_catalog_query` against the deployed cluster during `pulumi up`.

    Type `pulumi-python:dynamic/lsdb:Verification`. Re-runs only when the cluster spec hash, the image, the
    catalog or the query (cone, columns, minRows, minWorkers) change; deleting it deletes nothing.
    Outputs: rows, partitions, workers, elapsedSeconds, versions, sample, stageSeconds, warnings. Numbers come
    back from the engine as floats; `int(...)` them before comparing.
    """

    rows: pulumi.Output[float]
    partitions: pulumi.Output[float]
    workers: pulumi.Output[float]
    elapsedSeconds: pulumi.Output[float]  # the output property's name
    versions: pulumi.Output[dict[str, str]]
    sample: pulumi.Output[list[dict[str, Any]]]
    stageSeconds: pulumi.Output[dict[str, float]]
    warnings: pulumi.Output[list[str]]

    def __init__(self, name: str, args: VerificationArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        a = args
        scheduler_address, namespace, cluster_name, kube_context, connect = (
            a.scheduler_address,
            a.namespace,
            a.cluster_name,
            a.kube_context,
            a.connect,
        )
        catalog_path, ra, dec, radius_arcsec, columns = a.catalog_path, a.ra, a.dec, a.radius_arcsec, a.columns
        min_rows, min_workers, timeout_seconds = a.min_rows, a.min_workers, a.timeout_seconds
        image_ref, cluster_spec_hash = a.image_ref, a.cluster_spec_hash
        # Plain values are checked here; Outputs are checked by the provider's `check` once they are known.
        if isinstance(connect, str) and connect not in ("portForward", "direct"):
            raise ValueError(f"connect must be 'portForward' or 'direct', not {connect!r}")
        if connect == "direct" and scheduler_address is None:
            raise ValueError("connect='direct' needs scheduler_address")
        props: dict[str, Any] = {
            "schedulerAddress": scheduler_address,
            "namespace": namespace,
            "clusterName": cluster_name,
            "kubeContext": kube_context,
            "connect": connect,
            "catalogPath": catalog_path,
            "ra": ra,
            "dec": dec,
            "radiusArcsec": radius_arcsec,
            "columns": list(columns) if isinstance(columns, list | tuple) else columns,
            "minRows": min_rows,
            "minWorkers": min_workers,
            "timeoutSeconds": timeout_seconds,
            "imageRef": image_ref,
            "clusterSpecHash": cluster_spec_hash,
            **dict.fromkeys(OUTPUT_KEYS),
        }
        super().__init__(new_provider(), name, props, opts)


if __name__ == "__main__":
    sys.exit(main())
