"""The real program under Pulumi mocks: each component's resources, properties, parents and depends_on."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import yaml

from components.cluster import SCHEDULER_HTTP_ROUTES
from components.dask_operator import operator_version, prepare_packaged_chart
from components.lock import locked_version
from components.operator_chart import CHART_NAME
from components.verification.query import OUTPUT_KEYS
from components.verification.resource import CLUSTER_RERUN_KEYS
from tests.program_helpers import OPERATOR_INSTALLED, dask_cluster, manifest, run_stack, run_with, shipped_stack
from tools.mock_runtime import SECRET_SIG, SECRET_VALUE, run_program
from tools.render import stack_config

DASKCLUSTER = "kubernetes:kubernetes.dask.org/v1:DaskCluster"
AUTOSCALER = "kubernetes:kubernetes.dask.org/v1:DaskAutoscaler"
CRD = "kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition"
RELEASE = "kubernetes:helm.sh/v3:Release"
PVC = "kubernetes:core/v1:PersistentVolumeClaim"
PV = "kubernetes:core/v1:PersistentVolume"
SECRET = "kubernetes:core/v1:Secret"


@pytest.fixture(scope="module")
def default_run():
    return run_with(operator=OPERATOR_INSTALLED)


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_stack_exports_derive_from_the_real_cluster_name(stack: str) -> None:
    run = shipped_stack(stack)
    cluster = dask_cluster(run)
    live, ns = cluster["metadata"]["name"], cluster["metadata"]["namespace"]
    name = cluster["metadata"]["labels"]["app.kubernetes.io/name"]  # cluster.name; the live cluster is <name>-<h>
    assert re.fullmatch(rf"{name}-[0-9a-f]{{8}}", live)
    out = run.outputs
    assert out["clusterName"] == live and out["namespace"] == ns
    # Every address names the stable Service <name>-scheduler, which outlives upgrades.
    scheme = "tcp" if stack == "dev" else "tls"  # TLS is on by default; Pulumi.dev.yaml turns it off
    assert out["schedulerAddress"] == f"{scheme}://{name}-scheduler.{ns}.svc.cluster.local:8786"
    assert out["dashboardUrl"] == f"http://{name}-scheduler.{ns}.svc.cluster.local:8787/status"
    # The forwarder that follows the stable Service across upgrades (tools/forward.py), one port each.
    assert out["portForwardScheduler"].startswith(".venv/bin/python -m tools.forward --context ")
    assert out["portForwardScheduler"].endswith(f" --namespace {ns} --service {name}-scheduler 8786:8786")
    assert out["portForwardDashboard"].endswith(f"--service {name}-scheduler 8787:8787")
    assert out["localSchedulerAddress"] == f"{scheme}://localhost:8786"
    assert out["kubectlWorkerPods"].endswith(f"-l dask.org/cluster-name={live},dask.org/component=worker")
    assert "@sha256:" in out["imageRef"]


def test_dev_stack_targets_its_kube_context() -> None:
    run = shipped_stack("dev")
    providers = run.of_type("pulumi:providers:kubernetes")
    # The stack's provider, and the CRDs' own (which also upserts the retained CRDs), both on the stack's context.
    assert sorted(p.name for p in providers) == ["dask-operator-crd-provider", "kube"]
    assert all(p.inputs["context"] == "kind-lsdb-dev" for p in providers)
    for r in run.resources:
        if r.type.startswith("kubernetes:") and r.custom:
            assert any(r.provider.startswith(p.urn + "::") for p in providers), f"{r.name} misses the kube context"
    assert " --context kind-lsdb-dev " in run.outputs["portForwardScheduler"]


def test_operator_release_is_pinned_to_the_lock_and_skips_crds(default_run) -> None:
    release = default_run.one(RELEASE)
    version = locked_version("dask-kubernetes")
    assert release.inputs["chart"] == CHART_NAME
    assert release.inputs["version"] == version == operator_version()
    assert release.inputs["repositoryOpts"]["repo"] == "https://helm.dask.org"
    assert release.inputs["values"]["image"]["tag"] == version
    assert release.inputs["skipCrds"] is True
    assert release.inputs["namespace"] == "dask-operator"
    crds = default_run.of_type(CRD)
    assert sorted(c.inputs["metadata"]["name"] for c in crds) == [
        "daskautoscalers.kubernetes.dask.org",
        "daskclusters.kubernetes.dask.org",
        "daskjobs.kubernetes.dask.org",
        "daskworkergroups.kubernetes.dask.org",
    ]
    # The release waits for its CRDs and namespace; all are children of the DaskOperator component.
    operator = default_run.one("lsdb-k8s:operator:DaskOperator")
    ns = next(r for r in default_run.of_type("kubernetes:core/v1:Namespace") if r.parent == operator.urn)
    assert {c.urn for c in crds} | {ns.urn} <= set(release.dependencies)
    assert all(r.parent == operator.urn for r in [*crds, release, ns])


def test_packaged_chart_gets_real_version_and_image_tag(tmp_path: Path) -> None:
    version = operator_version()
    chart_dir = prepare_packaged_chart(version, tmp_path)
    chart = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
    values = yaml.safe_load((chart_dir / "values.yaml").read_text())
    assert chart["version"] == chart["appVersion"] == version
    assert values["image"]["tag"] == version
    assert "chartpress" not in (chart_dir / "Chart.yaml").read_text() + (chart_dir / "values.yaml").read_text()
    assert len(list((chart_dir / "crds").glob("*.yaml"))) == 4


def test_chart_source_package_installs_the_local_chart() -> None:
    run = run_with(operator={"chartSource": "package"})
    release = run.one(RELEASE)
    assert Path(release.inputs["chart"]).joinpath("Chart.yaml").exists()
    assert "repositoryOpts" not in release.inputs and release.inputs["skipCrds"] is True


def test_operator_install_false_creates_neither_release_nor_crds() -> None:
    run = run_with(operator={"install": False})
    assert run.of_type(RELEASE) == [] and run.of_type(CRD) == []
    assert dask_cluster(run)["metadata"]["name"].startswith("lsdb-cluster-")


def test_operator_from_stack_must_match_the_lock() -> None:
    run = shipped_stack("staging")
    assert run.outputs["operatorNamespace"] == "dask-operator"
    assert run.of_type(RELEASE) == [] and run.of_type(CRD) == []
    config, secret_keys = stack_config("staging")
    stale = {"organization/lsdb-k8s/platform": {"operatorNamespace": "dask-operator", "operatorVersion": "2024.1.0"}}
    with pytest.raises(Exception, match=r"runs dask-kubernetes 2024\.1\.0 .* pins " + operator_version()):
        run_program(config, secret_keys, stack="staging", stack_outputs=stale)


def test_daskcluster_spec(default_run) -> None:
    cluster = dask_cluster(default_run)
    spec = cluster["spec"]
    sched = spec["scheduler"]["spec"]["containers"][0]
    worker = spec["worker"]["spec"]["containers"][0]
    live = cluster["metadata"]["name"]
    assert re.fullmatch(r"lsdb-cluster-[0-9a-f]{8}", live)
    assert cluster["metadata"] == {
        "name": live,
        "namespace": "lsdb-test",
        "labels": {"app.kubernetes.io/part-of": "lsdb-k8s", "app.kubernetes.io/name": "lsdb-cluster"},
        # No cpuLimit: the scanner's CPU-limit check is skipped, with the reason, where the operator copies it.
        "annotations": {"checkov.io/skip1": cluster["metadata"]["annotations"]["checkov.io/skip1"]},
    }
    assert cluster["metadata"]["annotations"]["checkov.io/skip1"].startswith("CKV_K8S_11=CPU limits throttle")
    assert sched["args"][:2] == ["dask", "scheduler"] and worker["args"][:2] == ["dask", "worker"]
    assert worker["args"][2:6] == ["--name", "$(DASK_WORKER_NAME)", "--nthreads", "2"]
    assert worker["args"][worker["args"].index("--memory-limit") + 1] == str(4 * 2**30)
    assert [(p["name"], p["containerPort"]) for p in sched["ports"]] == [("tcp-comm", 8786), ("http-dashboard", 8787)]
    service = spec["scheduler"]["service"]
    assert service["type"] == "ClusterIP"
    assert service["selector"] == {"dask.org/cluster-name": live, "dask.org/component": "scheduler"}
    assert {p["name"]: p["port"] for p in service["ports"]} == {"tcp-comm": 8786, "http-dashboard": 8787}
    assert worker["resources"] == {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "4Gi"}}
    assert sched["resources"] == {"requests": {"cpu": "2", "memory": "6Gi"}, "limits": {"memory": "6Gi"}}
    assert spec["worker"]["replicas"] == 2 and spec["idleTimeout"] == 0
    for pod in (spec["scheduler"]["spec"], spec["worker"]["spec"]):
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        c = pod["containers"][0]["securityContext"]
        assert c["allowPrivilegeEscalation"] is False and c["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["mountPath"]: m["name"] for m in worker["volumeMounts"]}
    assert mounts == {
        "/data": "catalog-data", "/scratch": "dask-scratch", "/tmp": "tmp", "/home/dask": "home",
        "/etc/dask-tls": "dask-tls",
    }  # fmt: skip


def test_cpu_limit_only_when_configured() -> None:
    spec = dask_cluster(run_with(cluster={"name": "c1", "workers": {"cpuLimit": "3"}}))["spec"]
    assert spec["worker"]["spec"]["containers"][0]["resources"]["limits"] == {"memory": "4Gi", "cpu": "3"}
    # A ResourceQuota that needs limits.cpu needs it on the scheduler too.
    assert spec["scheduler"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] == "2"


def test_scheduler_http_routes_env_parses_as_a_list_with_the_api(default_run) -> None:
    import dask.config
    import distributed  # noqa: F401  (registers distributed's defaults in dask.config)

    env = {
        e["name"]: e["value"]
        for e in dask_cluster(default_run)["spec"]["scheduler"]["spec"]["containers"][0]["env"]
        if "value" in e
    }
    value = env["DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES"]
    parsed = dask.config.collect_env({"DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES": value})
    routes = parsed["distributed"]["scheduler"]["http"]["routes"]
    assert isinstance(routes, list) and "distributed.http.scheduler.api" in routes
    # The defaults are kept: ours is exactly distributed's default list plus the API route.
    defaults = dask.config.get("distributed.scheduler.http.routes")
    assert routes == [*defaults, "distributed.http.scheduler.api"] == SCHEDULER_HTTP_ROUTES
    # The tempting comma-separated form is not a list once Dask parses it: it would crash the scheduler.
    bad = dask.config.collect_env({"DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES": ",".join(routes)})
    assert not isinstance(bad["distributed"]["scheduler"]["http"]["routes"], list)
    assert ast.literal_eval(value) == routes


def test_autoscaler_points_at_the_cluster_and_waits_for_it(default_run) -> None:
    scaler = default_run.one(AUTOSCALER)
    cluster = default_run.one(DASKCLUSTER)
    live = manifest(cluster)["metadata"]["name"]
    assert manifest(scaler)["metadata"]["name"] == live
    assert manifest(scaler)["spec"] == {"cluster": live, "minimum": 2, "maximum": 4}
    assert cluster.urn in scaler.dependencies
    component = default_run.one("lsdb-k8s:cluster:LsdbDaskCluster")
    assert scaler.parent == cluster.parent == component.urn


def test_autoscaler_disabled() -> None:
    run = run_with(cluster={"name": "c1", "autoscaler": {"enabled": False}})
    assert run.of_type(AUTOSCALER) == []


def test_daskcluster_waits_for_operator_storage_and_namespace(default_run) -> None:
    cluster = default_run.one(DASKCLUSTER)
    needed = [default_run.one(RELEASE), default_run.one(PVC), *default_run.of_type(CRD)]
    ns = next(r for r in default_run.of_type("kubernetes:core/v1:Namespace") if r.name == "namespace")
    for r in [*needed, ns]:
        assert r.urn in cluster.dependencies, f"DaskCluster does not wait for {r.name}"
    assert default_run.one(PVC).dependencies == [ns.urn]


def test_pvc_storage_defaults_to_rwx(default_run) -> None:
    pvc = manifest(default_run.one(PVC))
    assert pvc["spec"] == {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "10Gi"}}}
    assert pvc["metadata"]["name"] == "hats-catalog-pvc" and pvc["metadata"]["namespace"] == "lsdb-test"
    assert default_run.of_type(PV) == []
    run = run_with(storage={"kind": "pvc", "storageClassName": "nfs-client"})
    assert manifest(run.one(PVC))["spec"]["storageClassName"] == "nfs-client"


def test_nfs_storage_is_a_static_pv_bound_by_name() -> None:
    run = run_with(storage={"kind": "nfs", "size": "1Ti", "nfs": {"server": "nfs.local", "path": "/exports/hats"}})
    pv, pvc = manifest(run.one(PV)), manifest(run.one(PVC))
    assert pv["spec"]["nfs"] == {"server": "nfs.local", "path": "/exports/hats"}
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    assert pv["spec"]["mountOptions"] == ["nfsvers=4.1"]
    assert pvc["spec"]["volumeName"] == pv["metadata"]["name"] and pvc["spec"]["storageClassName"] == ""
    assert pv["spec"]["claimRef"] == {"namespace": "lsdb-test", "name": "hats-catalog-pvc"}
    assert run.one(PV).urn in run.one(PVC).dependencies


def test_object_store_credentials_reach_scheduler_and_workers_as_mounted_files() -> None:
    run = run_with(
        ("storage",),
        storage={
            "kind": "objectStore",
            "objectStore": {
                "url": "s3://bucket/catalogs",
                "credentials": {"accessKeyId": "AKIAX", "secretAccessKey": "s3cr3t", "endpointUrl": "http://s3:9000"},
            },
        },
        verify={"enabled": False},
    )
    assert run.of_type(PVC) == [] and run.of_type(PV) == []
    secret = run.named("catalog-storage-object-store")
    assert secret.inputs["stringData"] == {
        "credentials": "[default]\naws_access_key_id = AKIAX\naws_secret_access_key = s3cr3t\n",
        "config": "[default]\nendpoint_url = http://s3:9000\n",
    }
    manifest = dask_cluster(run)
    spec = manifest["spec"]
    for pod in (spec["scheduler"]["spec"], spec["worker"]["spec"]):
        [container] = pod["containers"]
        env = {e["name"]: e for e in container["env"]}
        assert not [e for e in env.values() if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]]
        assert env["AWS_SHARED_CREDENTIALS_FILE"]["value"] == "/var/run/secrets/lsdb-object-store/credentials"
        assert env["AWS_CONFIG_FILE"]["value"] == "/var/run/secrets/lsdb-object-store/config"
        [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == "/var/run/secrets/lsdb-object-store"]
        assert mount["readOnly"] is True
        [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        assert volume["secret"]["secretName"] == "lsdb-cluster-object-store"
    assert "catalog-data" not in str(spec["worker"]["spec"].get("volumes"))
    assert "CKV_K8S_35" not in str(manifest["metadata"].get("annotations"))  # nothing to skip


def test_an_s3_key_with_a_line_break_fails_naming_the_key_never_the_value() -> None:
    # Written into an AWS ini file, a line break would end the value (or add options): refused, value unshown.
    keys = {"accessKeyId": "AKIAX\ncredential_process = /bin/evil", "secretAccessKey": "s"}
    with pytest.raises(ValueError) as exc:
        run_with(("storage",), storage={"kind": "objectStore", "objectStore": {"url": "s3://b/c", "credentials": keys}})
    assert "storage.objectStore.credentials.accessKeyId holds a line break" in str(exc.value)
    assert "pulumi config set --path --secret storage.objectStore.credentials.accessKeyId" in str(exc.value)
    assert "evil" not in str(exc.value)


def test_abfs_keys_stay_variables_and_the_pods_carry_exactly_that_skip() -> None:
    from components.object_store_keys import ENV_SKIP

    groups = {"highmem": {"replicas": 1, "memory": "8Gi", "cpu": "2", "threads": 1, "cpuLimit": "2"}}
    run = run_with(
        ("storage",),
        storage={"kind": "objectStore", "objectStore": {"url": "abfs://c/cats", "credentials": {"accountKey": "k"}}},
        cluster={"workers": {"cpuLimit": "2"}, "workerGroups": groups},
    )
    cluster = dask_cluster(run)
    for pod in (cluster["spec"]["scheduler"]["spec"], cluster["spec"]["worker"]["spec"]):
        ref = {"name": "lsdb-cluster-object-store", "key": "AZURE_STORAGE_ACCOUNT_KEY"}
        assert {"name": ref["key"], "valueFrom": {"secretKeyRef": ref}} in pod["containers"][0]["env"]
    # The skip, with its reason, where the operator copies it onto the Deployments (CPU limits set: no other skip).
    assert cluster["metadata"]["annotations"] == {"checkov.io/skip1": ENV_SKIP}
    assert manifest(run.one(WORKER_GROUP))["metadata"]["annotations"] == {"checkov.io/skip1": ENV_SKIP}


def test_gcs_key_is_mounted_as_a_file() -> None:
    run = run_with(
        ("storage",),
        storage={
            "kind": "objectStore",
            "objectStore": {"url": "gs://b/c", "credentials": {"serviceAccountJson": "{}"}},
        },
    )
    worker = dask_cluster(run)["spec"]["worker"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in worker["env"]}
    assert env["GOOGLE_APPLICATION_CREDENTIALS"] == "/var/run/secrets/lsdb-object-store/service-account.json"
    assert any(m["mountPath"] == "/var/run/secrets/lsdb-object-store" for m in worker["volumeMounts"])


def test_storage_none_mounts_nothing() -> None:
    run = run_with(storage={"kind": "none"}, security={"tls": False})
    worker = dask_cluster(run)["spec"]["worker"]["spec"]
    assert [v["name"] for v in worker["volumes"]] == ["dask-scratch", "tmp", "home"]  # the writable emptyDirs
    assert run.of_type(PVC) == [] and run.of_type(SECRET) == []


def test_every_child_is_parented_to_its_component(default_run) -> None:
    components = {r.urn: r.type for r in default_run.resources if r.type.startswith("lsdb-k8s:")}
    expected = {
        PVC: "lsdb-k8s:storage:CatalogStorage",
        RELEASE: "lsdb-k8s:operator:DaskOperator",
        CRD: "lsdb-k8s:operator:DaskOperator",
        DASKCLUSTER: "lsdb-k8s:cluster:LsdbDaskCluster",
        AUTOSCALER: "lsdb-k8s:cluster:LsdbDaskCluster",
        "docker:index/image:Image": "lsdb-k8s:image:LsdbImage",
    }
    for r in default_run.resources:
        if r.type in expected:
            assert components.get(r.parent) == expected[r.type], r.name


def test_verification_follows_the_cluster_and_takes_the_verify_config() -> None:
    run = shipped_stack("dev")
    verification = run.one("pulumi-python:dynamic/lsdb:Verification")
    cluster, scaler = run.one(DASKCLUSTER), run.one(AUTOSCALER)
    assert {cluster.urn, scaler.urn} <= set(verification.dependencies)
    inputs = verification.inputs
    assert inputs["catalogPath"] == "/data/sample" and inputs["connect"] == "portForward"
    live = run.outputs["clusterName"]
    assert inputs["clusterName"] == live and live.startswith("lsdb-dev-") and inputs["namespace"] == "lsdb-dev"
    assert inputs["kubeContext"] == "kind-lsdb-dev"
    assert inputs["imageRef"] == run.outputs["imageRef"]
    # The verification checks the candidate through its own Service, never the stable one.
    assert inputs["schedulerAddress"] == f"tcp://{live}-scheduler.lsdb-dev.svc.cluster.local:8786"
    assert (inputs["ra"], inputs["dec"], inputs["radiusArcsec"]) == (180, 0, 3600)
    assert inputs["columns"] == ["id", "ra", "dec", "phot_g_mean_mag"]
    assert len(inputs["clusterSpecHash"]) == 64
    assert set(run.outputs["verification"]) == set(OUTPUT_KEYS)  # one list of output keys


SELECTOR_PATCH = "kubernetes:core/v1:ServicePatch"


def test_verification_disabled_still_gates_the_switch(default_run) -> None:
    """issue 20 defect 3: with verify.enabled false the selector patch waits for the gate (the same resource,
    connect and workers stages only, no catalog), never for the DaskCluster alone; it exports no verification."""
    gate = default_run.one("pulumi-python:dynamic/lsdb:Verification")
    assert gate.urn in default_run.one(SELECTOR_PATCH).dependencies
    assert default_run.one(DASKCLUSTER).urn in gate.dependencies
    inputs = gate.inputs
    assert inputs["stages"] == "gate" and inputs.get("catalogPath") is None
    assert inputs["clusterName"] == default_run.outputs["clusterName"] and len(inputs["clusterSpecHash"]) == 64
    assert set(CLUSTER_RERUN_KEYS) - {"clusterUid"} <= set(inputs)  # a new cluster re-runs it (uid: the API's)
    assert inputs["minWorkers"] == 1 and inputs["connect"] == "portForward"
    assert "verification" not in default_run.outputs


def test_the_gate_waits_for_the_workers_the_cluster_always_has() -> None:
    """verify.minWorkers, or fewer when the autoscaler may scale the default group to zero (nothing to refuse)."""
    kind = "pulumi-python:dynamic/lsdb:Verification"
    floor0 = run_with(cluster={"name": "c1", "autoscaler": {"minimum": 0, "maximum": 3}})
    assert floor0.one(kind).inputs["minWorkers"] == 0
    groups = {"name": "c1", "autoscaler": {"minimum": 0, "maximum": 3}, "workerGroups": {"hm": {"replicas": 2}}}
    asked = run_with(cluster=groups, verify={"enabled": False, "minWorkers": 3, "catalogPath": "/data/x"})
    gate = asked.one(kind).inputs
    assert gate["minWorkers"] == 2 and gate.get("catalogPath") is None  # a disabled section's catalog is not used


def test_the_selector_patch_waits_for_the_verification() -> None:
    run = run_with(verify={"catalogPath": "/data/x"})
    verification = run.one("pulumi-python:dynamic/lsdb:Verification")
    assert verification.inputs["stages"] == "all"
    assert verification.urn in run.one(SELECTOR_PATCH).dependencies


def test_cluster_spec_hash_changes_with_the_cluster() -> None:
    a = run_with(cluster={"name": "c1"}, verify={"catalogPath": "/data/x"})
    b = run_with(cluster={"name": "c1", "workers": {"memory": "5Gi"}}, verify={"catalogPath": "/data/x"})
    c = run_with(cluster={"name": "c1"}, verify={"catalogPath": "/data/x"})
    kind = "pulumi-python:dynamic/lsdb:Verification"
    hashes = [r.one(kind).inputs["clusterSpecHash"] for r in (a, b, c)]
    assert hashes[0] == hashes[2] != hashes[1]


def test_program_evaluation_does_not_import_heavy_packages() -> None:
    # Run in a fresh interpreter: the test process itself has imported dask long ago.
    import subprocess
    import sys

    code = (
        "import sys; from tests.program_helpers import run_stack; run_stack('dev'); "
        "print(sorted(m for m in ('lsdb', 'dask', 'pandas', 'distributed', 'hats', 'pyarrow') if m in sys.modules))"
    )
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr


def test_program_is_a_function_of_the_validated_config() -> None:
    # Tests (and other programs) call program(config) under Pulumi's public mock API, without __main__.py.
    import pulumi

    from components.config import parse_stack_config
    from components.program import program

    config = parse_stack_config(
        {
            "namespace": "lsdb-fn",
            "cluster": {"name": "fn-cluster"},
            "image": {"ref": "ghcr.io/acme/lsdb@sha256:" + "a" * 64},
            "verify": {"enabled": False},
        }
    )
    exported: dict[str, object] = {}

    def entry() -> None:
        for key, value in program(config).items():
            pulumi.export(key, value)
            exported[key] = value

    run = run_program({}, stack="fn", program=entry)
    assert run.outputs["clusterName"].startswith("fn-cluster-") and run.outputs["namespace"] == "lsdb-fn"
    assert set(exported) >= {"schedulerAddress", "imageRef", "operatorVersion"}
    assert run.one(DASKCLUSTER).inputs["metadata"]["namespace"] == "lsdb-fn"


def test_components_wait_for_components_not_their_internals() -> None:
    # The cluster is given depends_on=[operator, namespace, storage, image]; its children wait for every leaf
    # of those components (CRDs, Helm release, PVC), because a component's own depends_on does not reach them.
    run = shipped_stack("dev")  # installs the operator too
    cluster = run.one(DASKCLUSTER)
    leaves = {
        r.urn
        for r in run.resources
        if r.custom
        and r.type
        in (
            "kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition",
            "kubernetes:helm.sh/v3:Release",
            "kubernetes:core/v1:PersistentVolumeClaim",
            "kubernetes:core/v1:PersistentVolume",
            "kubernetes:core/v1:Namespace",
        )
    }
    assert len(leaves) >= 8  # 4 CRDs, the operator release and namespace, the cluster namespace, PV, PVC
    assert leaves <= set(cluster.dependencies)
    component = run.one("lsdb-k8s:cluster:LsdbDaskCluster")
    assert set(component.dependencies) >= leaves  # the component itself records the same waits


# --- extra worker groups and the scheduler's disruption budget (issue 12) ----------------------------------

WORKER_GROUP = "kubernetes:kubernetes.dask.org/v1:DaskWorkerGroup"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"
GROUPS = {"highmem": {"replicas": 2, "memory": "16Gi", "cpu": "4", "threads": 1, "cpuLimit": "4"}}


def test_worker_group_follows_the_live_cluster_with_the_default_workers_container() -> None:
    run = run_with(cluster={"name": "lsdb-wg", "workerGroups": GROUPS})
    cluster, group = dask_cluster(run), manifest(run.one(WORKER_GROUP))
    live = cluster["metadata"]["name"]
    assert group["metadata"]["name"] == f"{live}-highmem" and group["spec"]["cluster"] == live
    assert run.outputs["workerGroups"] == {"highmem": f"{live}-highmem"} and live.startswith("lsdb-wg-")
    worker = group["spec"]["worker"]
    assert worker["replicas"] == 2 and worker["metadata"]["labels"] == {"lsdb-k8s/worker-group": "highmem"}
    (container,) = worker["spec"]["containers"]
    (default,) = cluster["spec"]["worker"]["spec"]["containers"]
    # Same image, mounts, env, ports and security; the group's own threads, resources and memory limit.
    for key in ("image", "volumeMounts", "securityContext", "ports"):
        assert container[key] == default[key], key
    assert container.get("env") == default.get("env")
    assert worker["spec"]["volumes"] == cluster["spec"]["worker"]["spec"]["volumes"]
    assert worker["spec"]["securityContext"] == cluster["spec"]["worker"]["spec"]["securityContext"]
    assert container["resources"] == {
        "requests": {"cpu": "4", "memory": "16Gi"},
        "limits": {"memory": "16Gi", "cpu": "4"},
    }
    args = container["args"]
    assert args[args.index("--nthreads") + 1] == "1" and args[args.index("--memory-limit") + 1] == str(16 * 2**30)
    # A group with limits.cpu puts the scheduler's CPU as its limit too (quota namespaces need both).
    assert cluster["spec"]["scheduler"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] == "2"


def test_worker_group_lifecycle_follows_the_cluster_digest() -> None:
    run = run_with(cluster={"name": "lsdb-wg", "workerGroups": GROUPS})
    group, cluster = run.one(WORKER_GROUP), run.one(DASKCLUSTER)
    assert cluster.urn in group.dependencies  # the operator looks the cluster up when the group is created
    assert group.parent == run.one("lsdb-k8s:cluster:LsdbDaskCluster").urn
    live = dask_cluster(run)["metadata"]["name"]
    digest = live.rsplit("-", 1)[1]
    assert group.urn.endswith(f"-workergroup-highmem-{digest}")  # a new cluster registers new groups
    # The operator ignores in-place pod template changes: a group's template is part of the cluster digest, and
    # so are its replicas (a group is never scaled in place: issue 20, tests/test_worker_groups_scale.py).
    bigger = {"highmem": {**GROUPS["highmem"], "memory": "24Gi"}}
    more = {"highmem": {**GROUPS["highmem"], "replicas": 5}}
    names = [
        dask_cluster(run_with(cluster={"name": "lsdb-wg", "workerGroups": g}))["metadata"]["name"]
        for g in (bigger, more, GROUPS)
    ]
    assert names[0] != live and names[1] != live and names[2] == live


def test_worker_group_changes_rerun_the_verification() -> None:
    kind = "pulumi-python:dynamic/lsdb:Verification"
    base = {"name": "c1", "workerGroups": GROUPS}
    more = {"name": "c1", "workerGroups": {"highmem": {**GROUPS["highmem"], "memory": "24Gi"}}}
    a, b, c = (run_with(cluster=x, verify={"catalogPath": "/data/x"}) for x in (base, more, base))
    hashes = [r.one(kind).inputs["clusterSpecHash"] for r in (a, b, c)]
    assert hashes[0] == hashes[2] != hashes[1]


def test_no_worker_groups_registers_none() -> None:
    run = run_with()
    assert run.of_type(WORKER_GROUP) == [] and run.outputs["workerGroups"] == {}


def test_scheduler_disruption_budget_selects_the_live_scheduler_pod() -> None:
    run = run_with(cluster={"name": "lsdb-pdb"})
    pdb, cluster = manifest(run.one(PDB)), dask_cluster(run)
    live = cluster["metadata"]["name"]
    assert pdb["spec"]["maxUnavailable"] == 0
    assert pdb["spec"]["selector"]["matchLabels"] == {"dask.org/cluster-name": live, "dask.org/component": "scheduler"}
    assert pdb["metadata"]["namespace"] == cluster["metadata"]["namespace"]
    assert run.one(DASKCLUSTER).urn in run.one(PDB).dependencies
    # The operator labels the scheduler pod exactly so (the e2e test runs its builders; here: its constants).
    from components.constants import CLUSTER_NAME_LABEL, COMPONENT_LABEL

    assert set(pdb["spec"]["selector"]["matchLabels"]) == {CLUSTER_NAME_LABEL, COMPONENT_LABEL}


def test_scheduler_disruption_budget_can_be_turned_off() -> None:
    run = run_with(cluster={"name": "lsdb-pdb", "scheduler": {"disruptionBudget": False}})
    assert run.of_type(PDB) == []


# --- the platform stack and adopting what guide users already have -------------------------------------------


def test_platform_stack_installs_only_the_operator_and_its_crds() -> None:
    run = shipped_stack("platform")
    kinds = sorted(r.type for r in run.resources if r.custom and not r.type.startswith("pulumi:providers:"))
    assert kinds == [
        *["kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition"] * 4,
        "kubernetes:core/v1:Namespace",  # the operator's own
        "kubernetes:helm.sh/v3:Release",
        "pulumi-python:dynamic/lsdb:OperatorGuard",  # refuses to destroy the operator while DaskClusters exist
    ]
    assert {"operatorNamespace", "operatorVersion"} == set(run.outputs)
    assert run.outputs["operatorVersion"] == operator_version()


def test_the_platform_stack_does_not_check_the_client_against_an_image_it_does_not_build(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import components.program

    checked: list[str] = []
    monkeypatch.setattr(components.program, "enforce_client_environment", lambda image: checked.append("x") or [])
    run_stack("platform")
    assert checked == []
    run_with()  # a stack that builds the image (without the operator: its CRDs make a mock run ~5x slower)
    assert checked == ["x"]


def test_staging_and_prod_take_the_operator_from_the_platform_stack() -> None:
    for stack in ("staging", "prod"):
        run = shipped_stack(stack)
        types = {r.type for r in run.resources}
        assert "kubernetes:helm.sh/v3:Release" not in types and not any("CustomResourceDefinition" in t for t in types)
        (ref,) = run.of_type("pulumi:pulumi:StackReference")
        assert ref.inputs["name"] == "organization/lsdb-k8s/platform"  # <stack> resolves in this organization
        assert run.outputs["operatorNamespace"] == "dask-operator"


def test_existing_namespace_and_claim_are_used_not_managed() -> None:
    run = run_with(
        namespace="guide-ns",
        createNamespace=False,
        storage={"kind": "existingClaim", "claimName": "hats-catalog-pvc"},
    )
    types = {r.type for r in run.resources}
    assert "kubernetes:core/v1:PersistentVolumeClaim" not in types
    assert "kubernetes:core/v1:PersistentVolume" not in types
    namespaces = [r.inputs["metadata"]["name"] for r in run.of_type("kubernetes:core/v1:Namespace")]
    assert "guide-ns" not in namespaces  # only the operator's own namespace is created
    spec = dask_cluster(run)["spec"]
    volumes = spec["worker"]["spec"]["volumes"]
    assert {"name": "catalog-data", "persistentVolumeClaim": {"claimName": "hats-catalog-pvc"}} in volumes
    mounts = spec["worker"]["spec"]["containers"][0]["volumeMounts"]
    assert {"name": "catalog-data", "mountPath": "/data"} in mounts
    assert dask_cluster(run)["metadata"]["namespace"] == "guide-ns"


def test_operator_image_mirror_keeps_the_locked_tag() -> None:
    run = run_with(operator={"image": "registry.internal/dask/dask-kubernetes-operator"})
    (release,) = run.of_type("kubernetes:helm.sh/v3:Release")
    assert release.inputs["values"]["image"] == {
        "name": "registry.internal/dask/dask-kubernetes-operator",
        "tag": operator_version(),
    }


def test_verification_reruns_with_the_operator_version() -> None:
    verification = shipped_stack("dev").one("pulumi-python:dynamic/lsdb:Verification")
    assert verification.inputs["operatorVersion"] == operator_version()


# --- security (issue 11) ---------------------------------------------------------------------------------------

NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
SECURITY = "lsdb-k8s:security:ClusterSecurity"


def test_security_is_created_before_the_cluster_and_parents_its_children(default_run) -> None:
    """First `pulumi up`: NetworkPolicies, the TLS Secret and the pulumi-tls resources are children of
    ClusterSecurity, and the DaskCluster waits for all of them (its pods mount the Secret)."""
    security = default_run.one(SECURITY)
    children = [r for r in default_run.resources if r.parent == security.urn]
    assert sorted(r.type for r in children) == sorted(
        [NETWORK_POLICY] * 4
        + [SECRET]
        + ["tls:index/privateKey:PrivateKey"] * 3
        + ["tls:index/selfSignedCert:SelfSignedCert"]
        + ["tls:index/certRequest:CertRequest"] * 2
        + ["tls:index/locallySignedCert:LocallySignedCert"] * 2
    )
    cluster = default_run.one(DASKCLUSTER)
    for child in children:
        assert child.urn in cluster.dependencies, child.name
    secret = next(r for r in children if r.type == SECRET)
    assert secret.inputs["type"] == "kubernetes.io/tls"
    assert set(secret.inputs["stringData"]) == {"ca.crt", "tls.crt", "tls.key"}
    assert SECRET_SIG in json.dumps(secret.raw_inputs["stringData"]), "the Secret's values travel as Pulumi secrets"


def test_client_bundle_is_a_secret_export_and_a_secret_verification_input() -> None:
    run = run_with(verify={"enabled": True, "catalogPath": "/data/x"})
    assert "clientTls" in run.secret_outputs
    assert run.outputs["schedulerAddress"].startswith("tls://")
    verification = run.one("pulumi-python:dynamic/lsdb:Verification")
    assert set(verification.inputs["clientTls"]) == {"ca", "cert", "key"}
    assert verification.raw_inputs["clientTls"].get(SECRET_SIG) == SECRET_VALUE


def test_tls_off_registers_no_certificates_and_no_bundle() -> None:
    """Turning TLS off removes the certificates, the Secret, the export and the pods' TLS settings."""
    run = run_with(security={"tls": False})
    assert [r for r in run.resources if r.type.startswith("tls:")] == [] and run.of_type(SECRET) == []
    assert "clientTls" not in run.outputs
    spec = dask_cluster(run)["spec"]
    assert "--protocol" not in spec["scheduler"]["spec"]["containers"][0]["args"]
    assert "env" not in spec["worker"]["spec"]["containers"][0]  # the operator injects its tcp:// address


def test_pods_are_hardened() -> None:
    spec = dask_cluster(run_with())["spec"]
    for pod in (spec["scheduler"]["spec"], spec["worker"]["spec"]):
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsUser"] >= 10000 and pod["securityContext"]["runAsGroup"] >= 10000
        (container,) = pod["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/scratch", "/tmp", "/home/dask"} <= mounts
    (worker,) = spec["worker"]["spec"]["containers"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert worker[probe]["httpGet"] == {"port": "http-dashboard", "path": "/health"}
    assert [worker["args"][worker["args"].index(f) + 1] for f in ("--worker-port", "--nanny-port")] == ["8789", "8790"]


def test_the_mock_runtime_runs_after_asyncio_run_left_no_event_loop() -> None:
    import asyncio

    async def nothing() -> None:
        return None

    asyncio.run(nothing())  # what a Dask probe in another test does: the thread is left without a current loop
    r = run_with()
    assert [m["metadata"]["name"] for m in map(manifest, r.of_type("kubernetes:core/v1:Service"))] == [
        "lsdb-cluster-scheduler"
    ]
