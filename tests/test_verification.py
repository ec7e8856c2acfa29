"""The post-deploy verification against real Dask processes and a real HATS catalog written by lsdb.

One scheduler and two workers (separate `dask scheduler` / `dask worker` processes) are shared by the module.
The workers run in a directory the test process does not use, and the catalog is queried by a path relative to
it: the path is meaningful to the workers only, as /data/... is inside worker pods, so these tests fail if the
client ever tried to open the catalog itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from components.lock import PROJECT_DIR, read_lock
from components.verification.check import OPEN_TASK_PREFIX, VerificationError, verify_catalog_query
from components.verification.kube import SchedulerPortForward
from components.verification.query import OUTPUT_KEYS, ClusterRef, VerificationQuery
from scripts.sample_catalog import sample_dataframe, write_sample_catalog
from tests.support.dask_processes import block_first_task_preload, silent_listener
from tools.local_dask import LocalDaskCluster, free_port

N_ROWS = 20_000
SEED = 7
CATALOG_DIR = "catalog"  # relative: resolves only in the workers' working directory
COLUMNS = ["id", "ra", "dec", "phot_g_mean_mag"]
CONE = {"ra": 180.0, "dec": 0.0, "radius_arcsec": 3600.0}  # the dense field: a few hundred rows
EMPTY_CONE = {"ra": 90.0, "dec": 45.0, "radius_arcsec": 1.0}
DEADLINE = 0.5  # seconds, for the stages that must give up (each such test waits it out: kept short)
SLACK = 4.0  # scheduling noise on a loaded 2-core machine


@dataclass
class SampleCatalog:
    worker_view: Path  # the workers' working directory
    absolute: Path
    rows_in_cone: int
    partitions_in_cone: int
    rows_in_empty_cone: int


def rows_within(df: Any, ra: float, dec: float, radius_arcsec: float) -> int:
    """Rows of `df` within the cone, by great-circle distance (independent of lsdb)."""
    import numpy as np

    ra1, dec1 = np.radians(df["ra"].to_numpy()), np.radians(df["dec"].to_numpy())
    ra0, dec0 = np.radians(ra), np.radians(dec)
    cos_d = np.sin(dec1) * np.sin(dec0) + np.cos(dec1) * np.cos(dec0) * np.cos(ra1 - ra0)
    dist_arcsec = np.degrees(np.arccos(np.clip(cos_d, -1.0, 1.0))) * 3600.0
    return int((dist_arcsec <= radius_arcsec).sum())


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> SampleCatalog:
    import dask
    import lsdb

    worker_view = tmp_path_factory.mktemp("worker-view")
    path = write_sample_catalog(worker_view / CATALOG_DIR, N_ROWS, seed=SEED)
    df = sample_dataframe(N_ROWS, SEED)
    with dask.config.set(scheduler="synchronous"):
        local = lsdb.open_catalog(path, search_filter=lsdb.ConeSearch(**CONE), columns=COLUMNS)
        local_rows = len(local.compute(progress_bar=False))
    expected = rows_within(df, **CONE)
    assert local_rows == expected, "lsdb and the great-circle count disagree on the test cone"
    assert expected > 100, "the test cone should hold a few hundred rows"
    return SampleCatalog(worker_view, path, expected, local.npartitions, rows_within(df, **EMPTY_CONE))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, catalog: SampleCatalog) -> Any:
    with LocalDaskCluster(
        tmp_path_factory.mktemp("dask"), n_workers=2, worker_cwd=catalog.worker_view, dashboard=True
    ) as c:
        yield c


@pytest.fixture(scope="module")
def lonely_scheduler(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with LocalDaskCluster(tmp_path_factory.mktemp("dask-no-workers"), n_workers=0) as c:
        yield c


WHERE = ClusterRef(namespace="lsdb-test", cluster_name="lsdb-cluster")


def verify(address: str, **overrides: Any) -> Any:
    """The test cone on the test catalog; `overrides` are VerificationQuery fields (the cone's flat), or
    `locked_versions` and `stage_timeouts`."""
    locked = overrides.pop("locked_versions", None)
    stage_timeouts = overrides.pop("stage_timeouts", None)
    cone = {**CONE, **{k: overrides.pop(k) for k in CONE if k in overrides}}
    fields: dict[str, Any] = {
        "catalog_path": CATALOG_DIR,
        "cone": cone,
        "columns": COLUMNS,
        "min_rows": 1,
        "min_workers": 2,
        "timeout_seconds": 90.0,
        **overrides,
    }
    return verify_catalog_query(
        address, VerificationQuery(**fields), where=WHERE, locked_versions=locked, stage_timeouts=stage_timeouts
    )


def failure(address: str, **overrides: Any) -> tuple[VerificationError, float]:
    started = time.monotonic()
    with pytest.raises(VerificationError) as info:
        verify(address, **overrides)
    return info.value, time.monotonic() - started


# ---------------------------------------------------------------------------------------------------------------
# Success
# ---------------------------------------------------------------------------------------------------------------


def test_cone_query_runs_on_the_cluster(cluster: LocalDaskCluster, catalog: SampleCatalog) -> None:
    assert not Path(CATALOG_DIR).exists(), "the catalog path must not resolve from the test process"
    result = verify(cluster.address)

    assert result.rows == catalog.rows_in_cone
    assert result.partitions == catalog.partitions_in_cone
    assert result.workers == 2
    assert result.scheduler == cluster.address
    assert result.versions["lsdb"] == read_lock()["lsdb"]
    assert result.versions["nested-pandas"] == read_lock()["nested-pandas"]
    assert result.versions["python"] == ".".join(map(str, sys.version_info[:3]))
    assert list(result.stage_seconds) == ["connect", "workers", "versions", "open", "compute", "rows"]
    assert 0 < result.elapsed_seconds < 90
    assert result.warnings == []
    # The sample: real rows of the cone, with the requested columns, as plain JSON.
    assert 1 <= len(result.sample) <= 5
    assert set(result.sample[0]) == set(COLUMNS)
    for row in result.sample:
        assert rows_within(_frame([row]), **CONE) == 1
    assert json.loads(result.model_dump_json()) == result.model_dump()
    assert set(result.to_outputs()) >= {"rows", "partitions", "workers", "elapsedSeconds", "versions", "sample"}


def _frame(records: list[dict[str, Any]]) -> Any:
    import pandas as pd

    return pd.DataFrame.from_records(records)


def test_the_catalog_is_opened_on_a_worker(cluster: LocalDaskCluster, catalog: SampleCatalog) -> None:
    """The same relative path opened by the client itself does not exist: only the workers can see it."""
    import dask
    import lsdb

    with pytest.raises(FileNotFoundError):
        lsdb.open_catalog(CATALOG_DIR)
    # Even with a process-wide synchronous scheduler configured, the query runs on the cluster's workers.
    with dask.config.set(scheduler="synchronous"):
        result = verify(cluster.address, min_workers=1, sample_rows=0)
    assert result.rows == catalog.rows_in_cone
    assert result.sample == []


# ---------------------------------------------------------------------------------------------------------------
# Failures: each names its stage, gives the fix, and happens within its deadline
# ---------------------------------------------------------------------------------------------------------------


def test_unreachable_scheduler_fails_at_connect_within_its_deadline() -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    err, elapsed = failure(address, stage_timeouts={"connect": DEADLINE})
    assert err.stage == "connect"
    assert address in err.problem
    assert elapsed < DEADLINE + SLACK
    assert "kubectl get pods -n lsdb-test -l dask.org/cluster-name=lsdb-cluster,dask.org/component=scheduler" in err.fix
    assert "kubectl get svc lsdb-cluster-scheduler -n lsdb-test" in err.fix
    assert "lsdb-cluster-scheduler.lsdb-test.svc.cluster.local" in err.fix
    assert str(err).startswith("LSDB verification failed at stage 'connect':")


def test_silent_tcp_peer_fails_at_connect_within_its_deadline() -> None:
    with silent_listener() as address:
        err, elapsed = failure(address, stage_timeouts={"connect": DEADLINE})
    assert err.stage == "connect"
    assert "does not speak the Dask protocol" in err.problem
    assert elapsed < DEADLINE + SLACK


def test_overall_timeout_bounds_the_connect_stage() -> None:
    """No per-stage ceiling given: the overall timeout alone must stop a silent peer."""
    with silent_listener() as address:
        err, elapsed = failure(address, timeout_seconds=DEADLINE)
    assert err.stage == "connect"
    assert elapsed < DEADLINE + SLACK


def test_dashboard_port_is_not_a_scheduler(cluster: LocalDaskCluster) -> None:
    assert cluster.dashboard_address, "the shared scheduler runs a dashboard"
    err, elapsed = failure(cluster.dashboard_address, stage_timeouts={"connect": DEADLINE})
    assert err.stage == "connect"
    assert elapsed < DEADLINE + SLACK
    assert "8787 is the dashboard" in err.fix


def test_a_worker_address_is_not_a_scheduler(cluster: LocalDaskCluster) -> None:
    from distributed import Client

    with Client(cluster.address, set_as_default=False) as client:
        worker = next(iter(client.nthreads()))
    err, _ = failure(worker, stage_timeouts={"connect": DEADLINE})
    assert err.stage == "connect"
    assert "answered as a Dask Worker, not as the scheduler" in err.problem


def test_no_workers_fails_at_workers_within_its_deadline(lonely_scheduler: LocalDaskCluster) -> None:
    err, elapsed = failure(lonely_scheduler.address, min_workers=1, stage_timeouts={"workers": DEADLINE})
    assert err.stage == "workers"
    assert "0 worker(s) joined" in err.problem
    assert "min_workers=1" in err.problem
    assert elapsed < DEADLINE + SLACK
    assert "kubectl get pods -n lsdb-test -l dask.org/cluster-name=lsdb-cluster,dask.org/component=worker" in err.fix
    assert "PVC is Bound (`kubectl get pvc -n lsdb-test`)" in err.fix
    assert "OOMKilled" in err.fix


def test_too_few_workers_names_the_count(cluster: LocalDaskCluster) -> None:
    err, _ = failure(cluster.address, min_workers=3, stage_timeouts={"workers": DEADLINE})
    assert err.stage == "workers"
    assert "2 worker(s) joined" in err.problem


def test_version_mismatch_with_the_lock_fails_at_versions(cluster: LocalDaskCluster) -> None:
    locked = {**read_lock(), "lsdb": "0.0.1"}
    err, _ = failure(cluster.address, locked_versions=locked)
    assert err.stage == "versions"
    assert "lsdb: docker/requirements.lock pins 0.0.1" in err.problem
    assert "client, scheduler and 2 of 2 workers" in err.problem
    assert read_lock()["lsdb"] in err.problem
    assert "digest-pinned image built from docker/requirements.lock" in err.fix


def test_missing_catalog_fails_at_open(cluster: LocalDaskCluster) -> None:
    err, _ = failure(cluster.address, catalog_path="no-such-catalog")
    assert err.stage == "open"
    assert "no-such-catalog" in err.problem
    assert "mountPath" in err.fix
    assert "kubectl get pvc -n lsdb-test" in err.fix


def test_unknown_column_fails_at_open(cluster: LocalDaskCluster) -> None:
    err, _ = failure(cluster.address, columns=["id", "no_such_column"])
    assert err.stage == "open"
    assert "no_such_column" in err.problem


def test_empty_cone_fails_at_rows(cluster: LocalDaskCluster, catalog: SampleCatalog) -> None:
    assert catalog.rows_in_empty_cone == 0
    err, _ = failure(cluster.address, **EMPTY_CONE, min_rows=1)
    assert err.stage == "rows"
    assert "returned 0 row(s), fewer than min_rows=1" in err.problem
    assert "ra=90 dec=45" in err.problem
    assert "check verify.cone ra/dec" in err.fix
    # The same cone passes when no rows are required.
    assert verify(cluster.address, **EMPTY_CONE, min_rows=0).rows == 0


def test_too_few_rows_fails_at_rows(cluster: LocalDaskCluster, catalog: SampleCatalog) -> None:
    err, _ = failure(cluster.address, min_rows=catalog.rows_in_cone + 1)
    assert err.stage == "rows"
    assert f"returned {catalog.rows_in_cone} row(s)" in err.problem


def test_invalid_query_fails_at_config_before_connecting() -> None:
    """The model rejects the query where it is built; the command line reports that as stage `config`, every
    problem at once, before connecting."""
    with pytest.raises(ValidationError) as info:
        verify("tcp://127.0.0.1:1", dec=95.0, radius_arcsec=-1.0)
    assert [e["loc"] for e in info.value.errors()] == [("cone", "dec"), ("cone", "radius_arcsec")]
    with silent_listener() as address:
        started = time.monotonic()
        proc = cli("--scheduler", address, "--catalog", CATALOG_DIR, *cone_args(dec=95.0, radius_arcsec=-1.0), "--json")
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert report["stage"] == "config"
    assert "dec=95.0" in report["problem"] and "radius_arcsec=-1.0" in report["problem"]
    assert time.monotonic() - started < 15.0  # the child's imports; a connect attempt would take the whole budget


# ---------------------------------------------------------------------------------------------------------------
# A worker dies mid-query
# ---------------------------------------------------------------------------------------------------------------


def test_a_hung_query_fails_at_compute_within_its_deadline(tmp_path: Path, catalog: SampleCatalog) -> None:
    """distributed's `Future.result(timeout=)` bounds the compute stage: a worker that never finishes its task
    (a preload blocks it) fails stage `compute` at the stage's deadline. One worker: the one that blocks."""
    env = {"DASK_TEST_BLOCK_MARKER": str(tmp_path / "blocked"), "DASK_TEST_BLOCK_SKIP": OPEN_TASK_PREFIX}
    with LocalDaskCluster(
        tmp_path / "dask",
        n_workers=1,
        worker_cwd=catalog.worker_view,
        worker_env=env,
        worker_preload=[block_first_task_preload(tmp_path)],
    ) as cluster:
        err, elapsed = failure(cluster.address, min_workers=1, stage_timeouts={"compute": DEADLINE})
    assert (tmp_path / "blocked").exists(), "the worker blocked a query task"
    assert err.stage == "compute"
    assert f"did not finish on the cluster within {DEADLINE:g} s" in err.problem
    assert elapsed < 60.0  # the stages before take seconds; the blocked task would hold the query for 300 s


def test_worker_killed_during_the_query_recovers(tmp_path: Path, catalog: SampleCatalog) -> None:
    """Decision: the query recovers. Dask re-runs the lost worker's tasks on the survivors (up to
    distributed.scheduler.allowed-failures times per task), which is what a user's own query would do; the
    verification reports the loss as a warning. Deterministic: a preload makes the first query task block its
    worker, and the test SIGKILLs exactly that worker while it holds the task.
    """
    marker = tmp_path / "blocked"
    env = {"DASK_TEST_BLOCK_MARKER": str(marker), "DASK_TEST_BLOCK_SKIP": OPEN_TASK_PREFIX}
    with LocalDaskCluster(
        tmp_path / "dask",
        n_workers=2,
        worker_cwd=catalog.worker_view,
        worker_env=env,
        worker_preload=[block_first_task_preload(tmp_path)],
    ) as cluster:
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["result"] = verify(cluster.address, timeout_seconds=120.0)
            except BaseException as exc:
                outcome["error"] = exc

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while not marker.exists() and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), f"no worker started a query task: {outcome}"
        pid_text, task = marker.read_text().split(" ", 1)
        victim = cluster.by_pid(int(pid_text))
        assert not task.startswith(OPEN_TASK_PREFIX)
        victim.kill()
        thread.join(90)
        assert not thread.is_alive()
        assert "error" not in outcome, outcome.get("error")
        result = outcome["result"]
        assert not victim.alive()
        assert result.rows == catalog.rows_in_cone
        assert result.workers == 2
        assert any("1 worker(s) left the cluster during the query" in w for w in result.warnings)


