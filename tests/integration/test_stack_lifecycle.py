"""An ephemeral stack through its whole life on a kind cluster, driven by the Pulumi Automation API.

`pytest -m integration tests/integration` (CI: .github/workflows/integration.yml). What it needs, checked one
by one, and named in the skip reason when absent: the pulumi CLI, kubectl, kind, and a reachable Docker daemon.

1. `scripts/dev.sh cluster` makes sure the dev kind cluster (kind-lsdb-dev), the local registry
   (localhost:5001) and the sample catalog exist, exactly as `make up` does; what this test created
   there it removes at the end (set LSDB_IT_KEEP_CLUSTER=1 to keep it).
2. The project is copied to a temporary folder (so no Pulumi.<stack>.yaml lands in the checkout), its
   .venv linked to this one, and a stack `it-<random>` is created in a file backend inside that folder:
   your Pulumi login is never used. Its config is Pulumi.dev.yaml with its own namespace and cluster name
   (and no second operator when the cluster already runs one).
3. `up` with the policy pack; the outputs and the verification result are checked, and so are the live
   DaskCluster and the stable Service. Then a `preview`, a second `up`, and a `refresh` followed by a
   `preview` must report only `same` (idempotency); a worker spec change must start, verify and switch to a
   new cluster and delete the old one; and `destroy` must leave no namespace behind.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KIND_CLUSTER = "lsdb-dev"
CONTEXT = f"kind-{KIND_CLUSTER}"
REGISTRY = "kind-registry"
PROJECT = "lsdb-k8s"


def missing_prerequisites() -> list[str]:
    """Each missing prerequisite, named with how to get it."""
    missing = []
    if shutil.which("pulumi") is None:
        missing.append("pulumi CLI not found (curl -fsSL https://get.pulumi.com | sh)")
    if shutil.which("kubectl") is None:
        missing.append("kubectl not found (https://kubernetes.io/docs/tasks/tools/)")
    if shutil.which("kind") is None:
        missing.append("kind not found (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)")
    docker = shutil.which("docker")
    if docker is None:
        missing.append("docker not found (https://docs.docker.com/engine/install/)")
    else:
        probe = subprocess.run(
            [docker, "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True, timeout=60
        )
        if probe.returncode != 0:
            first = (probe.stderr.strip().splitlines() or ["docker version failed"])[0]
            missing.append(f"docker daemon not reachable ({first})")
    return missing


MISSING = missing_prerequisites()

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(3600),
    pytest.mark.skipif(bool(MISSING), reason="integration prerequisites missing: " + "; ".join(MISSING)),
]


def sh(*argv: str, check: bool = True, timeout: float = 900, **kw: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def kubectl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh("kubectl", "--context", CONTEXT, *args, check=check, timeout=120)


def cluster_exists() -> bool:
    return KIND_CLUSTER in sh("kind", "get", "clusters").stdout.split()


def registry_exists() -> bool:
    return sh("docker", "inspect", REGISTRY, check=False).returncode == 0


def operator_installed() -> bool:
    return kubectl("get", "crd", "daskclusters.kubernetes.dask.org", check=False).returncode == 0


def copy_project(dest: Path) -> Path:
    ignore = shutil.ignore_patterns(
        ".git", ".venv", ".pulumi-state", ".build", "venv", "__pycache__", ".pytest_cache", ".ruff_cache",
        "tests", "bench", "render", "Pulumi.*.yaml",
    )  # fmt: skip
    shutil.copytree(ROOT, dest, ignore=ignore)
    (dest / ".venv").symlink_to(ROOT / ".venv", target_is_directory=True)
    return dest


@dataclass
class Deployment:
    stack: Any
    name: str
    namespace: str
    dev_config: dict[str, Any]
    settings_file: Path
    results: dict[str, Any] = field(default_factory=dict)
    destroyed: bool = False


@pytest.fixture(scope="module")
def dev_environment() -> Iterator[None]:
    """The kind cluster, registry and sample catalog of `make up`; removed afterwards only if created here."""
    had_cluster, had_registry = cluster_exists(), registry_exists()
    sh("bash", str(ROOT / "scripts" / "dev.sh"), "cluster", cwd=ROOT, timeout=1800)
    # The policy pack's own virtualenv, so `up` runs the guardrails as CI does.
    sh("make", "-C", str(ROOT), "policy-venv", timeout=1800)
    yield
    if os.environ.get("LSDB_IT_KEEP_CLUSTER") == "1":
        return
    if not had_cluster:
        sh("kind", "delete", "cluster", "--name", KIND_CLUSTER, check=False)
    if not had_registry:
        sh("docker", "rm", "-f", REGISTRY, check=False)


@pytest.fixture(scope="module")
def deployment(dev_environment: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    from pulumi import automation as auto

    base = tmp_path_factory.mktemp("stack")
    project = copy_project(base / "project")
    suffix = secrets.token_hex(3)
    name = f"lsdb-it-{suffix}"
    workspace = auto.LocalWorkspace(
        work_dir=str(project),
        env_vars={
            "PULUMI_BACKEND_URL": f"file://{base / 'state'}",
            "PULUMI_CONFIG_PASSPHRASE": "integration-test-only",
            "PULUMI_SKIP_UPDATE_CHECK": "true",
        },
    )
    (base / "state").mkdir()
    stack = auto.Stack.create(f"it-{suffix}", workspace)

    # Pulumi.dev.yaml's config, made unique to this stack; `stack init` already wrote the encryption salt.
    dev_config = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]
    config = json.loads(json.dumps(dev_config))
    config[f"{PROJECT}:namespace"] = name
    config[f"{PROJECT}:cluster"] = {**config.get(f"{PROJECT}:cluster", {}), "name": name}
    config[f"{PROJECT}:notebook"] = {"enabled": True}  # the notebook's own test runs its starter on the cluster
    if operator_installed():
        config[f"{PROJECT}:operator"] = {"install": False}  # CRDs and operator belong to another stack
    settings_file = project / f"Pulumi.it-{suffix}.yaml"
    settings = (yaml.safe_load(settings_file.read_text()) if settings_file.exists() else None) or {}
    settings["config"] = config
    settings_file.write_text(yaml.safe_dump(settings, sort_keys=False))

    deployed = Deployment(stack=stack, name=name, namespace=name, dev_config=dev_config, settings_file=settings_file)
    yield deployed
    if not deployed.destroyed:
        try:
            stack.destroy(on_output=print, color="never")
        finally:
            kubectl("delete", "namespace", name, "--ignore-not-found", "--wait=false", check=False)
    workspace.remove_stack(stack.name, force=True)


def test_up_exports_outputs_and_a_passing_verification(deployment: Deployment) -> None:
    up = deployment.stack.up(on_output=print, color="never", policy_packs=[str(ROOT / "policy")])
    assert up.summary.result == "succeeded"
    outputs = {k: v.value for k, v in up.outputs.items()}
    deployment.results["outputs"] = outputs
    name, ns = deployment.name, deployment.namespace

    assert outputs["namespace"] == ns
    live = outputs["clusterName"]  # blue/green: the live DaskCluster is <cluster.name>-<h>
    assert re.fullmatch(rf"{re.escape(name)}-[0-9a-f]{{8}}", live)
    assert outputs["schedulerAddress"] == f"tcp://{name}-scheduler.{ns}.svc.cluster.local:8786"
    assert outputs["localSchedulerAddress"] == "tcp://localhost:8786"
    forward = f".venv/bin/python -m tools.forward --context {CONTEXT} --namespace {ns} --service {name}-scheduler"
    assert outputs["portForwardScheduler"] == f"{forward} 8786:8786"
    assert f"-n {ns}" in outputs["kubectlWorkerPods"]
    repository = deployment.dev_config[f"{PROJECT}:image"]["repository"]
    assert re.fullmatch(rf"{re.escape(repository)}@sha256:[0-9a-f]{{64}}", outputs["imageRef"])

    verify = deployment.dev_config[f"{PROJECT}:verify"]
    verification = outputs["verification"]
    assert verification["rows"] >= verify.get("minRows", 1)
    assert verification["workers"] >= verify.get("minWorkers", 1)
    assert verification["partitions"] >= 1
    assert verification["elapsedSeconds"] > 0
    assert verification["versions"]
    assert verification["sample"]

    # The live cluster agrees with the outputs.
    phase = kubectl("get", "daskcluster", live, "-n", ns, "-o", "jsonpath={.status.phase}").stdout
    assert phase == "Running"
    pods = json.loads(kubectl("get", "pods", "-n", ns, "-l", f"dask.org/cluster-name={live}", "-o", "json").stdout)
    components = {p["metadata"]["labels"].get("dask.org/component") for p in pods["items"]}
    assert {"scheduler", "worker"} <= components
    for pod in pods["items"]:
        for container in pod["spec"]["containers"]:
            assert container["image"] == outputs["imageRef"]
    # The stable Service selects the live scheduler; its selector belongs to the patch's own field manager.
    stable = json.loads(
        kubectl("get", "service", f"{name}-scheduler", "-n", ns, "--show-managed-fields", "-o", "json").stdout
    )
    assert stable["spec"]["selector"] == {"dask.org/cluster-name": live, "dask.org/component": "scheduler"}
    owners = [m["manager"] for m in stable["metadata"]["managedFields"] if "f:selector" in json.dumps(m)]
    assert owners == ["lsdb-k8s-stable-endpoint"]
    deployment.results["stableServiceUid"] = stable["metadata"]["uid"]


def test_the_notebook_runs_its_starter_on_the_cluster(deployment: Deployment) -> None:
    """The notebook Deployment rolls out; through its Service (kubectl port-forward: the notebook's pod is not
    replaced by cluster upgrades) the starter notebook, read from the server, runs in a kernel of that server and
    returns the rows the verification counted, computed by the cluster's workers."""
    from tools.notebook_emulator import api, run_cells

    if "outputs" not in deployment.results:
        pytest.fail("the first `up` did not succeed, so there is no notebook")
    outputs, name, ns = deployment.results["outputs"], deployment.name, deployment.namespace
    kubectl("rollout", "status", f"deployment/{name}-notebook", "-n", ns, "--timeout=300s")
    with socket.socket() as probe_port:
        probe_port.bind(("127.0.0.1", 0))
        port = probe_port.getsockname()[1]
    forward = subprocess.Popen(
        ["kubectl", "--context", CONTEXT, "-n", ns, "port-forward", f"svc/{name}-notebook", f"{port}:8888"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url, token = f"http://127.0.0.1:{port}", outputs["notebookToken"]
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                api(url, token, "/api/status")
                break
            except OSError:
                assert time.monotonic() < deadline, "the notebook's port-forward never answered"
                time.sleep(1)
        starter = api(url, token, "/api/contents/starter.ipynb")
        cells = [c["source"] for c in starter["content"]["cells"] if c["cell_type"] == "code"]
        probe = "print(json.dumps({'rows': len(rows), 'workers': len(client.scheduler_info()['workers'])}))"
        results = run_cells(url, token, [*cells, probe], timeout=300)
    finally:
        forward.terminate()
    errors = [o for cell in results for o in cell if o["msg_type"] == "error"]
    assert errors == [], "\n".join(e["ename"] + ": " + e["evalue"] for e in errors)
    info = json.loads(results[-1][-1]["text"])
    assert info["rows"] == outputs["verification"]["rows"] and info["workers"] >= 1


def test_a_second_preview_and_up_change_nothing(deployment: Deployment) -> None:
    if "outputs" not in deployment.results:
        pytest.fail("the first `up` did not succeed, so idempotency cannot be checked")
    preview = deployment.stack.preview(on_output=print, color="never", policy_packs=[str(ROOT / "policy")])
    assert {str(op.value if hasattr(op, "value") else op) for op, n in preview.change_summary.items() if n} == {"same"}
    again = deployment.stack.up(on_output=print, color="never", expect_no_changes=True)
    assert again.summary.result == "succeeded"
    changes = again.summary.resource_changes or {}
    assert {str(op.value if hasattr(op, "value") else op) for op, n in changes.items() if n} == {"same"}
    assert {k: v.value for k, v in again.outputs.items()} == deployment.results["outputs"]
    # What `make up` and deploy.yml run (`up --refresh`): reading the live objects back changes nothing either,
    # the stable Service's patched selector included.
    deployment.stack.refresh(on_output=print, color="never")
    preview = deployment.stack.preview(on_output=print, color="never")
    assert {str(op.value if hasattr(op, "value") else op) for op, n in preview.change_summary.items() if n} == {"same"}


def test_an_upgrade_verifies_a_new_cluster_moves_the_stable_service_and_deletes_the_old(
    deployment: Deployment,
) -> None:
    if "stableServiceUid" not in deployment.results:
        pytest.fail("the first `up` did not succeed, so there is nothing to upgrade")
    before = deployment.results["outputs"]
    settings = yaml.safe_load(deployment.settings_file.read_text())
    cluster = settings["config"][f"{PROJECT}:cluster"]
    cluster["workers"] = {**cluster.get("workers", {}), "cpu": "400m"}  # not reconciled by the operator: a new cluster
    deployment.settings_file.write_text(yaml.safe_dump(settings, sort_keys=False))

    up = deployment.stack.up(on_output=print, color="never", policy_packs=[str(ROOT / "policy")])
    assert up.summary.result == "succeeded"
    outputs = {k: v.value for k, v in up.outputs.items()}
    old, new, ns = before["clusterName"], outputs["clusterName"], deployment.namespace
    assert new != old and outputs["schedulerAddress"] == before["schedulerAddress"]
    assert outputs["verification"]["rows"] >= 1
    deployment.results["outputs"] = outputs
    stable = json.loads(kubectl("get", "service", f"{deployment.name}-scheduler", "-n", ns, "-o", "json").stdout)
    assert stable["metadata"]["uid"] == deployment.results["stableServiceUid"], "the same Service object"
    assert stable["spec"]["selector"] == {"dask.org/cluster-name": new, "dask.org/component": "scheduler"}
    assert kubectl("get", "daskcluster", old, "-n", ns, check=False).returncode != 0, "the old cluster is deleted"


def test_destroy_removes_the_namespace_and_the_cluster(deployment: Deployment) -> None:
    destroy = deployment.stack.destroy(on_output=print, color="never")
    deployment.destroyed = True
    assert destroy.summary.result == "succeeded"
    deadline = time.monotonic() + 300
    while kubectl("get", "namespace", deployment.namespace, check=False).returncode == 0:
        assert time.monotonic() < deadline, f"namespace {deployment.namespace} still exists 5 minutes after destroy"
        time.sleep(5)
    live = deployment.results.get("outputs", {}).get("clusterName", deployment.name)
    gone = kubectl("get", "daskcluster", live, "-n", deployment.namespace, check=False)
    assert gone.returncode != 0
    pv = kubectl("get", "pv", f"{deployment.namespace}-hats-catalog-pvc", check=False)
    assert pv.returncode != 0, "the stack's static PersistentVolume outlived destroy"
