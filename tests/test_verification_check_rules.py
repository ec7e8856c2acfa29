"""The check's stages (components/verification/check.py), fast: the pure parts called directly (version comparison,
addresses, the sample's cells, the clock, the failure messages), the stages given a stand-in client, and
`verify_catalog_query` against an in-process Dask cluster (`LocalCluster(processes=False)`) with a stand-in lsdb
whose `open_catalog` returns a small frame. Fast enough for mutation testing (docs/mutation.md);
tests/test_verification.py runs the same check against Dask processes and a real HATS catalog."""

from __future__ import annotations

import math
import sys
import time
import types
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from distributed import LocalCluster

from components.lock import read_lock
from components.verification import check
from components.verification.check import (
    CHECKED_PACKAGES,
    OPEN_TASK_PREFIX,
    VerificationError,
    _Clock,
    _failing_as,
    _jsonable,
    _normalize_address,
    client_security,
    compare_versions,
    describe,
    verify_catalog_query,
)
from components.verification.diagnostics import Fixes
from components.verification.query import ClusterRef, VerificationQuery
from tests.test_verification_provider import report

WHERE = ClusterRef("astro", "lsdb-x-0a1b", "kind-lsdb")
FIXES = Fixes(WHERE, "/data/x")


# --- pure parts ------------------------------------------------------------------------------------------------


def test_a_failure_names_its_stage_the_problem_and_the_fix() -> None:
    err = VerificationError("open", "no catalog", "mount it")
    assert (err.stage, err.problem, err.fix) == ("open", "no catalog", "mount it")
    assert str(err) == "LSDB verification failed at stage 'open': no catalog\nFix: mount it"
    assert err.to_dict() == {"ok": False, "stage": "open", "problem": "no catalog", "fix": "mount it",
                             "message": str(err)}  # fmt: skip


def test_describe_is_the_type_and_the_first_line() -> None:
    assert describe(OSError("  disk gone\nat /dev/x  ")) == "OSError: disk gone"
    assert describe(TimeoutError()) == "TimeoutError"
    assert describe(ValueError("\n")) == "ValueError"


@pytest.mark.parametrize(
    ("given", "tls", "dialled"),
    [
        ("s:8786", False, "tcp://s:8786"),
        (" s ", False, "tcp://s:8786"),
        ("tcp://s:9000", False, "tcp://s:9000"),
        ("tcp://s", False, "tcp://s:8786"),
        ("s:8786", True, "tls://s:8786"),
        ("tcp://127.0.0.1:4000", True, "tls://127.0.0.1:4000"),  # a port-forward's address, dialled with TLS
        ("tls://s", True, "tls://s:8786"),
        ("tls://s:1", False, "tls://s:1"),
        ("tcp://[::1]", False, "tcp://[::1]:8786"),
        ("tcp://[::1]:5", False, "tcp://[::1]:5"),
        ("inproc://", False, "inproc://"),
    ],
)
def test_addresses_get_a_scheme_and_the_scheduler_port(given: str, tls: bool, dialled: str) -> None:
    assert _normalize_address(given, tls=tls) == dialled


def test_the_client_certificate_is_mutual_tls_only() -> None:
    import dask

    with dask.config.set({"distributed.comm.require-encryption": False}):  # a user's config cannot relax it
        security = client_security("/ca.pem", "/cert.pem", "/key.pem")
    assert (security.tls_ca_file, security.tls_client_cert, security.tls_client_key) == (
        "/ca.pem", "/cert.pem", "/key.pem",
    )  # fmt: skip
    assert security.require_encryption is True


def packages(**changes: Any) -> dict[str, Any]:
    return {"python": "3.11.7.final.0", **{p: f"1.{i}" for i, p in enumerate(CHECKED_PACKAGES)}, **changes}


PINS = {p: f"1.{i}" for i, p in enumerate(CHECKED_PACKAGES)}


def test_agreed_versions_are_the_pins_and_the_schedulers_python() -> None:
    good = packages()
    agreed, problems, warnings = compare_versions(report(good, good, {"w1": good}), PINS)
    assert (problems, warnings) == ([], [])
    assert agreed == {"python": "3.11.7", **PINS}
    assert next(iter(agreed)) == "python"
    # The scheduler's python, else the client's.
    agreed, _, _ = compare_versions(report(packages(python="3.11.6"), packages(python=None), {}), PINS)
    assert agreed["python"] == "3.11.6"
    agreed, _, _ = compare_versions(report(packages(python="3.11.9"), packages(python="3.11.7.final.0"), {}), PINS)
    assert agreed["python"] == "3.11.7"
    agreed, _, _ = compare_versions(report(packages(python=None), packages(python=None), {}), PINS)
    assert agreed["python"] == ""


def test_a_pin_names_who_runs_what() -> None:
    good = packages()
    pins = {**PINS, "Nested_Pandas": "9.9"}  # lock names are canonicalised
    old = packages(**{"nested-pandas": "1.0"})
    workers = {"tcp://w1": good, "tcp://w2": old, "tcp://w3": old, "tcp://w4": old, "tcp://w5": old}
    agreed, problems, _ = compare_versions(report(good, good, workers), pins)
    assert problems == [
        "nested-pandas: docker/requirements.lock pins 9.9, but 4 of 5 workers (tcp://w2, tcp://w3, tcp://w4, ...)"
        " have 1.0; client, scheduler and 1 of 5 workers (tcp://w1) have 1.4"
    ]
    assert agreed["nested-pandas"] == "9.9"
    three = {"tcp://w1": old, "tcp://w2": old, "tcp://w3": old}
    _, problems, _ = compare_versions(report(good, good, three), PINS)
    assert problems == [
        "nested-pandas: docker/requirements.lock pins 1.4, but 3 of 3 workers (tcp://w1, tcp://w2, tcp://w3) have 1.0"
    ]
    _, problems, _ = compare_versions(report(packages(lsdb=None), good, {}), PINS)
    assert problems == ["lsdb: docker/requirements.lock pins 1.2, but client has nothing (not installed)"]
    _, problems, _ = compare_versions(report(good, good, {"w": packages(lsdb="1.2.0")}), PINS)
    assert problems == []  # the same version, spelt otherwise