# ---------------------------------------------------------------------------------------------------------------
# Port-forward
# ---------------------------------------------------------------------------------------------------------------


class _FakeService:
    """What the kr8s Service gives SchedulerPortForward: ports, and a port-forward (here a local TCP proxy)."""

    def __init__(self, target: str) -> None:
        host, port = target.removeprefix("tcp://").rsplit(":", 1)
        self.target = (host, int(port))
        self.spec = type(
            "Spec", (), {"ports": [{"name": "http-dashboard", "port": 8787}, {"name": "tcp-comm", "port": 8786}]}
        )
        self.forwarded: list[tuple[int, Any]] = []
        self.closed = False

    def portforward(self, remote_port: int, local_port: Any = "auto") -> Any:
        self.forwarded.append((remote_port, local_port))
        return self._proxy()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def _proxy(self) -> Any:
        service = self

        class Proxy:
            async def __aenter__(self) -> int:
                async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                    up_reader, up_writer = await asyncio.open_connection(*service.target)
                    await asyncio.gather(service._pipe(reader, up_writer), service._pipe(up_reader, writer))

                self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
                return self.server.sockets[0].getsockname()[1]

            async def __aexit__(self, *exc: object) -> None:
                self.server.close()
                service.closed = True

        return Proxy()


def test_port_forward_runs_the_check_through_the_forward(cluster: LocalDaskCluster, catalog: SampleCatalog) -> None:
    service = _FakeService(cluster.address)
    asked: list[tuple[str, str, str | None]] = []

    async def getter(name: str, namespace: str, context: str | None) -> _FakeService:
        asked.append((name, namespace, context))
        return service

    with SchedulerPortForward(ClusterRef("lsdb-test", "lsdb-cluster", "kind-dev"), service_getter=getter) as address:
        assert address.startswith("tcp://127.0.0.1:") and address != cluster.address
        result = verify(address, min_workers=1)
    assert result.rows == catalog.rows_in_cone
    assert asked == [("lsdb-cluster-scheduler", "lsdb-test", "kind-dev")]
    assert service.forwarded == [(8786, "auto")]
    assert service.closed, "the port-forward must be closed after the check"


