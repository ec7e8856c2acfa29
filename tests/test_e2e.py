"""End to end without a cluster: the dev stack's rendered DaskCluster, run as the operator and kubelet would run it.

tools/render.py renders what `pulumi up` would create for the dev stack; `tools/pod_emulator.py`
derives the operator's Deployments and Service from the rendered DaskCluster with the pinned dask-kubernetes
builders and runs each container as a local process (ports, Service names and volume paths mapped, see there).
On that cluster the verification dynamic provider's `create` (the code `pulumi up` runs) must find exactly the
rows a direct computation finds in the sample catalog. The guide's own manifest is the negative control.

One emulated cluster is shared by the module (scheduler + 2 workers); run alone with `pytest -m e2e`.
"""

from __future__ import annotations

import copy
import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.lock import PROJECT_DIR
from tools.emulated_image import expand, resolve_executable
from tools.operator_objects import operator_objects
from tools.pod_emulator import EmulatedCluster, EmulationError
from tools.render import load_live_objects

pytestmark = pytest.mark.e2e

STACK = "dev"
N_ROWS = 50_000  # the sample's dense field at ra=180, dec=0 puts ~1,000 of them in the dev stack's cone
SEED = 42
GUIDE_FIXTURE = Path(__file__).parent / "fixtures" / "guide_daskcluster.yaml"
VERIFICATION_TYPE = "pulumi-python:dynamic/lsdb:Verification"
ROUTES_ENV = "DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES"


# --- helpers -----------------------------------------------------------------------------------------------


def expected_rows(ra: float, dec: float, radius_arcsec: float) -> int:
    """Rows of the sample catalog inside the cone, from its generator (not through lsdb): haversine distance."""
    import numpy as np

    from scripts.sample_catalog import sample_dataframe

    df = sample_dataframe(N_ROWS, SEED)
    ra1, dec1 = np.radians(df["ra"].to_numpy()), np.radians(df["dec"].to_numpy())
    ra0, dec0 = np.radians(ra), np.radians(dec)
    hav = np.sin((dec1 - dec0) / 2) ** 2 + np.cos(dec1) * np.cos(dec0) * np.sin((ra1 - ra0) / 2) ** 2
    separation_deg = np.degrees(2 * np.arcsin(np.sqrt(np.clip(hav, 0, 1))))
    return int((separation_deg <= radius_arcsec / 3600.0).sum())


def verification_props(summary: dict[str, Any]) -> dict[str, Any]:
    """The LsdbVerification inputs `pulumi up` would hand the provider, as the render shows them."""
    found = [r for r in summary["resources"] if r["type"] == VERIFICATION_TYPE]
    assert len(found) == 1, f"the {STACK} stack must register one {VERIFICATION_TYPE}"
    return dict(found[0]["inputs"])


def direct_props(props: dict[str, Any], cluster: EmulatedCluster, exports: dict[str, Any]) -> dict[str, Any]:
    """`connect: direct` against the emulated Service, with the catalog path as the (local) workers see it."""
    in_cluster = props.get("schedulerAddress") or exports["schedulerAddress"]
    return {
        **props,
        "connect": "direct",
        "schedulerAddress": cluster.map_address(in_cluster),
        "catalogPath": cluster.map_path(props["catalogPath"]),
    }


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def dashboard_base(cluster: EmulatedCluster, exports: dict[str, Any]) -> str:
    url = cluster.map_address(exports["dashboardUrl"])  # http://<svc>.<ns>.svc.cluster.local:8787/status
    assert url.startswith("http://127.0.0.1:"), url
    return url.rsplit("/", 1)[0]