def test_without_a_pin_the_sides_must_agree_and_have_it() -> None:
    good = packages()
    agreed, problems, _ = compare_versions(report(good, good, {"w": good}), None)
    assert problems == [] and agreed == {"python": "3.11.7", **PINS}
    _, problems, _ = compare_versions(report(good, packages(pandas="2.0"), {"w": good}), {})
    assert problems == ["pandas: client and 1 of 1 workers (w) have 1.5; scheduler has 2.0"]
    _, problems, _ = compare_versions(report(packages(msgpack=None), packages(msgpack=None), {}), {})
    assert problems == ["msgpack: client and scheduler have nothing (not installed)"]


def test_python_must_agree_on_the_minor_version() -> None:
    good = packages()
    _, problems, warnings = compare_versions(report(packages(python="3.12.1"), good, {}), PINS)
    assert problems == ["python: scheduler has 3.11.7.final.0; client has 3.12.1"] and warnings == []
    _, problems, warnings = compare_versions(report(packages(python="3.11.9"), good, {}), PINS)
    assert problems == []
    assert warnings == ["python micro versions differ: scheduler has 3.11.7.final.0; client has 3.11.9"]
    workers = {"w1": good, "w2": packages(python="3.12.1")}
    _, problems, _ = compare_versions(report(good, good, workers), PINS)
    assert problems == [
        "python: client, scheduler and 1 of 2 workers (w1) have 3.11.7.final.0; 1 of 2 workers (w2) has 3.12.1"
    ]
    workers = {"w1": good, "w2": packages(python="3.11.8")}
    assert compare_versions(report(good, good, workers), PINS)[2] == [
        "python micro versions differ: client, scheduler and 1 of 2 workers (w1) have 3.11.7.final.0; 1 of 2 workers"
        " (w2) has 3.11.8"
    ]
    _, problems, _ = compare_versions({"client": None, "scheduler": {}, "workers": {"w": None}}, {})
    assert problems[0] == "dask: client, scheduler and 1 of 1 workers (w) have nothing (not installed)"


def test_sample_cells_are_plain_json() -> None:
    assert [_jsonable(v) for v in (None, True, "s", 3, 1.5)] == [None, True, "s", 3, 1.5]
    assert _jsonable(math.nan) is None and _jsonable(math.inf) is None
    assert _jsonable(np.int64(7)) == 7 and type(_jsonable(np.int64(7))) is int
    assert _jsonable(np.float32(np.nan)) is None and _jsonable(np.bool_(True)) is True
    assert _jsonable({1: np.int8(2), "l": [np.float64(0.5), (np.int16(1),)]}) == {"1": 2, "l": [0.5, [1]]}
    assert _jsonable(pd.NA) is None and _jsonable(pd.NaT) is None
    assert _jsonable(pd.Timestamp("2020-01-02")) == "2020-01-02 00:00:00"
    assert _jsonable(np.array([1, 2])) == "[1 2]"  # `.item()` of more than one value raises: shown as text

    class Cell:
        def item(self, index: int) -> Any:  # an `item` that is no numpy scalar's
            raise AssertionError("not called without its argument")

        def __str__(self) -> str:
            return "cell"

    assert _jsonable(Cell()) == "cell"
    frame = pd.DataFrame({"a": [1, 2, 3], "b": [0.5, np.nan, 1.0]})
    assert check._sample_records(frame, 2) == [{"a": 1, "b": 0.5}, {"a": 2, "b": None}]
    assert check._sample_records(frame, 1) == [{"a": 1, "b": 0.5}]
    assert check._sample_records(frame, 0) == [] and check._sample_records(None, 5) == []


def test_the_lock_is_read_where_the_check_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    assert check._default_lock() == (dict(read_lock()), None)

    def unreadable() -> dict[str, str]:
        raise FileNotFoundError("docker/requirements.lock")

    monkeypatch.setattr(check, "read_lock", unreadable)
    assert check._default_lock() == (
        None,
        "docker/requirements.lock could not be read (FileNotFoundError: docker/requirements.lock): versions were only"
        " compared with each other",
    )


def test_the_clock_gives_each_stage_its_ceiling_within_what_is_left() -> None:
    clock = _Clock(100.0, {"open": 5.0})
    assert clock.timeout == 100.0 and clock.limits["open"] == 5.0 and clock.limits["connect"] == 600.0
    with clock.stage("open") as budget:
        assert budget == 5.0
    with clock.stage("connect") as budget:
        assert 99.0 < budget <= 100.0  # what is left of the overall timeout
    with clock.stage("rows", needs_time=False) as left:
        assert 99.0 < left <= 100.0
    assert list(clock.seconds) == ["open", "connect", "rows"] and all(0 <= s < 1 for s in clock.seconds.values())
    assert 0 <= clock.elapsed() < 1
    late = _Clock(0.2, None)
    late.seconds = {"connect": 0.25}
    time.sleep(0.25)
    with pytest.raises(VerificationError) as err, late.stage("workers"):
        pass
    assert err.value.stage == "workers"
    assert err.value.problem == "the overall timeout of 0.2 s ran out before this stage started (connect 0.25 s)"
    assert err.value.fix == (
        "raise verify.timeoutSeconds (command line: --timeout), or find what made the earlier stages slow"
    )
    assert "workers" in late.seconds  # timed even when it failed


