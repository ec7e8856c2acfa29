"""The check: prove that a Dask cluster answers an LSDB cone query end to end (stages, budgets and messages:
docs/lifecycle.md#post-deploy-verification). Each stage hands its budget to distributed's own timeouts; only the
identity probe adds its own bound. lsdb, dask, distributed and pandas load inside the functions: `pulumi up` imports
this package.
"""

from __future__ import annotations

import asyncio
import importlib
import math
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any

from components.constants import SCHEDULER_PORT
from components.lock import canonical, read_lock, same_version
from components.verification.diagnostics import Fixes
from components.verification.query import GATE, ClusterRef, VerificationQuery, VerificationResult, worker_group_of

# Per-stage ceilings in seconds, each also bounded by the overall timeout. `connect` covers a first deploy's cold
# image pull; a pod stuck for a reason waiting will not cure fails it early (kube.py).
DEFAULT_STAGE_TIMEOUTS: dict[str, float] = {
    "connect": 600.0, "workers": 180.0, "versions": 30.0, "open": 120.0, "compute": 600.0,
}  # fmt: skip
CHECKED_PACKAGES = (
    "dask", "distributed", "lsdb", "hats", "nested-pandas", "pandas", "pyarrow", "numpy", "cloudpickle", "msgpack",
)  # fmt: skip
OPEN_TASK_PREFIX = "lsdb-verify-open"
# Each connect attempt is bounded so that the wait hook runs in between; the pause doubles up to a ceiling.
PROBE_ATTEMPT_SECONDS = 10.0
RETRY_FIRST_PAUSE = 0.5
RETRY_MAX_PAUSE = 5.0
WORKER_WAIT_STEP_SECONDS = 5.0  # the workers stage's steps, with the wait hook in between

WaitHook = Callable[[], None]  # called between retries; raises VerificationError to stop waiting


class VerificationError(RuntimeError):
    """The verification failed at `stage`; `problem` says what happened and `fix` what to do about it."""

    def __init__(self, stage: str, problem: str, fix: str) -> None:
        self.stage, self.problem, self.fix = stage, problem, fix
        super().__init__(f"LSDB verification failed at stage '{stage}': {problem}\nFix: {fix}")

    def to_dict(self) -> dict[str, Any]:
        """The CLI's `--json` failure report."""
        return {"ok": False, "stage": self.stage, "problem": self.problem, "fix": self.fix, "message": str(self)}


class _Clock:
    """The overall deadline and the per-stage ceilings; records how long each stage took."""

    def __init__(self, timeout: float, stage_timeouts: Mapping[str, float] | None) -> None:
        self.start = time.monotonic()
        self.timeout = float(timeout)
        self.limits = {**DEFAULT_STAGE_TIMEOUTS, **(stage_timeouts or {})}
        self.seconds: dict[str, float] = {}

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def budget(self, stage: str) -> float:
        remaining = self.timeout - self.elapsed()
        if remaining <= 0:
            # The stage's own fix would be wrong here: nothing about it failed, the earlier stages used the time.
            took = ", ".join(f"{name} {seconds:g} s" for name, seconds in self.seconds.items())
            raise VerificationError(
                stage,
                f"the overall timeout of {self.timeout:g} s ran out before this stage started ({took})",
                "raise verify.timeoutSeconds (command line: --timeout), or find what made the earlier stages slow",
            )
        return min(self.limits.get(stage, remaining), remaining)

    @contextmanager
    def stage(self, name: str, needs_time: bool = True) -> Iterator[float]:
        began = time.monotonic()
        try:
            yield self.budget(name) if needs_time else max(0.0, self.timeout - self.elapsed())
        finally:
            self.seconds[name] = round(time.monotonic() - began, 4)