# --- fixtures ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The dev stack's render, the files `python -m tools.render` writes (rendered in this process: the CLI itself
    is tests/test_render.py's subject)."""
    from tools.render import render_stack, write_render

    out = tmp_path_factory.mktemp("render") / STACK
    write_render(render_stack(STACK), out)
    docs = load_live_objects(out)  # patches applied: the stable Service with its selector
    (daskcluster,) = [d for d in docs if d["kind"] == "DaskCluster"]
    services = [d for d in docs if d["kind"] == "Service"]  # the stable <cluster.name>-scheduler
    summary = yaml.safe_load((out / "summary.yaml").read_text())
    return {"dir": out, "daskcluster": daskcluster, "services": services, "summary": summary}


@pytest.fixture(scope="module")
def props(rendered: dict[str, Any]) -> dict[str, Any]:
    return verification_props(rendered["summary"])


@pytest.fixture(scope="module")
def block_marker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fault injector's marker: while it exists the injector is disarmed (see test_worker_killed_...)."""
    marker = tmp_path_factory.mktemp("fault") / "blocked"
    marker.write_text("disarmed")
    return marker


@pytest.fixture(scope="module")
def emulated(
    rendered: dict[str, Any],
    props: dict[str, Any],
    block_marker: Path,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> EmulatedCluster:
    """The dev cluster's pods as processes, with the sample catalog on the catalog PVC; stopped at module end."""
    from components.verification.check import OPEN_TASK_PREFIX
    from scripts.sample_catalog import write_sample_catalog
    from tests.support.dask_processes import block_first_task_preload

    root = tmp_path_factory.mktemp("emulated")
    claim = root / "pvc-hats-catalog"
    claim.mkdir()
    preload = block_first_task_preload(root)
    cluster = EmulatedCluster(
        rendered["daskcluster"],
        root / "cluster",
        claims={"hats-catalog-pvc": claim},
        services=rendered["services"],
        worker_env={
            "DASK_DISTRIBUTED__WORKER__PRELOAD": json.dumps([str(preload)]),
            "DASK_TEST_BLOCK_MARKER": str(block_marker),
            "DASK_TEST_BLOCK_SKIP": OPEN_TASK_PREFIX,
        },
    )
    request.addfinalizer(cluster.stop)  # even when a test (or the start below) fails
    # The catalog where the workers' volume mount puts the verification's catalogPath (/data/sample).
    write_sample_catalog(cluster.map_path(props["catalogPath"]), N_ROWS, seed=SEED)
    cluster.start(timeout=120)
    cluster.wait_for_workers(timeout=120)
    return cluster


# --- emulator rules (no processes) -------------------------------------------------------------------------


def test_kubernetes_variable_expansion_rules() -> None:
    env = {"A": "x", "EMPTY": ""}
    assert expand("$(A)", env) == "x"
    assert expand("--name=$(A)-$(A)", env) == "--name=x-x"
    assert expand("$(EMPTY)", env) == ""
    assert expand("$(UNDEFINED)", env) == "$(UNDEFINED)"  # undefined stays literal
    assert expand("$$(A)", env) == "$(A)"  # escaped
    assert expand("$$$(A)", env) == "$x"
    assert expand("a$$b", env) == "a$b"
    assert expand("$A $", env) == "$A $"  # not an expression
    assert expand("$(A", env) == "$(A"  # unclosed
    assert expand("$(A)$(", env) == "x$("


def test_operator_objects_from_the_rendered_cluster(rendered: dict[str, Any]) -> None:
    """The pinned operator's builders give a scheduler Deployment/Service and one Deployment per replica,
    with the scheduler address the program exports injected into every worker."""
    import kubernetes_validate

    daskcluster, exports = rendered["daskcluster"], rendered["summary"]["exports"]
    objects = operator_objects(daskcluster)
    name, ns = daskcluster["metadata"]["name"], daskcluster["metadata"]["namespace"]
    assert objects.scheduler_deployment["metadata"]["name"] == objects.scheduler_service["metadata"]["name"]
    assert objects.scheduler_service["metadata"]["name"] == f"{name}-scheduler"
    assert len(objects.worker_deployments) == daskcluster["spec"]["worker"]["replicas"] == 2
    for deployment in objects.worker_deployments:
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
        # Workers join their own cluster's Service; clients use the stable one, which selects the same scheduler.
        assert env["DASK_SCHEDULER_ADDRESS"] == f"tcp://{name}-scheduler.{ns}.svc.cluster.local:8786"
        assert exports["schedulerAddress"] == f"tcp://{name.rsplit('-', 1)[0]}-scheduler.{ns}.svc.cluster.local:8786"
        assert env["DASK_WORKER_NAME"] == deployment["metadata"]["name"]
        assert deployment["metadata"]["ownerReferences"][0]["kind"] == "DaskWorkerGroup"
        assert deployment["metadata"]["labels"]["dask.org/cluster-name"] == name
    selector = objects.scheduler_service["spec"]["selector"]
    pod_labels = objects.scheduler_deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items(), "the Service must select the scheduler pod"
    # What the operator would send to the API server is valid Kubernetes (strict: no unknown fields).
    for obj in [*objects.deployments, objects.scheduler_service]:
        obj = {**obj, "metadata": {**obj["metadata"], "namespace": ns}}
        kubernetes_validate.validate(obj, "1.25", strict=True)


# --- the running cluster -------------------------------------------------------------------------------------


def test_pods_start_and_workers_register(emulated: EmulatedCluster, rendered: dict[str, Any]) -> None:
    workers = emulated.wait_for_workers(timeout=60)
    names = sorted(w["name"] for w in workers.values())
    assert names == sorted(emulated.worker_names)  # the operator's DASK_WORKER_NAME, via $(DASK_WORKER_NAME)
    args = rendered["daskcluster"]["spec"]["worker"]["spec"]["containers"][0]["args"]
    memory_limit = int(args[args.index("--memory-limit") + 1])
    threads = int(args[args.index("--nthreads") + 1])
    for w in workers.values():
        assert w["nthreads"] == threads
        assert w["memory_limit"] == memory_limit
    scheduler = emulated.scheduler_pod.containers[0]
    assert scheduler.argv[:2] == ["dask", "scheduler"]
    assert all(pod.alive() for pod in emulated.pods)


def test_verification_create_passes_on_the_emulated_cluster(
    emulated: EmulatedCluster, rendered: dict[str, Any], props: dict[str, Any]
) -> None:
    """The dynamic provider's create (what `pulumi up` runs) with connect: direct finds exactly the cone's rows."""
    from components.verification.resource import new_provider

    want = expected_rows(props["ra"], props["dec"], props["radiusArcsec"])
    assert want >= props["minRows"]
    result = new_provider().create(direct_props(props, emulated, rendered["summary"]["exports"]))
    outs = result.outs
    assert outs["rows"] == want
    assert outs["workers"] == 2
    assert outs["partitions"] >= 1
    assert set(props["columns"]) <= set(outs["sample"][0])


def test_readme_connect_and_query_block_runs(
    emulated: EmulatedCluster, rendered: dict[str, Any], props: dict[str, Any], tmp_path: Path
) -> None:
    """The README's copy-and-run block, as a user runs it after the port-forward (which the emulated stable
    Service's local address stands in for), prints the cone's rows."""
    from tests.readme_blocks import readme_block

    exports = rendered["summary"]["exports"]
    block = readme_block("connect-and-query")
    forwarded = emulated.map_address(exports["schedulerAddress"])  # what `kubectl port-forward` reaches
    script = block.replace(f'"{exports["localSchedulerAddress"]}"', f'"{forwarded}"').replace(
        f'"{props["catalogPath"]}"', f'"{emulated.map_path(props["catalogPath"])}"'
    )
    assert script != block
    path = tmp_path / "connect_and_query.py"
    path.write_text(script)
    proc = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    want = expected_rows(props["ra"], props["dec"], props["radiusArcsec"])
    assert f"{want} rows" in proc.stdout
    assert "ra" in proc.stdout and "dec" in proc.stdout


def test_scheduler_serves_adaptive_target(emulated: EmulatedCluster, rendered: dict[str, Any]) -> None:
    """The operator's autoscaler asks GET /api/v1/adaptive_target on the Service's http-dashboard port."""
    status, body = http_get(dashboard_base(emulated, rendered["summary"]["exports"]) + "/api/v1/adaptive_target")
    assert status == 200, body
    assert isinstance(json.loads(body)["workers"], int)


def test_adaptive_target_needs_the_http_routes_env(rendered: dict[str, Any], tmp_path: Path) -> None:
    """Control: the same scheduler pod without the program's DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES answers 404."""
    manifest = copy.deepcopy(rendered["daskcluster"])
    manifest["spec"]["worker"]["replicas"] = 0
    (container,) = manifest["spec"]["scheduler"]["spec"]["containers"]
    assert any(e["name"] == ROUTES_ENV for e in container["env"])
    container["env"] = [e for e in container["env"] if e["name"] != ROUTES_ENV]
    with EmulatedCluster(manifest, tmp_path, services=rendered["services"]) as cluster:
        cluster.start(timeout=60)
        base = dashboard_base(cluster, rendered["summary"]["exports"])
        assert http_get(base + "/health")[0] == 200
        assert http_get(base + "/api/v1/adaptive_target")[0] == 404
    assert cluster.leftover_pids() == []


def test_worker_killed_during_verification_does_not_lose_the_run(
    emulated: EmulatedCluster, rendered: dict[str, Any], props: dict[str, Any], block_marker: Path
) -> None:
    """SIGKILL the worker pod that runs the first query task: the scheduler re-runs it, the rows are complete,
    and the verification reports the lost worker as a warning. Then the Deployment's replacement pod rejoins."""
    from components.verification.resource import new_provider

    emulated.wait_for_workers(timeout=60)
    query = {**props, "radiusArcsec": 20 * 3600.0, "minWorkers": 2}  # a wider cone: several partitions
    want = expected_rows(query["ra"], query["dec"], query["radiusArcsec"])
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["outs"] = new_provider().create(direct_props(query, emulated, rendered["summary"]["exports"])).outs
        except BaseException as exc:
            box["error"] = exc

    block_marker.unlink()  # arm: the first query task to execute blocks its worker and writes "<pid> <key>"
    thread = threading.Thread(target=run, name="verification", daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not (block_marker.exists() and block_marker.read_text().strip()):
        assert thread.is_alive(), f"the verification ended before any query task ran: {box}"
        assert time.monotonic() < deadline, "no query task started within 120 s"
        time.sleep(0.05)
    time.sleep(0.1)  # the marker is written in one call; let it land
    pid, key = block_marker.read_text().split(" ", 1)
    victim = emulated.pod_of(int(pid))
    assert victim in emulated.worker_pods
    victim.kill(signal.SIGKILL)
    thread.join(timeout=240)
    assert not thread.is_alive(), "the verification did not finish after the worker was killed"
    assert "error" not in box, f"the run was lost: {box.get('error')}"
    outs = box["outs"]
    assert outs["rows"] == want, f"task {key} was lost or duplicated"
    assert any("left the cluster during the query" in w for w in outs["warnings"]), outs["warnings"]

    victim.restart()  # what the worker Deployment does next
    emulated.wait_for_workers(timeout=90)


def test_guide_manifest_pods_fail_with_command_not_found(tmp_path: Path) -> None:
    """Negative control: the guide's manifest is schema-valid, yet its pods cannot start: `dask-scheduler` and
    `dask-worker` are not in an image of the locked distributed (`dask scheduler`/`dask worker` are)."""
    import jsonschema

    from components.operator_chart import crd_manifests

    docs = [d for d in yaml.safe_load_all(GUIDE_FIXTURE.read_text()) if d]
    (manifest,) = [d for d in docs if d["kind"] == "DaskCluster"]
    crd = next(c for c in crd_manifests() if c["spec"]["names"]["kind"] == "DaskCluster")
    jsonschema.validate(manifest, crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])  # the schema is happy

    assert resolve_executable("dask").name == "dask"  # the emulated image PATH itself is fine
    with EmulatedCluster(manifest, tmp_path, claims={"hats-catalog-pvc": tmp_path / "catalogs"}) as cluster:
        failures = {}
        for pod in cluster.pods:
            with pytest.raises(FileNotFoundError) as exc:
                pod.start()
            failures[pod.name] = exc.value
            assert pod.phase == "Failed"
            assert not pod.pids, "nothing may have been started"
        with pytest.raises(FileNotFoundError):
            cluster.start()
    scheduler, *workers = cluster.pods
    assert failures[scheduler.name].filename == "dask-scheduler"
    assert "executable file not found in $PATH" in failures[scheduler.name].strerror
    assert len(workers) == 2
    for pod in workers:
        assert failures[pod.name].filename == "dask-worker"
        # Everything else of the worker command was understood: the operator's name was expanded.
        assert pod.containers[0].argv[:3] == ["dask-worker", "--name", pod.deployment["metadata"]["name"]]
    assert cluster.all_pids() == []


def test_guide_fixture_is_the_guides_manifest() -> None:
    """The negative control is the guide's own YAML, not a paraphrase of it."""
    guide = PROJECT_DIR.parent / "shared" / "reference" / "lsdb-kubernetes-dask-operator-guide.rst"
    if not guide.is_file():
        pytest.skip(f"the guide is not beside this checkout ({guide})")
    text = guide.read_text()
    start = text.index("    apiVersion: kubernetes.dask.org/v1\n    kind: DaskCluster")
    block = []
    for line in text[start:].splitlines():
        if line.strip() and not line.startswith("    "):
            break
        block.append(line)
    assert list(yaml.safe_load_all(textwrap.dedent("\n".join(block)))) == list(
        yaml.safe_load_all(GUIDE_FIXTURE.read_text())
    )


def test_emulation_errors_name_the_problem(rendered: dict[str, Any], tmp_path: Path) -> None:
    """A missing volume source is an emulation error, not a silent pass."""
    with pytest.raises(EmulationError, match="no local directory for PVC 'hats-catalog-pvc'"):
        EmulatedCluster(rendered["daskcluster"], tmp_path)


# --- issue 12: metrics the dashboard reads, an extra worker group --------------------------------------------


def metric_names(exposition: str) -> set[str]:
    """Names of the samples in a Prometheus text exposition (`# HELP`/`# TYPE` lines do not count)."""
    return {line.split("{", 1)[0].split(" ", 1)[0] for line in exposition.splitlines() if line and line[0] != "#"}


def test_dashboard_metrics_are_served_by_the_real_scheduler_and_workers(emulated: EmulatedCluster) -> None:
    """Every metric name the dashboard's queries use is served on the ports the monitors scrape (http-dashboard),
    after a few tasks ran (some worker metrics appear only then): a renamed metric fails here, not in Grafana."""
    from distributed import Client

    from components.config import parse_stack_config
    from components.constants import DASHBOARD_PORT_NAME
    from components.monitoring import METRICS_PATH, dashboard_json
    from tests.support.dashboard import dashboard_metric_names

    with Client(emulated.scheduler_address, timeout=60, set_as_default=False) as client:
        futures = client.map(lambda x: x + 1, range(40), pure=False)
        assert client.submit(sum, futures).result(timeout=60) == sum(range(1, 41))  # moves data between workers
        del futures
    served: set[str] = set()
    for pod in [emulated.scheduler_pod, *emulated.worker_pods]:
        status, body = http_get(f"http://127.0.0.1:{pod.local_port(DASHBOARD_PORT_NAME)}{METRICS_PATH}")
        assert status == 200, f"{pod.name} does not serve {METRICS_PATH} ({status}): is prometheus-client in the lock?"
        served |= metric_names(body.decode())
    cluster = parse_stack_config({"verify": {"enabled": False}, "image": {"repository": "r/x"}}).cluster
    wanted = dashboard_metric_names(dashboard_json(cluster, "ns", None))
    assert len(wanted) >= 5
    assert wanted <= served, f"the dashboard queries metrics no process serves: {sorted(wanted - served)}"


def test_extra_worker_group_registers_with_the_scheduler(tmp_path: Path) -> None:
    """A cluster.workerGroups entry: the DaskWorkerGroup the program emits, scaled by the operator's own
    build_worker_deployment_spec, starts a worker that registers with the live cluster's scheduler under its group's
    name; the verification counts it per group, and the spread constraint and disruption budget select real pods."""
    from components.verification.check import _workers_by_group
    from tests.program_helpers import dask_cluster, kubernetes_objects, run_with

    run = run_with(
        storage={"kind": "none"},
        security={"tls": False},  # the group, not TLS, is under test (tests/test_e2e_tls.py covers TLS)
        cluster={
            "name": "wg",
            "workers": {"replicas": 1, "memory": "1Gi", "threads": 1},
            "autoscaler": {"enabled": False},
            "workerGroups": {"highmem": {"replicas": 1, "memory": "2Gi", "threads": 1, "spot": "aws"}},
        },
    )
    objects = kubernetes_objects(run)
    (group,) = [o for o in objects if o["kind"] == "DaskWorkerGroup"]
    (pdb,) = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    live = dask_cluster(run)["metadata"]["name"]
    with EmulatedCluster(dask_cluster(run), tmp_path, worker_groups=[group]) as cluster:
        assert len(cluster.worker_pods) == 2
        group_pod = next(p for p in cluster.worker_pods if p.labels["dask.org/workergroup-name"] == f"{live}-highmem")
        (worker_name,) = [n for n in cluster.worker_names if n.startswith(f"{live}-highmem-worker-")]
        cluster.start(timeout=120)
        workers = cluster.wait_for_workers(timeout=120)
        by_name = {w["name"]: w for w in workers.values()}
        assert by_name[worker_name]["memory_limit"] == 2 * 2**30 and by_name[worker_name]["nthreads"] == 1
        from distributed import Client

        with Client(cluster.scheduler_address, timeout=60, set_as_default=False) as client:
            address = next(a for a, w in workers.items() if w["name"] == worker_name)
            assert client.submit(lambda: 42, workers=[address]).result(timeout=60) == 42
            assert _workers_by_group(client, 10.0) == {f"{live}-default": 1, f"{live}-highmem": 1}
        # The labels the program's selectors use are on the pods the operator's builders made.
        spread = group["spec"]["worker"]["spec"]["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"]
        assert spread.items() <= group_pod.labels.items()
        assert pdb["spec"]["selector"]["matchLabels"].items() <= cluster.scheduler_pod.labels.items()
        assert group["spec"]["worker"]["spec"]["nodeSelector"] == {"eks.amazonaws.com/capacityType": "SPOT"}
    assert cluster.leftover_pids() == []


def test_no_emulated_process_is_left_running(emulated: EmulatedCluster) -> None:
    """Last test of the module: stopping the shared cluster ends every process it started, by PID."""
    import psutil

    pids = emulated.all_pids()
    assert len(pids) >= 3 * 2, f"expected scheduler, 2 workers and their children, saw {pids}"
    emulated.stop()
    assert emulated.leftover_pids() == []
    for pod in emulated.pods:
        assert not pod.alive()
    running = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    # A PID may have been reused by an unrelated process; leftover_pids() compares start times, this is a cross-check.
    for pid in running:
        assert pid not in {c.pid for c in psutil.Process().children(recursive=True)}, f"PID {pid} still runs"