def test_a_stages_errors_become_its_failure() -> None:
    with pytest.raises(VerificationError) as err, _failing_as("open", FIXES, "could not open", "too slow"):
        raise TimeoutError("x")
    assert (err.value.stage, err.value.problem, err.value.fix) == ("open", "too slow", FIXES("open"))
    assert err.value.__cause__ is None and err.value.__suppress_context__
    with pytest.raises(VerificationError) as err, _failing_as("open", FIXES, "could not open", "too slow"):
        raise OSError("gone\nmore")
    assert (err.value.problem, err.value.fix) == ("could not open: OSError: gone", FIXES("open"))
    assert isinstance(err.value.__cause__, OSError)
    with pytest.raises(TimeoutError), _failing_as("workers", FIXES, "could not list"):
        raise TimeoutError  # no `timed_out`: the caller waits again
    original = VerificationError("rows", "p", "f")
    with pytest.raises(VerificationError) as err, _failing_as("open", FIXES, "could not open", "too slow"):
        raise original
    assert err.value is original


# --- stages with a stand-in client -----------------------------------------------------------------------------


class Future:
    def __init__(self, value: Any = None, error: BaseException | None = None) -> None:
        self.value, self.error, self.timeouts, self.released = value, error, [], False

    def result(self, timeout: float) -> Any:
        self.timeouts.append(timeout)
        if self.error is not None:
            raise self.error
        return self.value

    def release(self) -> None:
        self.released = True


class Client:
    """distributed.Client's contract, as much as the stages use."""

    def __init__(self, versions: Any = None, future: Future | None = None, nthreads: Any = None, identity: Any = None):
        self.versions, self.future, self._nthreads, self.identity = versions, future, nthreads, identity
        self.calls: list[tuple[Any, ...]] = []
        self.scheduler = types.SimpleNamespace(identity="identity-rpc")

    def _get_versions(self) -> None: ...

    def sync(self, method: Any, **kwargs: Any) -> Any:
        self.calls.append(("sync", method, kwargs))
        answer = self.versions if method == self._get_versions else self.identity
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def submit(self, fn: Any, *args: Any, **kwargs: Any) -> Future:
        self.calls.append(("submit", fn, args, kwargs))
        assert self.future is not None
        return self.future

    def compute(self, collection: Any) -> Future:
        self.calls.append(("compute", collection))
        assert self.future is not None
        return self.future

    def nthreads(self, callback_timeout: float) -> Any:
        self.calls.append(("nthreads", callback_timeout))
        if isinstance(self._nthreads, BaseException):
            raise self._nthreads
        return self._nthreads


def test_the_versions_stage_asks_every_side_within_its_budget() -> None:
    good = packages()
    client = Client(versions=report(good, good, {"w": good}))
    assert check._check_versions(client, PINS, 7.0, FIXES) == ({"python": "3.11.7", **PINS}, [])
    ((_, method, kwargs),) = client.calls
    assert method == client._get_versions
    assert kwargs == {"check": False, "packages": ["lsdb", "hats", "nested-pandas", "pyarrow"], "callback_timeout": 7.0}
    client = Client(versions=report(packages(python="3.11.1"), good, {}))
    assert check._check_versions(client, PINS, 7.0, FIXES)[1] == [
        "python micro versions differ: client has 3.11.1; scheduler has 3.11.7.final.0"
    ]
    client = Client(versions=report(packages(lsdb="0.1", hats="0.2"), good, {}))
    with pytest.raises(VerificationError) as err:
        check._check_versions(client, PINS, 7.0, FIXES)
    assert err.value.stage == "versions" and err.value.fix == FIXES("versions")
    assert err.value.problem == (
        "client, scheduler and workers do not run the locked packages: lsdb: docker/requirements.lock pins 1.2, but"
        " client has 0.1; hats: docker/requirements.lock pins 1.3, but client has 0.2"
    )
    for error, problem in ((TimeoutError(), "the scheduler and workers did not report their versions within 7 s"),
                           (OSError("closed"), "could not collect package versions: OSError: closed")):  # fmt: skip
        with pytest.raises(VerificationError) as err:
            check._check_versions(Client(versions=error), PINS, 7.0, FIXES)
        assert (err.value.stage, err.value.problem) == ("versions", problem)


class ConeSearch:
    def __init__(self, ra: float, dec: float, radius_arcsec: float) -> None:
        self.args = (ra, dec, radius_arcsec)


def open_catalog(path: str, **kwargs: Any) -> Any:
    """The stand-in lsdb.open_catalog: a catalog of FRAME's rows, 2 partitions (or none for /empty)."""
    if path.endswith("missing"):
        raise FileNotFoundError(f"{path}/hats.properties")
    return Catalog(0 if path.endswith("empty") else 2, kwargs, path)


FRAME = pd.DataFrame({"id": range(6), "ra": [180.0 + i / 10 for i in range(6)], "dec": [0.0] * 6})


BEFORE_COMPUTE: list[Any] = []  # called where the client builds the query (a worker leaves, time passes)


def broken(part: pd.DataFrame) -> pd.DataFrame:
    raise OSError("partition unreadable")