def test_port_forward_without_kubeconfig_fails_at_connect(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    started = time.monotonic()
    forward = SchedulerPortForward(ClusterRef("lsdb-test", "lsdb-cluster", "kind-dev"), timeout=1.0)
    with pytest.raises(VerificationError) as info, forward:
        pass
    assert info.value.stage == "connect"
    assert "could not port-forward to service lsdb-cluster-scheduler in namespace lsdb-test" in info.value.problem
    assert "`kubectl --context kind-dev get svc lsdb-cluster-scheduler -n lsdb-test`" in info.value.fix
    assert time.monotonic() - started < 1.0 + SLACK


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "components.verification", *args],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def cone_args(**cone: float) -> list[str]:
    cone = {**CONE, **cone}
    return ["--ra", str(cone["ra"]), "--dec", str(cone["dec"]), "--radius-arcsec", str(cone["radius_arcsec"])]


def test_cli_json_success(cluster: LocalDaskCluster, catalog: SampleCatalog) -> None:
    proc = cli("--scheduler", cluster.address, "--catalog", CATALOG_DIR, *cone_args(), "--columns", "id,ra,dec",
               "--min-workers", "2", "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is True
    assert report["rows"] == catalog.rows_in_cone
    assert report["workers"] == 2
    assert set(report["sample"][0]) == {"id", "ra", "dec"}


def test_cli_human_success_shows_the_sample(cluster: LocalDaskCluster, catalog: SampleCatalog) -> None:
    proc = cli("--scheduler", cluster.address, "--catalog", CATALOG_DIR, *cone_args(), "--columns", "id,ra,dec")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("LSDB verification passed in")
    assert f"{CATALOG_DIR}: {catalog.rows_in_cone} row(s)" in proc.stdout
    assert "first 5 row(s):" in proc.stdout
    header = proc.stdout.split("first 5 row(s):\n", 1)[1].splitlines()[0].split()
    assert header == ["id", "ra", "dec"]


def test_cli_failure_exits_1_with_the_stage() -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    args = ["--scheduler", address, "--catalog", CATALOG_DIR, *cone_args(), "--timeout", "0.3"]
    names = ["--namespace", "lsdb-test", "--cluster-name", "lsdb-cluster"]

    proc = cli(*args, *names, "--json")
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert report["ok"] is False and report["stage"] == "connect"
    assert address in report["problem"]
    assert "kubectl get svc lsdb-cluster-scheduler -n lsdb-test" in report["fix"]
    assert (
        report["message"] == f"LSDB verification failed at stage 'connect': {report['problem']}\nFix: {report['fix']}"
    )

    proc = cli(*args)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.startswith("LSDB verification failed at stage 'connect'")
    assert "\nFix: verify the scheduler pod is running" in proc.stderr
    assert "kubectl get svc <cluster>-scheduler -n <namespace>" in proc.stderr  # names unknown: placeholders


def test_the_cli_silences_distributed_once_it_is_loaded() -> None:
    # distributed sets its loggers' levels when first imported; the check imports it after the CLI set the level
    # (the config stage fails here, before any import: the import afterwards stands for the check's).
    code = (
        "import logging, distributed.comm.core; from components.verification.cli import main; "
        "main(['--scheduler', 'tcp://127.0.0.1:1', '--catalog', '/x', '--ra', '0', '--dec', '95', "
        "'--radius-arcsec', '1']); import distributed; print(logging.getLogger('distributed').level)"
    )
    fresh = [sys.executable, "-c", code.replace("import logging, distributed.comm.core;", "import logging;")]
    for command in (fresh, [sys.executable, "-c", code]):
        proc = subprocess.run(command, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and proc.stdout.strip() == "50", proc.stderr  # logging.CRITICAL
        assert proc.stderr.startswith("LSDB verification failed at stage 'config'")


def test_cli_usage_errors_exit_2() -> None:
    proc = cli("--catalog", CATALOG_DIR, *cone_args())
    assert proc.returncode == 2
    assert "exactly one of --scheduler ADDR or --port-forward" in proc.stderr


# ---------------------------------------------------------------------------------------------------------------
# The dynamic provider, deserialized in a fresh process outside the project
# ---------------------------------------------------------------------------------------------------------------

HEAVY = ("lsdb", "hats", "nested_pandas", "dask", "distributed", "pandas", "pyarrow", "kr8s")

# The dynamic-provider process, as Pulumi runs it: unpickle `__provider` (base64 + dill.loads), then call it, once
# per set of properties (one process serves several resources' calls, as the engine's provider process does).
RUN_PROVIDER = """
import base64, json, sys
import dill
raw = base64.b64decode(open(sys.argv[1]).read())
provider = dill.loads(raw)
import components
out = {"class": f"{type(provider).__module__}.{type(provider).__qualname__}", "components": components.__file__}
out["runs"] = []
for props in json.loads(sys.argv[2]):
    run = {"check_failures": [[f.property, f.reason] for f in provider.check({}, props).failures]}
    run["diff_same"] = provider.diff("id", props, props).changes
    run["diff_cone"] = provider.diff("id", props, {**props, "radiusArcsec": props["radiusArcsec"] * 2}).changes
    try:
        result = provider.create(props)
    except Exception as exc:
        run["error"] = str(exc)
    else:
        run.update(id=result.id, outs=result.outs)
    out["runs"].append(run)
out["heavy"] = sorted(m for m in sys.modules if m.split(".")[0] in sys.argv[3].split(","))
print(json.dumps(out))
"""


def provider_python(tmp_path: Path, env: dict[str, str]) -> str:
    """An interpreter like the dynamic provider's: the project's virtualenv, with THIS checkout installed.

    `make venv` installs the project editable, so `sys.executable` imports `components` from this checkout in
    any directory, and that is what we use. When the virtualenv's editable install points at another checkout
    (a git worktree sharing the virtualenv), a throwaway virtualenv stands in: the same dependencies (a .pth to
    the shared site-packages) and this checkout on the path, as `pip install -e .` would put it.
    """
    where = subprocess.run(
        [sys.executable, "-c", "import components; print(components.__file__)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if where.returncode == 0 and Path(where.stdout.strip()).resolve().parent.parent == PROJECT_DIR:
        return sys.executable
    import site
    import venv

    stand_in = tmp_path / "provider-venv"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(stand_in)
    (site_packages,) = stand_in.glob("lib/python*/site-packages")
    (site_packages / "shared-dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    (site_packages / "lsdb-k8s-editable.pth").write_text(f"{PROJECT_DIR}\n")
    return str(stand_in / "bin" / "python")


def run_serialized_provider(tmp_path: Path, props: list[dict[str, Any]]) -> dict[str, Any]:
    """Serialize the provider as Pulumi does, and run it in a fresh process outside the project, once per item of
    `props` (`runs`, in order)."""
    from pulumi.dynamic.dynamic import serialize_provider

    from components.verification.resource import new_provider

    blob = tmp_path / "provider.b64"
    blob.write_text(serialize_provider(new_provider()))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    python = provider_python(elsewhere, env)
    proc = subprocess.run(
        [python, "-c", RUN_PROVIDER, str(blob), json.dumps(props), ",".join(HEAVY)],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    report: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(report["components"]).resolve().parent.parent == PROJECT_DIR, report["components"]
    assert len(report["runs"]) == len(props)
    return report


def provider_props(address: str, **overrides: Any) -> dict[str, Any]:
    # As the engine hands them over: every number a float.
    props = {
        "connect": "direct",
        "schedulerAddress": address,
        "namespace": "lsdb-test",
        "clusterName": "lsdb-cluster",
        "kubeContext": None,
        "catalogPath": CATALOG_DIR,
        "ra": CONE["ra"],
        "dec": CONE["dec"],
        "radiusArcsec": CONE["radius_arcsec"],
        "columns": ["id", "ra", "dec"],
        "minRows": 1.0,
        "minWorkers": 2.0,
        "timeoutSeconds": 90.0,
        "imageRef": "registry.example/lsdb@sha256:abc",
        "clusterSpecHash": "hash-1",
        "rows": None,
        "sample": None,
    }
    props.update(overrides)
    return props


@pytest.fixture(scope="module")
def provider_process(tmp_path_factory: pytest.TempPathFactory, cluster: LocalDaskCluster) -> dict[str, Any]:
    """One fresh provider process for the module's two creates: the round trip's, then the missing catalog's."""
    return run_serialized_provider(
        tmp_path_factory.mktemp("provider"),
        [provider_props(cluster.address), provider_props(cluster.address, catalogPath="no-such-catalog")],
    )


def test_serialized_provider_round_trip_in_a_fresh_process(
    provider_process: dict[str, Any], catalog: SampleCatalog
) -> None:
    """check, diff and create of the provider as the dynamic-provider process gets it: exact rows, light process."""
    report, run = provider_process, provider_process["runs"][0]
    assert report["class"] == "components.verification.resource.LsdbVerificationProvider"
    assert run["check_failures"] == []
    assert run["diff_same"] is False and run["diff_cone"] is True
    assert "error" not in run, run.get("error")
    outs = run["outs"]
    assert run["id"].startswith("lsdb-verification-")
    assert outs["rows"] == catalog.rows_in_cone and isinstance(outs["rows"], int)
    assert outs["workers"] == 2 and isinstance(outs["workers"], int)
    assert outs["partitions"] == catalog.partitions_in_cone
    assert outs["elapsedSeconds"] > 0
    assert outs["versions"]["lsdb"] == read_lock()["lsdb"]  # compared with the lock the child read
    assert set(outs["sample"][0]) == {"id", "ra", "dec"}
    assert set(OUTPUT_KEYS) <= set(outs)
    # The inputs are kept in the outputs: diff compares them on the next `pulumi up`.
    assert outs["clusterSpecHash"] == "hash-1" and outs["catalogPath"] == CATALOG_DIR
    # The check ran in the provider's child: the engine-facing process never imported lsdb or dask.
    assert report["heavy"] == []


def test_serialized_provider_fails_with_the_stage_message(provider_process: dict[str, Any]) -> None:
    report = provider_process["runs"][1]
    assert report["error"].startswith("LSDB verification failed at stage 'open'")
    assert "no-such-catalog" in report["error"]
    assert "mountPath" in report["error"]


def test_serialized_provider_is_a_small_reference_without_source() -> None:
    """By reference: the pickle names the class; no module source, no lock, no function bodies."""
    import base64

    from pulumi.dynamic.dynamic import serialize_provider

    from components.verification.resource import new_provider

    raw = base64.b64decode(serialize_provider(new_provider()))
    assert len(raw) < 1024, len(raw)
    assert b"components.verification.resource" in raw and b"LsdbVerificationProvider" in raw
    assert b"def verify_catalog_query" not in raw and b"def " not in raw
    assert read_lock()["lsdb"].encode() not in raw


def test_an_exhausted_overall_timeout_names_the_timeout_not_the_stage_fix() -> None:
    from components.verification.check import _Clock

    clock = _Clock(0.5, None)
    with clock.stage("connect"):
        time.sleep(0.6)
    with pytest.raises(VerificationError) as failure, clock.stage("open"):
        pass
    assert failure.value.stage == "open" and "ran out before this stage started (connect 0.6" in failure.value.problem
    assert failure.value.fix.startswith("raise verify.timeoutSeconds")
    # Counting rows needs no time: a query that finished just in time is not failed afterwards.
    with clock.stage("rows", needs_time=False) as left:
        assert left == 0.0