def describe(exc: BaseException) -> str:
    """`Type: first line of the message`."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text and text[0] else type(exc).__name__


@contextmanager
def _failing_as(stage: str, fixes: Fixes, failed: str, timed_out: str | None = None) -> Iterator[None]:
    """A stage's exception as its `VerificationError`: `timed_out` for a TimeoutError (without one, it goes on to a
    caller that waits again), `<failed>: <the error>` for any other."""
    try:
        yield
    except VerificationError:
        raise
    except TimeoutError:
        if timed_out is None:
            raise
        raise VerificationError(stage, timed_out, fixes(stage)) from None
    except Exception as exc:
        raise VerificationError(stage, f"{failed}: {describe(exc)}", fixes(stage)) from exc


def client_security(ca_file: str, cert_file: str, key_file: str) -> Any:
    """distributed's `Security` of a TLS cluster's client (PEM files: its CA, a client certificate it signed):
    mutual TLS, plain TCP refused."""
    from distributed.security import Security

    return Security(  # type: ignore[no-untyped-call]
        tls_ca_file=ca_file, tls_client_cert=cert_file, tls_client_key=key_file, require_encryption=True
    )


def _normalize_address(address: str, tls: bool = False) -> str:
    """`host[:port]` -> `scheme://host:port`; with TLS material a `tcp://` address (a port-forward's) is dialled
    as `tls://` (the scheduler speaks nothing else)."""
    address = address.strip()
    if "://" not in address:
        address = f"{'tls' if tls else 'tcp'}://{address}"
    scheme, _, rest = address.partition("://")
    if tls and scheme == "tcp":
        scheme, address = "tls", f"tls://{rest}"
    if rest and ":" not in rest.rsplit("]", 1)[-1]:
        address = f"{scheme}://{rest}:{SCHEDULER_PORT}"
    return address


def _probe_scheduler(address: str, seconds: float, security: Any = None) -> dict[str, Any]:
    """Ask `address` who it is, within `seconds`: `distributed.comm.connect` waits for the handshake without a bound
    (a peer that accepts TCP and never speaks Dask would hang it)."""
    from distributed.comm.core import connect

    connection_args = security.get_connection_args("client") if security is not None else {}

    async def probe() -> dict[str, Any]:
        comm = await connect(address, timeout=seconds, **connection_args)  # type: ignore[no-untyped-call]
        try:
            await comm.write({"op": "identity", "reply": True})
            reply: dict[str, Any] = await comm.read()
            return reply
        finally:
            comm.abort()

    return asyncio.run(asyncio.wait_for(probe(), timeout=seconds))


def _where(found: Mapping[str, list[str]], n_workers: int) -> str:
    """Who has which version: 'client and scheduler have 1.2; 2 of 3 workers (a, b) have 1.1'."""
    parts = []
    for version, names in sorted(found.items()):
        shown = [n for n in names if not n.startswith("worker ")]
        wk = [n.removeprefix("worker ") for n in names if n.startswith("worker ")]
        if wk:
            shown.append(f"{len(wk)} of {n_workers} workers ({', '.join(wk[:3])}{', ...' if len(wk) > 3 else ''})")
        what = "nothing (not installed)" if version == "MISSING" else version
        named = shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]
        parts.append(f"{named} {'have' if len(names) > 1 else 'has'} {what}")
    return "; ".join(parts)


def compare_versions(
    report: Mapping[str, Any], locked: Mapping[str, str] | None
) -> tuple[dict[str, str], list[str], list[str]]:
    """A `Client.get_versions()` report against the lock: (agreed versions, problems, warnings). A side (client,
    scheduler, a worker) that lacks a `CHECKED_PACKAGES` or runs another than the pin is a problem; without a pin, the
    sides must agree. Python must agree on major.minor (pickled code does not cross minor versions)."""
    workers = report.get("workers") or {}
    sides = [(side, (report.get(side) or {}).get("packages") or {}) for side in ("client", "scheduler")] + [
        (f"worker {addr}", (workers[addr] or {}).get("packages") or {}) for addr in sorted(workers)
    ]
    pins = {canonical(k): v for k, v in (locked or {}).items()}
    problems: list[str] = []
    warnings: list[str] = []

    def found(pkg: str) -> dict[str, list[str]]:
        by_version: dict[str, list[str]] = {}
        for side, pkgs in sides:
            by_version.setdefault(str(pkgs.get(pkg) or "MISSING"), []).append(side)
        return by_version

    pythons = found("python")
    if len({".".join(v.split(".")[:2]) for v in pythons}) > 1:
        problems.append(f"python: {_where(pythons, len(workers))}")
    elif len(pythons) > 1:
        warnings.append(f"python micro versions differ: {_where(pythons, len(workers))}")
    agreed = {"python": ".".join(str(sides[1][1].get("python") or sides[0][1].get("python") or "").split(".")[:3])}
    for pkg in CHECKED_PACKAGES:
        expected, versions = pins.get(canonical(pkg)), found(pkg)
        if expected is not None:
            bad = {v: names for v, names in versions.items() if not same_version(v, expected)}
            if bad:
                problems.append(f"{pkg}: docker/requirements.lock pins {expected}, but {_where(bad, len(workers))}")
            agreed[pkg] = expected
        elif len(versions) > 1 or "MISSING" in versions:
            problems.append(f"{pkg}: {_where(versions, len(workers))}")
        else:
            agreed[pkg] = next(iter(versions))
    return agreed, problems, warnings


def _jsonable(value: Any) -> Any:
    """One cell of the sample as JSON (numpy scalars, pandas NA, NaN, nested values)."""
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    item = getattr(value, "item", None)
    if callable(item):
        with suppress(TypeError, ValueError):
            return _jsonable(item())
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    import pandas as pd

    return None if value is pd.NA or value is pd.NaT else str(value)


def _sample_records(df: Any, n: int) -> list[dict[str, Any]]:
    if df is None or n <= 0:
        return []
    return [{str(k): _jsonable(v) for k, v in row.items()} for row in df.head(n).to_dict(orient="records")]


def _default_lock() -> tuple[dict[str, str] | None, str | None]:
    """docker/requirements.lock, read where the check runs."""
    try:
        return dict(read_lock()), None
    except OSError as exc:
        return None, (
            f"docker/requirements.lock could not be read ({describe(exc)}): versions were only compared with each other"
        )


def verify_catalog_query(
    scheduler_address: str,
    query: VerificationQuery,
    *,
    where: ClusterRef | None = None,
    locked_versions: Mapping[str, str] | None = None,
    wait_hook: WaitHook | None = None,
    security: Any = None,
    stage_timeouts: Mapping[str, float] | None = None,
) -> VerificationResult:
    """Connect to the scheduler, check workers and versions, run `query` on the cluster, check its rows (a gate
    query returns after the workers). `wait_hook` runs between connect attempts and the workers stage's steps;
    `security`: `client_security` of a TLS scheduler; `where` names the real objects in messages; `locked_versions`
    defaults to docker/requirements.lock; `stage_timeouts` lowers `DEFAULT_STAGE_TIMEOUTS`. Raises
    `VerificationError`."""
    q = query
    fixes = Fixes(where, q.catalog_path)
    clock = _Clock(q.timeout_seconds, stage_timeouts)
    warnings: list[str] = []
    given = str(scheduler_address or "").strip()
    if not given:
        raise VerificationError("config", "the scheduler address is empty", fixes("config"))
    if security is None and given.startswith("tls://"):
        raise VerificationError(
            "config",
            "the scheduler address is tls:// but no client certificate was given (the scheduler requires one;"
            " `pulumi stack output --show-secrets clientTls` holds it)",
            fixes("config"),
        )
    if locked_versions is None and q.stages != GATE:
        locked_versions, note = _default_lock()
        if note:
            warnings.append(note)
    address = _normalize_address(scheduler_address, tls=security is not None)

    def result(**query_fields: Any) -> VerificationResult:
        return VerificationResult(
            workers=n_workers, workers_by_group=by_group, elapsed_seconds=round(clock.elapsed(), 4),
            stage_seconds=clock.seconds, warnings=warnings, scheduler=address, **query_fields,
        )  # fmt: skip

    client = None
    try:
        with clock.stage("connect") as budget:
            client = _connect(address, budget, fixes, wait_hook, security)
        with clock.stage("workers") as budget:
            n_workers = _wait_for_workers(client, address, q.min_workers, budget, fixes, wait_hook)
            by_group = _workers_by_group(client, 5.0)
        if q.stages == GATE:
            return result()
        with clock.stage("versions") as budget:
            versions, version_warnings = _check_versions(client, locked_versions, budget, fixes)
            warnings.extend(version_warnings)
        with clock.stage("open") as budget:
            catalog = _open_on_worker(client, q, budget, fixes)
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
        with clock.stage("rows", needs_time=False):  # counts what the query returned: nothing left to wait for
            if rows < q.min_rows:
                detail = (
                    "no partition of the catalog overlaps the cone"
                    if partitions == 0
                    else f"{partitions} partition(s) overlap the cone but only {rows} row(s) fall inside it"
                )
                raise VerificationError(
                    "rows",
                    f'the cone ra={q.cone.ra:g} dec={q.cone.dec:g} radius={q.cone.radius_arcsec:g}" on {q.catalog_path}'
                    f" returned {rows} row(s), fewer than min_rows={q.min_rows} ({detail})",
                    fixes("rows"),
                )
            sample = _sample_records(df, q.sample_rows)
    finally:
        if client is not None:
            with suppress(Exception):
                client.close(timeout=5)
    return result(rows=rows, partitions=partitions, versions=versions, sample=sample, catalog_path=q.catalog_path)


def _identify(address: str, budget: float, fixes: Fixes, wait_hook: WaitHook | None, security: Any = None) -> Any:
    """The scheduler's identity reply, retried until `budget`: between attempts the wait hook, then a pause that
    doubles up to `RETRY_MAX_PAUSE` (never past the deadline)."""
    attempts, deadline, pause = 0, time.monotonic() + budget, RETRY_FIRST_PAUSE
    last: Exception | None = None
    while (remaining := deadline - time.monotonic()) > 0:
        attempts += 1
        try:
            return _probe_scheduler(address, min(remaining, PROBE_ATTEMPT_SECONDS), security)
        except Exception as exc:  # refused, reset by a port-forward to a pod not Ready yet, silent peer: retry
            last = exc
        if wait_hook is not None:
            wait_hook()
        time.sleep(max(min(pause, deadline - time.monotonic()), 0.0))
        pause = min(pause * 2, RETRY_MAX_PAUSE)
    if last is None or isinstance(last, TimeoutError):
        problem = (
            f"no Dask scheduler answered at {address} within {budget:g} s ({attempts} attempt(s)"
            + ("" if last is None else f", last: {describe(last)}")
            + "): refused, unresolvable, a scheduler pod not Ready, or a peer that accepts TCP but does not speak"
            " the Dask protocol"
        )
        raise VerificationError("connect", problem, fixes("connect")) from None
    problem = f"could not talk to a Dask scheduler at {address} within {budget:g} s ({attempts} attempt(s))"
    raise VerificationError("connect", f"{problem}: {describe(last)}", fixes("connect")) from last


def _connect(address: str, budget: float, fixes: Fixes, wait_hook: WaitHook | None = None, security: Any = None) -> Any:
    started = time.monotonic()
    identity = _identify(address, budget, fixes, wait_hook, security)
    budget = max(budget - (time.monotonic() - started), 1.0)
    kind = identity.get("type") if isinstance(identity, dict) else None
    if kind != "Scheduler":
        raise VerificationError(
            "connect",
            f"{address} answered as a Dask {kind or 'peer of unknown type'}, not as the scheduler",
            fixes("connect"),
        )
    from distributed import Client

    tls_args = {"security": security} if security is not None else {}
    with _failing_as(
        "connect", fixes, f"the Dask client could not connect to {address}",
        timed_out=f"the Dask client could not register with {address} within {budget:g} s",
    ):  # fmt: skip
        return Client(address, timeout=budget, set_as_default=False, direct_to_workers=False, **tls_args)  # type: ignore[no-untyped-call]


def _count_workers(client: Any, seconds: float) -> int | None:
    try:
        return len(client.nthreads(callback_timeout=seconds))
    except Exception:
        return None


def _workers_by_group(client: Any, seconds: float) -> dict[str, int]:
    """Workers per DaskWorkerGroup (from the names the operator gives); {} if the scheduler does not say."""
    try:
        info = client.sync(client.scheduler.identity, n_workers=-1, callback_timeout=seconds)
    except Exception:
        return {}
    return dict(sorted(Counter(worker_group_of(w.get("name")) for w in (info.get("workers") or {}).values()).items()))


def _wait_for_workers(
    client: Any, address: str, min_workers: int, budget: float, fixes: Fixes, wait_hook: WaitHook | None = None
) -> int:
    """Wait for `min_workers`; with a `wait_hook`, in steps of `WORKER_WAIT_STEP_SECONDS` with the hook in between
    (a stuck worker pod fails the stage early)."""
    deadline = time.monotonic() + budget
    while min_workers > 0:  # a gate may wait for none (a default group the autoscaler may scale to zero)
        remaining = deadline - time.monotonic()
        step = max(min(remaining, WORKER_WAIT_STEP_SECONDS) if wait_hook is not None else remaining, 0.1)
        try:
            with _failing_as("workers", fixes, f"could not list the workers of {address}"):
                client.wait_for_workers(min_workers, timeout=step)
            break
        except TimeoutError:
            if deadline - time.monotonic() <= 0.0 or wait_hook is None:
                have = _count_workers(client, 5.0)
                raise VerificationError(
                    "workers",
                    f"{'an unknown number of' if have is None else have} worker(s) joined the scheduler at {address},"
                    f" fewer than min_workers={min_workers}, within {budget:g} s",
                    fixes("workers"),
                ) from None
        try:
            wait_hook()
        except VerificationError as exc:  # a stuck pod, found while this stage waits: name this stage
            raise VerificationError("workers", exc.problem, exc.fix) from None
    have = _count_workers(client, 5.0)
    return have if have is not None else min_workers


def _check_versions(
    client: Any, locked: Mapping[str, str] | None, budget: float, fixes: Fixes
) -> tuple[dict[str, str], list[str]]:
    with _failing_as(
        "versions", fixes, "could not collect package versions",
        timed_out=f"the scheduler and workers did not report their versions within {budget:g} s",
    ):  # fmt: skip
        # `get_versions` with a timeout (`sync(callback_timeout=)`); the packages beyond distributed's own list are
        # answered with importlib.metadata (nothing is imported remotely).
        packages = ["lsdb", "hats", "nested-pandas", "pyarrow"]
        report = client.sync(client._get_versions, check=False, packages=packages, callback_timeout=budget)
    agreed, problems, warnings = compare_versions(report, locked)
    if problems:
        raise VerificationError(
            "versions", "client, scheduler and workers do not run the locked packages: " + "; ".join(problems),
            fixes("versions"),
        )  # fmt: skip
    return agreed, warnings


def _open_on_worker(client: Any, query: VerificationQuery, budget: float, fixes: Fixes) -> Any:
    """`lsdb.open_catalog` as a task, where the catalog is: only the lazy catalog comes back.
    `error_empty_filter=False` lets an empty cone reach the rows stage, which names it."""
    try:
        lsdb: Any = importlib.import_module("lsdb")  # Any: lsdb re-exports its API implicitly
    except ImportError as exc:
        raise VerificationError(
            "open", f"lsdb is not installed in this client ({describe(exc)})", fixes("versions")
        ) from exc
    future = client.submit(
        lsdb.open_catalog,
        query.catalog_path,
        search_filter=lsdb.ConeSearch(query.cone.ra, query.cone.dec, query.cone.radius_arcsec),
        columns=list(query.columns) if query.columns else None,
        error_empty_filter=False,
        storage_options=query.storage_options or None,
        key=f"{OPEN_TASK_PREFIX}-{uuid.uuid4().hex}",
    )
    try:
        with _failing_as(
            "open", fixes, f"a worker could not open the catalog {query.catalog_path}",
            timed_out=f"opening {query.catalog_path} on a worker did not finish within {budget:g} s"
            " (slow or hung storage?)",
        ):  # fmt: skip
            return future.result(timeout=budget)
    finally:
        future.release()


def _compute(client: Any, catalog: Any, partitions: int, budget: float, fixes: Fixes) -> Any:
    """The rows, computed through this client whatever the caller's dask config says (a global `scheduler=
    "synchronous"` would run it here, where the catalog is not); closing the client cancels the tasks."""
    if partitions == 0:
        return None
    with _failing_as(
        "compute", fixes, f"the query over {partitions} partition(s) failed on the cluster",
        timed_out=f"the query over {partitions} partition(s) did not finish on the cluster within {budget:g} s",
    ):  # fmt: skip
        return client.compute(catalog.to_dask_dataframe()).result(timeout=budget)