class Catalog:
    def __init__(self, npartitions: int, kwargs: dict[str, Any], path: str = "") -> None:
        self.npartitions, self.kwargs, self.path = npartitions, kwargs, path

    def to_dask_dataframe(self) -> Any:
        import dask.dataframe as dd

        for hook in BEFORE_COMPUTE:
            hook()
        frame = dd.from_pandas(FRAME, npartitions=2)
        return frame.map_partitions(broken, meta=FRAME) if self.path.endswith("broken") else frame


@pytest.fixture
def fake_lsdb(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("lsdb")
    module.open_catalog = open_catalog  # type: ignore[attr-defined]
    module.ConeSearch = ConeSearch  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "lsdb", module)
    monkeypatch.setattr(sys.modules[__name__], "BEFORE_COMPUTE", [])


def query(**keys: Any) -> VerificationQuery:
    cone = {"ra": 180.0, "dec": 1.5, "radiusArcsec": 60.0}
    return VerificationQuery.model_validate({"catalogPath": "/data/x", "cone": cone, "timeoutSeconds": 30, **keys})


def test_the_catalog_is_opened_on_a_worker_as_a_task(fake_lsdb: None) -> None:
    future = Future("the lazy catalog")
    client = Client(future=future)
    q = query(columns=["id", "ra"], storageOptions={"anon": True})
    assert check._open_on_worker(client, q, 9.0, FIXES) == "the lazy catalog"
    ((_, fn, args, kwargs),) = client.calls
    assert fn is open_catalog and args == ("/data/x",)
    assert kwargs["search_filter"].args == (180.0, 1.5, 60.0)
    assert kwargs["columns"] == ["id", "ra"] and kwargs["storage_options"] == {"anon": True}
    assert kwargs["error_empty_filter"] is False
    assert kwargs["key"].startswith(f"{OPEN_TASK_PREFIX}-") and len(kwargs["key"]) == len(OPEN_TASK_PREFIX) + 33
    assert future.timeouts == [9.0] and future.released
    client = Client(future=Future())
    check._open_on_worker(client, query(), 9.0, FIXES)
    assert client.calls[0][3]["columns"] is None and client.calls[0][3]["storage_options"] is None
    assert client.calls[0][3]["key"] != kwargs["key"]  # a task of its own each time


def test_an_open_that_fails_names_the_catalog(fake_lsdb: None) -> None:
    for error, problem in ((TimeoutError(), "opening /data/x on a worker did not finish within 9 s (slow or hung"
                                            " storage?)"),
                           (KeyError("no_such_column"), "a worker could not open the catalog /data/x: KeyError:"
                                                        " 'no_such_column'")):  # fmt: skip
        future = Future(error=error)
        with pytest.raises(VerificationError) as err:
            check._open_on_worker(Client(future=future), query(), 9.0, FIXES)
        assert (err.value.stage, err.value.problem, err.value.fix) == ("open", problem, FIXES("open"))
        assert future.released


def test_without_lsdb_the_client_runs_another_image(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lsdb", None)  # import lsdb raises ImportError
    with pytest.raises(VerificationError) as err:
        check._open_on_worker(Client(), query(), 9.0, FIXES)
    assert err.value.stage == "open" and err.value.fix == FIXES("versions")
    assert err.value.problem.startswith("lsdb is not installed in this client (ModuleNotFoundError: ")


def test_the_rows_are_computed_on_the_cluster_within_the_budget() -> None:
    catalog = Catalog(2, {})
    future = Future(FRAME)
    client = Client(future=future)
    assert check._compute(client, catalog, 2, 4.0, FIXES) is FRAME and future.timeouts == [4.0]
    ((_, collection),) = client.calls
    assert collection.npartitions == 2  # the catalog's dask dataframe
    assert check._compute(Client(), catalog, 0, 4.0, FIXES) is None  # no partition overlaps the cone
    for error, problem in ((TimeoutError(), "the query over 2 partition(s) did not finish on the cluster within 4 s"),
                           (MemoryError("oom"), "the query over 2 partition(s) failed on the cluster: MemoryError:"
                                                " oom")):  # fmt: skip
        with pytest.raises(VerificationError) as err:
            check._compute(Client(future=Future(error=error)), catalog, 2, 4.0, FIXES)
        assert (err.value.stage, err.value.problem, err.value.fix) == ("compute", problem, FIXES("compute"))


def test_workers_are_counted_per_group() -> None:
    names = ("lsdb-x-0a1b-default-worker-0123456789", "lsdb-x-0a1b-big-worker-abcdef0123",
             "lsdb-x-0a1b-default-worker-9876543210", "tcp://10.0.0.1:1")  # fmt: skip
    workers = {f"w{i}": {"name": name} for i, name in enumerate(names)}
    client = Client(identity={"workers": workers})
    assert check._workers_by_group(client, 3.0) == {
        "(not an operator worker)": 1, "lsdb-x-0a1b-big": 1, "lsdb-x-0a1b-default": 2,
    }  # fmt: skip
    assert list(check._workers_by_group(client, 3.0)) == sorted(check._workers_by_group(client, 3.0))
    assert client.calls[0] == ("sync", "identity-rpc", {"n_workers": -1, "callback_timeout": 3.0})
    assert check._workers_by_group(Client(identity={}), 3.0) == {}
    assert check._workers_by_group(Client(identity=OSError("gone")), 3.0) == {}
    client = Client(nthreads={"w1": 1, "w2": 2})
    assert check._count_workers(client, 2.0) == 2 and client.calls == [("nthreads", 2.0)]
    assert check._count_workers(Client(nthreads=OSError()), 2.0) is None


class Workers(Client):
    """`wait_for_workers` that times out (`joined` workers never become enough) or fails."""

    def __init__(self, joined: int, error: BaseException | None = None, nthreads: Any = None) -> None:
        super().__init__(nthreads=nthreads if nthreads is not None else {f"w{i}": 1 for i in range(joined)})
        self.joined, self.error = joined, error

    def wait_for_workers(self, n: int, timeout: float) -> None:
        self.calls.append(("wait", n, timeout))
        if self.error is not None:
            raise self.error
        if self.joined < n:
            raise TimeoutError


def test_the_workers_stage_waits_for_min_workers() -> None:
    client = Workers(joined=3)
    assert check._wait_for_workers(client, "tcp://s:8786", 2, 8.0, FIXES) == 3
    assert client.calls[0][:2] == ("wait", 2) and 7.9 < client.calls[0][2] <= 8.0  # one wait without a hook
    client = Workers(joined=3, nthreads=OSError())
    assert check._wait_for_workers(client, "tcp://s:8786", 2, 8.0, FIXES) == 2  # the count unknown: what it waited for
    client = Workers(joined=0)
    assert check._wait_for_workers(client, "tcp://s:8786", 0, 8.0, FIXES) == 0 and client.calls == [("nthreads", 5.0)]
    with pytest.raises(VerificationError) as err:
        check._wait_for_workers(Workers(joined=1), "tcp://s:8786", 2, 8.0, FIXES)
    assert (err.value.stage, err.value.fix) == ("workers", FIXES("workers"))
    assert err.value.problem == "1 worker(s) joined the scheduler at tcp://s:8786, fewer than min_workers=2, within 8 s"
    with pytest.raises(VerificationError) as err:
        check._wait_for_workers(Workers(joined=1, nthreads=OSError()), "tcp://s:8786", 2, 8.0, FIXES)
    assert err.value.problem.startswith("an unknown number of worker(s) joined")
    with pytest.raises(VerificationError) as err:
        check._wait_for_workers(Workers(joined=0, error=OSError("closed")), "tcp://s:8786", 1, 8.0, FIXES)
    assert err.value.problem == "could not list the workers of tcp://s:8786: OSError: closed"


def test_with_a_hook_the_workers_stage_waits_in_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(check, "WORKER_WAIT_STEP_SECONDS", 0.2)
    hooks: list[int] = []
    client = Workers(joined=0)

    def hook() -> None:
        hooks.append(1)
        if len(hooks) == 3:
            client.joined, client._nthreads = 1, {"w0": 1}

    assert check._wait_for_workers(client, "tcp://s:8786", 1, 8.0, FIXES, hook) == 1
    waits = [c for c in client.calls if c[0] == "wait"]
    assert len(waits) == 4 and all(w[2] == 0.2 for w in waits) and len(hooks) == 3
    client = Workers(joined=0)
    with pytest.raises(VerificationError) as err:
        check._wait_for_workers(client, "tcp://s:8786", 1, 0.3, FIXES, lambda: None)
    assert (
        err.value.problem == "0 worker(s) joined the scheduler at tcp://s:8786, fewer than min_workers=1, within 0.3 s"
    )
    assert all(0.1 <= c[2] <= 0.2 for c in client.calls if c[0] == "wait")  # steps, never below 0.1 s

    def stuck() -> None:
        raise VerificationError("connect", "pod w-1 cannot pull", "check the image")

    with pytest.raises(VerificationError) as err:
        check._wait_for_workers(Workers(joined=0), "tcp://s:8786", 1, 8.0, FIXES, stuck)
    assert (err.value.stage, err.value.problem, err.value.fix) == ("workers", "pod w-1 cannot pull", "check the image")


# --- the whole check against an in-process cluster -------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(
        processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None, protocol="tcp"
    ) as local:  # fmt: skip
        yield local


def clients(cluster: LocalCluster) -> set[str]:
    return {c for c in cluster.scheduler.clients if c != "fire-and-forget"}


def test_the_check_passes_with_rows_versions_and_a_sample(cluster: LocalCluster, fake_lsdb: None) -> None:
    before, started = clients(cluster), time.monotonic()
    result = verify_catalog_query(cluster.scheduler_address, query(sampleRows=2, minRows=6, minWorkers=2), where=WHERE)
    took = time.monotonic() - started
    assert result.elapsed_seconds <= took and result.elapsed_seconds == round(result.elapsed_seconds, 4)
    deadline = time.monotonic() + 5
    while clients(cluster) != before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert clients(cluster) == before, "the check closes its client"
    assert (result.rows, result.partitions, result.workers) == (6, 2, 2)
    assert result.workers_by_group == {"(not an operator worker)": 2}
    assert result.sample == [{"id": 0, "ra": 180.0, "dec": 0.0}, {"id": 1, "ra": 180.1, "dec": 0.0}]
    assert result.versions["lsdb"] == read_lock()["lsdb"] and set(result.versions) == {"python", *CHECKED_PACKAGES}
    assert list(result.stage_seconds) == ["connect", "workers", "versions", "open", "compute", "rows"]
    assert 0 < result.elapsed_seconds < 30 and result.elapsed_seconds >= sum(result.stage_seconds.values()) - 0.01
    assert result.warnings == [] and result.catalog_path == "/data/x"
    assert result.scheduler == cluster.scheduler_address
    bare = cluster.scheduler_address.removeprefix("tcp://")
    assert verify_catalog_query(bare, query(stages="gate")).scheduler == cluster.scheduler_address


def test_the_gate_stops_after_the_workers(cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lsdb", None)  # the gate never opens a catalog
    monkeypatch.setattr(check, "read_lock", lambda: pytest.fail("the gate compares no versions"))
    monkeypatch.setattr(check._Clock, "elapsed", lambda self: 12.345678)  # the report rounds it to 0.1 ms
    result = verify_catalog_query(cluster.scheduler_address, VerificationQuery(stages="gate", min_workers=2))
    assert (result.rows, result.partitions, result.versions, result.sample) == (None, None, {}, [])
    assert result.workers == 2 and list(result.stage_seconds) == ["connect", "workers"] and result.warnings == []
    assert result.catalog_path is None and result.elapsed_seconds == 12.3457


def test_an_unreadable_lock_is_a_warning(cluster: LocalCluster, fake_lsdb: None, monkeypatch: pytest.MonkeyPatch):
    def unreadable() -> dict[str, str]:
        raise PermissionError("denied")

    monkeypatch.setattr(check, "read_lock", unreadable)
    result = verify_catalog_query(cluster.scheduler_address, query())
    assert result.warnings == [
        "docker/requirements.lock could not be read (PermissionError: denied): versions were only compared with each"
        " other"
    ]
    assert result.versions["lsdb"] == read_lock()["lsdb"]  # the sides agreed with each other


def test_a_given_lock_is_the_one_compared(cluster: LocalCluster, fake_lsdb: None) -> None:
    with pytest.raises(VerificationError) as err:
        verify_catalog_query(cluster.scheduler_address, query(), locked_versions={**read_lock(), "numpy": "0.1"})
    assert err.value.stage == "versions" and "numpy: docker/requirements.lock pins 0.1" in err.value.problem


def test_too_few_rows_fail_at_rows(cluster: LocalCluster, fake_lsdb: None) -> None:
    with pytest.raises(VerificationError) as err:
        verify_catalog_query(cluster.scheduler_address, query(minRows=7), where=WHERE)
    assert (err.value.stage, err.value.fix) == ("rows", Fixes(WHERE, "/data/x")("rows"))
    assert err.value.problem == (
        'the cone ra=180 dec=1.5 radius=60" on /data/x returned 6 row(s), fewer than min_rows=7 (2 partition(s)'
        " overlap the cone but only 6 row(s) fall inside it)"
    )
    with pytest.raises(VerificationError) as err:
        verify_catalog_query(cluster.scheduler_address, query(catalogPath="/data/empty"))
    assert err.value.problem == (
        'the cone ra=180 dec=1.5 radius=60" on /data/empty returned 0 row(s), fewer than min_rows=1 (no partition of'
        " the catalog overlaps the cone)"
    )
    assert verify_catalog_query(cluster.scheduler_address, query(catalogPath="/data/empty", minRows=0)).rows == 0


def test_the_fix_names_the_catalog_and_the_cluster(cluster: LocalCluster, fake_lsdb: None) -> None:
    where = ClusterRef("ns", "c")
    with pytest.raises(VerificationError) as err:
        verify_catalog_query(cluster.scheduler_address, query(catalogPath="s3://b/missing"), where=where)
    assert err.value.stage == "open" and err.value.fix == Fixes(where, "s3://b/missing")("open")
    assert "FileNotFoundError: s3://b/missing/hats.properties" in err.value.problem


def test_too_few_workers_within_the_stage_ceiling(cluster: LocalCluster) -> None:
    started = time.monotonic()
    with pytest.raises(VerificationError) as err:
        verify_catalog_query(cluster.scheduler_address, query(minWorkers=3), stage_timeouts={"workers": 0.5})
    assert time.monotonic() - started < 5
    assert err.value.problem == (
        f"2 worker(s) joined the scheduler at {cluster.scheduler_address}, fewer than min_workers=3, within 0.5 s"
    )


def test_the_address_is_checked_before_connecting() -> None:
    for address in ("", "  ", None):
        with pytest.raises(VerificationError) as err:
            verify_catalog_query(address, query(), where=WHERE)  # type: ignore[arg-type]
        assert (err.value.stage, err.value.problem, err.value.fix) == (
            "config", "the scheduler address is empty", Fixes(WHERE, "/data/x")("config"),
        )  # fmt: skip
    with pytest.raises(VerificationError) as err:
        verify_catalog_query(" tls://s:8786", query())
    assert err.value.fix == Fixes(None, "/data/x")("config")
    assert err.value.stage == "config" and err.value.problem == (
        "the scheduler address is tls:// but no client certificate was given (the scheduler requires one;"
        " `pulumi stack output --show-secrets clientTls` holds it)"
    )


def test_the_client_certificate_is_what_the_check_connects_with(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[Any, ...]] = []

    def connect(address: str, budget: float, fixes: Fixes, wait_hook: Any, security: Any) -> Any:
        seen.append((address, budget, wait_hook, security))
        raise VerificationError("connect", "stop here", "")

    monkeypatch.setattr(check, "_connect", connect)
    hook = object()
    with pytest.raises(VerificationError):
        verify_catalog_query("tcp://s", query(), security="the security", wait_hook=hook, stage_timeouts={"connect": 3})
    with pytest.raises(VerificationError):
        verify_catalog_query("s:1", query())
    assert seen[0][0] == "tls://s:8786" and seen[0][1] == 3 and seen[0][2:] == (hook, "the security")
    assert seen[1][0] == "tcp://s:1" and seen[1][3] is None and seen[1][2] is None


# --- connect -----------------------------------------------------------------------------------------------------


def test_the_probe_asks_the_scheduler_who_it_is(cluster: LocalCluster) -> None:
    identity = check._probe_scheduler(cluster.scheduler_address, 5.0)
    assert identity["type"] == "Scheduler" and identity["id"] == cluster.scheduler.id


def test_a_peer_that_is_no_scheduler_fails_connect(cluster: LocalCluster) -> None:
    worker = next(iter(cluster.scheduler.workers))
    with pytest.raises(VerificationError) as err:
        check._connect(worker, 5.0, FIXES)
    assert (err.value.stage, err.value.fix) == ("connect", FIXES("connect"))
    assert err.value.problem == f"{worker} answered as a Dask Worker, not as the scheduler"


def test_connect_returns_a_client_that_is_not_the_default(cluster: LocalCluster) -> None:
    from distributed import default_client

    client = check._connect(cluster.scheduler_address, 5.0, FIXES)
    try:
        assert client.scheduler.address == cluster.scheduler_address
        with pytest.raises(ValueError, match="No clients found"):
            default_client()
        assert client.direct_to_workers is False
    finally:
        client.close()


def test_connect_retries_with_the_hook_until_its_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[float] = []
    hooks: list[float] = []

    def refused(address: str, seconds: float, security: Any = None) -> Any:
        attempts.append(seconds)
        raise ConnectionRefusedError("refused")

    monkeypatch.setattr(check, "_probe_scheduler", refused)
    monkeypatch.setattr(check, "RETRY_FIRST_PAUSE", 0.05)
    monkeypatch.setattr(check, "RETRY_MAX_PAUSE", 0.2)
    started = time.monotonic()
    with pytest.raises(VerificationError) as err:
        check._identify("tcp://s:1", 0.6, FIXES, lambda: hooks.append(time.monotonic()))
    assert 0.6 <= time.monotonic() - started < 1.2
    assert len(attempts) == len(hooks) and 4 <= len(attempts) <= 6  # pauses 0.05, 0.1, 0.2, 0.2, (0.05)
    assert attempts[0] <= 0.6 and all(a <= 0.6 for a in attempts)
    assert err.value.problem == (
        f"could not talk to a Dask scheduler at tcp://s:1 within 0.6 s ({len(attempts)} attempt(s)):"
        " ConnectionRefusedError: refused"
    )
    assert isinstance(err.value.__cause__, ConnectionRefusedError)


def test_a_silent_peer_fails_connect_naming_the_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    def silent(address: str, seconds: float, security: Any = None) -> Any:
        time.sleep(min(seconds, 0.1))
        raise TimeoutError

    monkeypatch.setattr(check, "_probe_scheduler", silent)
    monkeypatch.setattr(check, "PROBE_ATTEMPT_SECONDS", 0.1)
    with pytest.raises(VerificationError) as err:
        check._identify("tcp://s:1", 0.3, FIXES, None)
    assert err.value.problem.startswith("no Dask scheduler answered at tcp://s:1 within 0.3 s (")
    assert err.value.problem.endswith(
        " attempt(s), last: TimeoutError): refused, unresolvable, a scheduler pod not Ready, or a peer that accepts"
        " TCP but does not speak the Dask protocol"
    )
    assert err.value.__cause__ is None and err.value.__suppress_context__
    with pytest.raises(VerificationError) as err:
        check._identify("tcp://s:1", 0.0, FIXES, None)
    assert err.value.problem.startswith("no Dask scheduler answered at tcp://s:1 within 0 s (0 attempt(s)): refused")


def test_each_stage_fails_with_its_own_fix(cluster: LocalCluster, fake_lsdb: None) -> None:
    worker = next(iter(cluster.scheduler.workers))
    with pytest.raises(VerificationError) as err:
        verify_catalog_query(worker, query(), where=WHERE)
    assert err.value.problem.endswith("answered as a Dask Worker, not as the scheduler")
    assert err.value.fix == Fixes(WHERE, "/data/x")("connect")
    with pytest.raises(VerificationError) as err:
        verify_catalog_query(cluster.scheduler_address, query(catalogPath="/data/broken"), where=WHERE)
    assert err.value.stage == "compute" and "OSError: partition unreadable" in err.value.problem
    assert err.value.fix == Fixes(WHERE, "/data/broken")("compute")


def test_a_stuck_pod_found_while_waiting_for_workers_fails_that_stage(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(check, "WORKER_WAIT_STEP_SECONDS", 0.2)

    def stuck() -> None:
        raise VerificationError("connect", "pod w-1 cannot pull its image", "check the image")

    with pytest.raises(VerificationError) as err:
        verify_catalog_query(cluster.scheduler_address, query(minWorkers=3), wait_hook=stuck,
                             stage_timeouts={"workers": 10})  # fmt: skip
    assert (err.value.stage, err.value.problem, err.value.fix) == (
        "workers", "pod w-1 cannot pull its image", "check the image",
    )  # fmt: skip


def test_a_worker_lost_during_the_query_is_a_warning(fake_lsdb: None) -> None:
    with LocalCluster(
        processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None, protocol="tcp"
    ) as shrinking:  # fmt: skip

        def one_leaves() -> None:
            shrinking.scale(1)
            deadline = time.monotonic() + 10
            while len(shrinking.scheduler.workers) > 1 and time.monotonic() < deadline:
                time.sleep(0.05)

        BEFORE_COMPUTE.append(one_leaves)
        result = verify_catalog_query(shrinking.scheduler_address, query(minWorkers=2))
    assert (result.rows, result.workers) == (6, 2)
    assert result.warnings == [
        "1 worker(s) left the cluster during the query; the scheduler re-ran their tasks on the remaining workers and"
        " the result is complete"
    ]


def test_counting_the_rows_needs_no_time_left(cluster: LocalCluster, fake_lsdb: None) -> None:
    """A query that finished just in time is not failed afterwards by the overall timeout."""
    started = time.monotonic()
    BEFORE_COMPUTE.append(lambda: time.sleep(max(started + 2.1 - time.monotonic(), 0)))
    result = verify_catalog_query(cluster.scheduler_address, query(timeoutSeconds=2))
    assert result.rows == 6 and result.elapsed_seconds > 2


def test_connect_probes_then_registers_with_what_is_left(monkeypatch: pytest.MonkeyPatch) -> None:
    import distributed

    probes: list[tuple[str, Any]] = []
    clients: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def scheduler(address: str, seconds: float, security: Any = None) -> Any:
        probes.append((address, security))
        time.sleep(0.3)
        return {"type": "Scheduler"}

    monkeypatch.setattr(check, "_probe_scheduler", scheduler)
    monkeypatch.setattr(distributed, "Client", lambda *args, **kwargs: clients.append((args, kwargs)) or "client")
    assert check._connect("tls://s:1", 3.0, FIXES, None, "the security") == "client"
    ((args, kwargs),) = clients
    assert probes == [("tls://s:1", "the security")] and args == ("tls://s:1",)
    assert 2.4 < kwargs.pop("timeout") <= 2.7  # the probe's time came off the budget
    assert kwargs == {"set_as_default": False, "direct_to_workers": False, "security": "the security"}
    check._connect("tcp://s:1", 0.6, FIXES)
    assert clients[1][1] == {"timeout": 1.0, "set_as_default": False, "direct_to_workers": False}  # at least 1 s

    def fails(*args: Any, **kwargs: Any) -> Any:
        raise TimeoutError

    monkeypatch.setattr(distributed, "Client", fails)
    with pytest.raises(VerificationError) as err:
        check._connect("tcp://s:1", 3.0, FIXES)
    assert err.value.problem.startswith("the Dask client could not register with tcp://s:1 within 2.")
    assert err.value.fix == FIXES("connect")


def test_connect_waits_with_the_hook_and_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []

    def refused(address: str, seconds: float, security: Any = None) -> Any:
        seen.append(security)
        raise ConnectionRefusedError("refused")

    monkeypatch.setattr(check, "_probe_scheduler", refused)
    hooks: list[int] = []
    with pytest.raises(VerificationError) as err:
        check._connect("tcp://s:1", 0.3, FIXES, lambda: hooks.append(1), "the security")
    assert seen and set(seen) == {"the security"} and len(hooks) == len(seen)
    assert err.value.stage == "connect" and err.value.fix == FIXES("connect")


def test_a_client_that_fails_to_close_does_not_fail_the_check(
    cluster: LocalCluster, fake_lsdb: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import distributed

    close = distributed.Client.close

    def closing_fails(self: Any, timeout: Any = None) -> None:
        close(self, timeout=timeout)
        raise OSError("the scheduler went away")

    monkeypatch.setattr(distributed.Client, "close", closing_fails)
    assert verify_catalog_query(cluster.scheduler_address, query()).rows == 6


def test_a_peer_that_answers_no_identity_is_of_unknown_type(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(check, "_probe_scheduler", lambda address, seconds, security=None: "not an identity")
    with pytest.raises(VerificationError) as err:
        check._connect("tcp://s:1", 1.0, FIXES)
    assert err.value.problem == "tcp://s:1 answered as a Dask peer of unknown type, not as the scheduler"


def test_an_address_is_plain_tcp_unless_told() -> None:
    assert _normalize_address("s") == "tcp://s:8786"


def test_the_clock_knows_every_stage_and_fails_only_when_nothing_is_left() -> None:
    assert 99.0 < _Clock(100.0, None).budget("rows") <= 100.0  # a stage without a ceiling of its own
    assert 0.0 < _Clock(0.5, None).budget("connect") <= 0.5  # less than a second left is still time
    late = _Clock(0.0, None)
    late.seconds = {"connect": 0.5, "workers": 0.25}
    with pytest.raises(VerificationError) as err:
        late.budget("versions")
    assert "(connect 0.5 s, workers 0.25 s)" in err.value.problem


def test_the_probe_uses_the_clients_tls_settings(cluster: LocalCluster) -> None:
    asked: list[str] = []

    class Security:
        def __init__(self, args: dict[str, Any]) -> None:
            self.args = args

        def get_connection_args(self, role: str) -> dict[str, Any]:
            asked.append(role)
            return self.args

    assert check._probe_scheduler(cluster.scheduler_address, 5.0, Security({}))["type"] == "Scheduler"
    assert asked == ["client"]
    with pytest.raises(RuntimeError, match="encryption required"):  # the settings reach the connection
        check._probe_scheduler(cluster.scheduler_address, 5.0, Security({"require_encryption": True}))


def test_the_probe_gives_up_on_a_silent_peer_in_time() -> None:
    from tests.support.dask_processes import silent_listener

    with silent_listener() as address:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            check._probe_scheduler(address, 0.3)
    assert time.monotonic() - started < 3


def test_a_client_that_cannot_connect_names_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import distributed

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise OSError("handshake failed")

    monkeypatch.setattr(check, "_probe_scheduler", lambda address, seconds, security=None: {"type": "Scheduler"})
    monkeypatch.setattr(distributed, "Client", refused)
    with pytest.raises(VerificationError) as err:
        check._connect("tcp://s:1", 3.0, FIXES)
    assert err.value.problem == "the Dask client could not connect to tcp://s:1: OSError: handshake failed"
