"""The DaskCluster and its companions as components/cluster.py builds them, called directly: what makes a new
cluster (`<h>`) and what updates the live one in place, what the operator's pods get (ports, probes, environment,
mounts, TLS, identity, resources), the extra worker groups, the autoscaler and the scheduler's disruption budget,
and `LsdbDaskCluster` alone under the mocks. Fast enough for mutation testing (docs/mutation.md);
tests/test_program.py, tests/test_worker_groups_scale.py and tests/test_e2e*.py check the same through the whole
program and with the rendered pods running as Dask processes."""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

import pulumi
import pytest
from google.protobuf import empty_pb2, json_format

from components import scheduler_downscale
from components.cluster import (
    ClusterManifests,
    ClusterSpec,
    LsdbDaskCluster,
    cluster_manifests,
    in_cluster_address,
    spec_digest,
    with_image,
)
from components.config import ClusterConfig, parse_stack_config
from components.object_store_keys import PodStorage
from components.storage import pod_storage
from tools.mock_runtime import ProgramRun, RecordingMonitor, run_program

IMAGE = "ghcr.io/acme/lsdb-dask:content-1"
GiB = 2**30
ROLE_ARN = "arn:aws:iam::123456789012:role/lsdb-reader"


def config(**cluster: Any) -> ClusterConfig:
    raw = {"verify": {"enabled": False}, "image": {"repository": "r/x"}, "cluster": {"name": "lsdb-x", **cluster}}
    return parse_stack_config(raw).cluster


def build(
    cluster: ClusterConfig | None = None,
    storage: PodStorage | None = None,
    image: str = IMAGE,
    **spec: Any,
) -> ClusterManifests:
    return cluster_manifests(ClusterSpec(cluster or config(), "astro", storage or PodStorage(), **spec), image)


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return list(pod["spec"]["containers"])


def scheduler(m: ClusterManifests) -> dict[str, Any]:
    (container,) = containers(m.dask_cluster["spec"]["scheduler"])
    return container


def worker(m: ClusterManifests, group: str | None = None) -> dict[str, Any]:
    pod = m.dask_cluster["spec"]["worker"] if group is None else m.worker_groups[group]["spec"]["worker"]
    (container,) = containers(pod)
    return container


def env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def mounts(container: dict[str, Any]) -> dict[str, str]:
    return {m["mountPath"]: m["name"] for m in container["volumeMounts"]}


def arg(container: dict[str, Any], flag: str) -> str:
    args = container["args"]
    return str(args[args.index(flag) + 1])


# --- <h>: what makes a new cluster ------------------------------------------------------------------------------


def test_the_live_cluster_is_named_by_the_digest_of_its_spec() -> None:
    m = build()
    assert len(m.digest) == 8 and int(m.digest, 16) >= 0
    assert m.live_name == f"lsdb-x-{m.digest}" == m.dask_cluster["metadata"]["name"]
    assert build().digest == m.digest  # deterministic
    # Whatever order a builder writes keys in, the same spec is the same cluster.
    assert spec_digest({"a": 1, "b": {"c": 2, "d": 3}}) == spec_digest({"b": {"d": 3, "c": 2}, "a": 1})


NEW_CLUSTER = {
    "the image": lambda: build(image=IMAGE + "-2"),
    "TLS": lambda: build(tls_secret="lsdb-x-tls"),
    "the pull secret": lambda: build(pull_secret="regcred"),
    "worker memory": lambda: build(config(workers={"memory": "8Gi"})),
    "worker threads": lambda: build(config(workers={"threads": 1})),
    "scheduler memory": lambda: build(config(scheduler={"memory": "8Gi"})),
    "a new worker group": lambda: build(config(workerGroups={"highmem": {"memory": "16Gi"}})),
    "an identity": lambda: build(storage=PodStorage(pod_annotations={"lsdb-k8s/workload-identity": "aws:x"})),
    "the catalog mount": lambda: build(storage=PodStorage(mounts=[{"name": "c", "mountPath": "/data"}])),
}


@pytest.mark.parametrize("change", list(NEW_CLUSTER))
def test_a_change_the_operator_ignores_makes_a_new_cluster(change: str) -> None:
    changed = NEW_CLUSTER[change]()
    assert changed.digest != build().digest
    assert changed.spec_hash != build().spec_hash


def test_a_worker_groups_template_and_replicas_make_a_new_cluster() -> None:
    one = build(config(workerGroups={"highmem": {"memory": "16Gi", "replicas": 1}}))
    more = build(config(workerGroups={"highmem": {"memory": "16Gi", "replicas": 2}}))
    bigger = build(config(workerGroups={"highmem": {"memory": "32Gi", "replicas": 1}}))
    assert len({one.digest, more.digest, bigger.digest}) == 3


@pytest.mark.parametrize(
    "cluster",
    [{"workers": {"replicas": 7}}, {"idleTimeoutSeconds": 3600}, {"autoscaler": {"minimum": 0, "maximum": 9}},
     {"autoscaler": {"enabled": False}}, {"scheduler": {"disruptionBudget": False}}],
)  # fmt: skip
def test_what_the_operator_reconciles_updates_the_live_cluster_in_place(cluster: dict[str, Any]) -> None:
    base, changed = build(), build(config(**cluster))
    assert changed.digest == base.digest and changed.live_name == base.live_name
    # The verification runs again when anything of the cluster changes.
    assert changed.spec_hash != base.spec_hash or "disruptionBudget" in json.dumps(cluster)


def test_the_reconciled_values_reach_the_live_cluster() -> None:
    m = build(config(workers={"replicas": 7}, idleTimeoutSeconds=3600, autoscaler={"minimum": 1, "maximum": 9}))
    assert m.dask_cluster["spec"]["worker"]["replicas"] == 7 and m.dask_cluster["spec"]["idleTimeout"] == 3600
    assert m.autoscaler == {
        "apiVersion": "kubernetes.dask.org/v1",
        "kind": "DaskAutoscaler",
        "metadata": {"name": m.live_name, "namespace": "astro", "labels": {"app.kubernetes.io/part-of": "lsdb-k8s"}},
        "spec": {"cluster": m.live_name, "minimum": 1, "maximum": 9},
    }
    assert build(config(autoscaler={"enabled": False})).autoscaler is None


# --- the scheduler ----------------------------------------------------------------------------------------------


def test_the_scheduler_service_selects_the_live_clusters_scheduler_on_the_containers_ports() -> None:
    m = build()
    service = m.dask_cluster["spec"]["scheduler"]["service"]
    assert service["type"] == "ClusterIP"
    assert service["selector"] == {"dask.org/cluster-name": m.live_name, "dask.org/component": "scheduler"}
    ports = {p["name"]: (p["containerPort"], p["protocol"]) for p in scheduler(m)["ports"]}
    assert ports == {"tcp-comm": (8786, "TCP"), "http-dashboard": (8787, "TCP")}
    assert service["ports"] == [
        {"name": name, "protocol": "TCP", "port": port, "targetPort": name} for name, (port, _) in ports.items()
    ]
    assert scheduler(m)["args"] == ["dask", "scheduler", "--port", "8786", "--dashboard-address", ":8787"]
    assert m.dask_cluster["metadata"]["namespace"] == "astro"
    assert m.dask_cluster["metadata"]["labels"] == {"app.kubernetes.io/part-of": "lsdb-k8s",
                                                    "app.kubernetes.io/name": "lsdb-x"}  # fmt: skip
    assert (m.dask_cluster["apiVersion"], m.dask_cluster["kind"]) == ("kubernetes.dask.org/v1", "DaskCluster")


def test_the_scheduler_serves_the_api_and_metrics_routes_and_offers_only_default_workers() -> None:
    m = build()
    variables = env(scheduler(m))
    routes = json.loads(variables["DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES"])  # a list literal, as Dask parses it
    assert {
        "distributed.http.scheduler.api",
        "distributed.http.scheduler.prometheus",
        "distributed.http.health",
    } <= set(routes)
    (preload,) = json.loads(variables["DASK_DISTRIBUTED__SCHEDULER__PRELOAD"].replace("$$", "$"))
    assert preload == open(scheduler_downscale.__file__).read()  # noqa: SIM115
    assert "$(" not in variables["DASK_DISTRIBUTED__SCHEDULER__PRELOAD"].replace("$$", "")  # no Kubernetes expansion
    assert variables[scheduler_downscale.PREFIX_ENV] == f"{m.live_name}-default-worker-"
    names = [e["name"] for e in scheduler(m)["env"]]
    assert names.index(scheduler_downscale.PREFIX_ENV) == names.index("DASK_DISTRIBUTED__SCHEDULER__PRELOAD") + 1


def test_the_scheduler_is_probed_on_its_dashboard_port() -> None:
    s = scheduler(build())
    assert s["readinessProbe"] == {"httpGet": {"port": "http-dashboard", "path": "/health"}, "initialDelaySeconds": 0,
                                   "periodSeconds": 1, "timeoutSeconds": 300}  # fmt: skip
    assert s["livenessProbe"] == {"httpGet": {"port": "http-dashboard", "path": "/health"}, "initialDelaySeconds": 15,
                                  "periodSeconds": 20}  # fmt: skip


def test_resources_cpu_limits_only_where_a_group_asks() -> None:
    m = build(config(workers={"cpu": "3", "memory": "8Gi"}, scheduler={"cpu": "1", "memory": "2Gi"}))
    assert worker(m)["resources"] == {"requests": {"cpu": "3", "memory": "8Gi"}, "limits": {"memory": "8Gi"}}
    assert scheduler(m)["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "2Gi"}}
    limited = build(config(workerGroups={"q": {"cpuLimit": "4", "memory": "8Gi"}}, scheduler={"cpu": "1"}))
    assert worker(limited, "q")["resources"]["limits"] == {"memory": "8Gi", "cpu": "4"}
    assert "cpu" not in worker(limited)["resources"]["limits"]
    # A quota that needs limits.cpu on a group needs it on the scheduler too.
    assert scheduler(limited)["resources"]["limits"]["cpu"] == "1"


def test_the_scanner_skip_of_cpu_limits_follows_each_custom_resources_own_limit() -> None:
    m = build(config(workerGroups={"q": {"cpuLimit": "4"}, "r": {}}))
    skip = m.dask_cluster["metadata"]["annotations"]["checkov.io/skip1"]
    assert skip.startswith("CKV_K8S_11=")  # the check's id first, then the reason
    assert "cluster.workers.cpuLimit" in skip and "cluster.workerGroups.<g>.cpuLimit" in skip  # what to set instead
    assert "annotations" not in m.worker_groups["q"]["metadata"]
    assert m.worker_groups["r"]["metadata"]["annotations"] == m.dask_cluster["metadata"]["annotations"]
    assert "annotations" not in build(config(workers={"cpuLimit": "2"})).dask_cluster["metadata"]


def test_the_storages_scanner_skips_reach_the_cluster_and_every_worker_group() -> None:
    storage = PodStorage(scanner_skips=("CKV_K8S_35=abfs reads its key from the environment",))
    m = build(config(workers={"cpuLimit": "2"}, workerGroups={"q": {"cpuLimit": "4"}, "r": {}}), storage)
    assert m.dask_cluster["metadata"]["annotations"] == {"checkov.io/skip1": storage.scanner_skips[0]}
    assert m.worker_groups["q"]["metadata"]["annotations"] == {"checkov.io/skip1": storage.scanner_skips[0]}
    r = m.worker_groups["r"]["metadata"]["annotations"]  # its own CPU skip first, then the storage's
    assert r["checkov.io/skip1"].startswith("CKV_K8S_11=") and r["checkov.io/skip2"] == storage.scanner_skips[0]


# --- the workers ------------------------------------------------------------------------------------------------


def test_the_worker_runs_with_the_groups_threads_and_memory_on_named_ports() -> None:
    w = worker(build(config(workers={"threads": 1, "memory": "8Gi"})))
    assert w["name"] == "worker" and w["image"] == IMAGE
    assert w["args"][:2] == ["dask", "worker"]
    assert arg(w, "--name") == "$(DASK_WORKER_NAME)"  # the operator's variable, expanded by Kubernetes
    assert arg(w, "--nthreads") == "1" and arg(w, "--memory-limit") == str(8 * GiB)
    assert arg(w, "--local-directory") == "/scratch"
    ports = {p["name"]: p["containerPort"] for p in w["ports"]}
    assert ports == {"http-dashboard": 8788, "tcp-worker": 8789, "tcp-nanny": 8790}
    assert arg(w, "--dashboard-address") == ":8788" and arg(w, "--worker-port") == "8789"
    assert arg(w, "--nanny-port") == "8790"
    assert {p["protocol"] for p in w["ports"]} == {"TCP"}
    health = {"port": "http-dashboard", "path": "/health"}
    assert w["readinessProbe"] == {"httpGet": health, "periodSeconds": 5, "timeoutSeconds": 5}
    assert w["livenessProbe"] == {"httpGet": health, "initialDelaySeconds": 15, "periodSeconds": 20,
                                  "timeoutSeconds": 10, "failureThreshold": 6}  # fmt: skip


def test_every_pod_is_hardened_with_only_scratch_space_writable() -> None:
    m = build(config(workerGroups={"g": {}}))
    pods = [
        m.dask_cluster["spec"]["scheduler"],
        m.dask_cluster["spec"]["worker"],
        m.worker_groups["g"]["spec"]["worker"],
    ]
    for pod in pods:
        spec = pod["spec"]
        assert spec["automountServiceAccountToken"] is False
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] >= 10000
        (container,) = spec["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert mounts(container) == {"/scratch": "dask-scratch", "/tmp": "tmp", "/home/dask": "home"}
        assert {v["name"]: v for v in spec["volumes"]} == {
            n: {"name": n, "emptyDir": {}} for n in mounts(container).values()
        }
        assert (
            "serviceAccountName" not in spec
            and "imagePullSecrets" not in spec
            and "env" not in (container if container["name"] == "worker" else {})
        )


def test_every_container_is_named_as_kubernetes_requires_with_its_own_security_context() -> None:
    m = build(config(workerGroups={"g": {}}))
    built = [scheduler(m), worker(m), worker(m, "g")]
    # The API server refuses a container whose name is not a lowercase RFC 1123 label.
    assert [c["name"] for c in built] == ["scheduler", "worker", "worker"]
    # Each its own copy: a change to one container's context (a test's, a transformation's) stays in it.
    contexts = [c["securityContext"] for c in built]
    assert len({id(c["capabilities"]) for c in contexts}) == 3 and len({id(c["seccompProfile"]) for c in contexts}) == 3


def test_a_pull_secret_reaches_every_pod() -> None:
    m = build(config(workerGroups={"g": {}}), pull_secret="regcred")
    for pod in (
        m.dask_cluster["spec"]["scheduler"],
        m.dask_cluster["spec"]["worker"],
        m.worker_groups["g"]["spec"]["worker"],
    ):
        assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]


def test_the_catalog_volume_is_mounted_on_workers_only() -> None:
    storage = PodStorage(
        volumes=[{"name": "catalog-data", "persistentVolumeClaim": {"claimName": "hats"}}],
        mounts=[{"name": "catalog-data", "mountPath": "/data"}],
    )
    m = build(config(workerGroups={"g": {}}), storage)
    for w in (worker(m), worker(m, "g")):
        assert mounts(w)["/data"] == "catalog-data"
    for pod in (m.dask_cluster["spec"]["worker"], m.worker_groups["g"]["spec"]["worker"]):
        assert storage.volumes[0] in pod["spec"]["volumes"]
    assert "/data" not in mounts(scheduler(m))
    assert storage.volumes[0] not in m.dask_cluster["spec"]["scheduler"]["spec"]["volumes"]


def test_object_store_credentials_reach_scheduler_and_every_worker() -> None:
    key = {"serviceAccountJson": {"secure": "x"}}
    raw = {"verify": {"enabled": False}, "image": {"repository": "r/x"},
           "storage": {"kind": "objectStore", "objectStore": {"url": "gs://b", "credentials": key}}}  # fmt: skip
    storage = pod_storage(parse_stack_config(raw).storage, "lsdb-x")
    m = build(config(workerGroups={"g": {}}), storage)
    for container in (scheduler(m), worker(m), worker(m, "g")):
        assert mounts(container)["/var/run/secrets/lsdb-object-store"] == "object-store-key"
        assert (
            env(container)["GOOGLE_APPLICATION_CREDENTIALS"]
            == "/var/run/secrets/lsdb-object-store/service-account.json"
        )
    assert storage.volumes[0] in m.dask_cluster["spec"]["scheduler"]["spec"]["volumes"]


def test_a_workload_identity_runs_every_pod_under_its_account_with_its_labels() -> None:
    storage = PodStorage(service_account="lsdb-x-catalog-reader", pod_labels={"azure.workload.identity/use": "true"},
                         pod_annotations={"lsdb-k8s/workload-identity": "azure:id"})  # fmt: skip
    m = build(config(workerGroups={"g": {}}), storage)
    scheduler_pod = m.dask_cluster["spec"]["scheduler"]
    assert scheduler_pod["metadata"] == {"labels": storage.pod_labels, "annotations": storage.pod_annotations}
    for pod in (scheduler_pod, m.dask_cluster["spec"]["worker"], m.worker_groups["g"]["spec"]["worker"]):
        assert pod["spec"]["serviceAccountName"] == "lsdb-x-catalog-reader"
        assert pod["metadata"]["labels"].items() >= storage.pod_labels.items()
        assert pod["metadata"]["annotations"] == storage.pod_annotations
    assert "metadata" not in build().dask_cluster["spec"]["scheduler"]


def test_worker_pods_carry_their_group_and_spread_over_nodes() -> None:
    m = build(config(workerGroups={"highmem": {"memory": "16Gi", "replicas": 2}}))
    default, extra = m.dask_cluster["spec"]["worker"], m.worker_groups["highmem"]["spec"]["worker"]
    assert default["metadata"]["labels"] == {"lsdb-k8s/worker-group": "default"}
    assert extra["metadata"]["labels"] == {"lsdb-k8s/worker-group": "highmem"}
    assert extra["replicas"] == 2 and arg(containers(extra)[0], "--memory-limit") == str(16 * GiB)
    assert containers(extra)[0]["image"] == IMAGE
    other = build(config(workerGroups={"highmem": {}}), image=IMAGE + "-2")
    assert worker(other, "highmem")["image"] == IMAGE + "-2"
    spread = extra["spec"]["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"]
    assert spread == {
        "app.kubernetes.io/name": "lsdb-x",
        "dask.org/component": "worker",
        "lsdb-k8s/worker-group": "highmem",
    }


def test_spot_workers_keep_the_scheduler_off_spot_nodes() -> None:
    m = build(config(workerGroups={"cheap": {"spot": "gcp"}}))
    assert m.worker_groups["cheap"]["spec"]["worker"]["spec"]["nodeSelector"] == {"cloud.google.com/gke-spot": "true"}
    terms = m.dask_cluster["spec"]["scheduler"]["spec"]["affinity"]["nodeAffinity"]
    assert "cloud.google.com/gke-spot" in json.dumps(terms)
    assert "nodeSelector" not in m.dask_cluster["spec"]["worker"]["spec"]


def test_extra_worker_groups_belong_to_the_live_cluster() -> None:
    m = build(config(workerGroups={"highmem": {"memory": "16Gi"}}))
    group = m.worker_groups["highmem"]
    assert (group["apiVersion"], group["kind"]) == ("kubernetes.dask.org/v1", "DaskWorkerGroup")
    assert group["metadata"]["name"] == f"{m.live_name}-highmem" and group["metadata"]["namespace"] == "astro"
    assert group["metadata"]["labels"] == {"app.kubernetes.io/part-of": "lsdb-k8s", "app.kubernetes.io/name": "lsdb-x",
                                           "lsdb-k8s/worker-group": "highmem"}  # fmt: skip
    assert group["spec"]["cluster"] == m.live_name


# --- TLS --------------------------------------------------------------------------------------------------------


def test_tls_every_role_presents_the_certificate_and_workers_dial_the_live_scheduler_over_tls() -> None:
    m = build(config(workerGroups={"g": {}}), tls_secret="lsdb-x-tls")
    assert scheduler(m)["args"][2:4] == ["--protocol", "tls"]
    files = {"ca": "/etc/dask-tls/ca.crt", "cert": "/etc/dask-tls/tls.crt", "key": "/etc/dask-tls/tls.key"}
    address = f"tls://{m.live_name}-scheduler.astro.svc.cluster.local:8786"
    for container in (scheduler(m), worker(m), worker(m, "g")):
        variables = env(container)
        assert variables["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] == "True"
        assert variables["DASK_DISTRIBUTED__COMM__TLS__CA_FILE"] == files["ca"]
        for role in ("SCHEDULER", "WORKER", "CLIENT"):
            assert variables[f"DASK_DISTRIBUTED__COMM__TLS__{role}__CERT"] == files["cert"]
            assert variables[f"DASK_DISTRIBUTED__COMM__TLS__{role}__KEY"] == files["key"]
        assert {"name": "dask-tls", "mountPath": "/etc/dask-tls", "readOnly": True} in container["volumeMounts"]
        assert variables.get("DASK_SCHEDULER_ADDRESS") == (None if container is scheduler(m) else address)
    for pod in (
        m.dask_cluster["spec"]["scheduler"],
        m.dask_cluster["spec"]["worker"],
        m.worker_groups["g"]["spec"]["worker"],
    ):
        assert {"name": "dask-tls", "secret": {"secretName": "lsdb-x-tls", "defaultMode": 0o440}} in pod["spec"][
            "volumes"
        ]


def test_without_tls_the_operator_gives_the_workers_its_address() -> None:
    m = build(config(workerGroups={"g": {}}))
    for container in (scheduler(m), worker(m), worker(m, "g")):
        assert not [k for k in env(container) if "TLS" in k or k == "DASK_SCHEDULER_ADDRESS"]
        assert "/etc/dask-tls" not in mounts(container)


def test_in_cluster_addresses() -> None:
    assert in_cluster_address("s", "n") == "tcp://s.n.svc.cluster.local:8786"
    assert in_cluster_address("s", "n", tls=True) == "tls://s.n.svc.cluster.local:8786"


# --- disruption budget, images ----------------------------------------------------------------------------------


def test_the_scheduler_may_not_be_evicted() -> None:
    m = build()
    assert m.disruption_budget == {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": f"{m.live_name}-scheduler", "namespace": "astro",
                     "labels": {"app.kubernetes.io/part-of": "lsdb-k8s", "app.kubernetes.io/name": "lsdb-x"}},
        "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"dask.org/cluster-name": m.live_name,
                                                                   "dask.org/component": "scheduler"}}},
    }  # fmt: skip
    assert build(config(scheduler={"disruptionBudget": False})).disruption_budget is None


def test_with_image_runs_every_container_on_the_pushed_digest() -> None:
    m = build(config(workerGroups={"g": {}}))
    before = copy.deepcopy(m.dask_cluster)
    pushed = with_image(m.dask_cluster, "r/x@sha256:abc")
    assert m.dask_cluster == before  # a copy
    assert scheduler(m)["image"] == worker(m)["image"] == IMAGE
    assert [c["image"] for p in (pushed["spec"]["scheduler"], pushed["spec"]["worker"]) for c in containers(p)] == [
        "r/x@sha256:abc"
    ] * 2
    group = with_image(m.worker_groups["g"], "r/x@sha256:abc")
    assert containers(group["spec"]["worker"])[0]["image"] == "r/x@sha256:abc"


# --- the component ----------------------------------------------------------------------------------------------


def run_cluster(m: ClusterManifests, outputs: dict[str, Any] | None = None) -> tuple[ProgramRun, LsdbDaskCluster]:
    """LsdbDaskCluster alone under the mocks, waiting for a Secret; `outputs` receives its registered outputs."""
    made: list[LsdbDaskCluster] = []

    def program() -> None:
        wait = pulumi.CustomResource("test:index:Secret", "tls")
        image = pulumi.Output.from_input("r/x@sha256:abc")
        made.append(LsdbDaskCluster("c", m, image, pulumi.ResourceOptions(depends_on=[wait])))

    def register_outputs(monitor: RecordingMonitor, request: Any) -> Any:
        if outputs is not None and request.urn.endswith("::c"):
            outputs.update(json_format.MessageToDict(request.outputs))
        return empty_pb2.Empty()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RecordingMonitor, "RegisterResourceOutputs", register_outputs, raising=False)
        run = run_program({}, program=program)
    return run, made[0]


def test_the_component_registers_every_manifest_under_names_carrying_the_digest() -> None:
    m = build(config(workerGroups={"g": {}}), tls_secret="lsdb-x-tls")
    outputs: dict[str, Any] = {}
    run, component = run_cluster(m, outputs)
    h = m.digest
    assert outputs == {"clusterName": m.live_name, "digest": h, "workerGroups": {"g": f"{m.live_name}-g"}}
    me, wait = run.one("lsdb-k8s:cluster:LsdbDaskCluster"), run.named("tls")
    assert wait.urn in me.dependencies
    cluster, group = run.named(f"c-daskcluster-{h}"), run.named(f"c-workergroup-g-{h}")
    autoscaler, budget = run.named(f"c-daskautoscaler-{h}"), run.named(f"c-scheduler-pdb-{h}")
    assert cluster.type == "kubernetes:kubernetes.dask.org/v1:DaskCluster"
    assert cluster.inputs == with_image(m.dask_cluster, "r/x@sha256:abc")
    assert group.inputs == with_image(m.worker_groups["g"], "r/x@sha256:abc")
    assert autoscaler.inputs == m.autoscaler
    assert budget.type == "kubernetes:policy/v1:PodDisruptionBudget"
    assert {k: budget.inputs[k] for k in ("metadata", "spec")} == {
        k: m.disruption_budget[k] for k in ("metadata", "spec")
    }  # type: ignore[index]
    for child in (cluster, group, autoscaler, budget):
        assert child.parent == me.urn and wait.urn in child.dependencies
    for child in (group, autoscaler, budget):  # created after the cluster the operator adopts them into
        assert cluster.urn in child.dependencies
    assert (component.live_name, component.digest, component.spec_hash) == (m.live_name, h, m.spec_hash)
    assert component.worker_group_names == {"g": f"{m.live_name}-g"}
    assert set(component.worker_groups) == {"g"}
    assert component.autoscaler is not None and component.disruption_budget is not None


def test_the_component_without_autoscaler_groups_or_budget() -> None:
    m = build(config(autoscaler={"enabled": False}, scheduler={"disruptionBudget": False}))
    run, component = run_cluster(m)
    assert [r.type for r in run.resources if r.name != "tls"] == [
        "lsdb-k8s:cluster:LsdbDaskCluster", "kubernetes:kubernetes.dask.org/v1:DaskCluster"
    ]  # fmt: skip
    assert component.autoscaler is None and component.disruption_budget is None and component.worker_groups == {}


def test_the_component_resolves_the_live_name_and_address() -> None:
    outputs: dict[str, Any] = {}

    def program() -> None:
        for tls in (None, "lsdb-x-tls"):
            m = build(tls_secret=tls)
            component = LsdbDaskCluster(f"c{bool(tls)}", m, "r/x@sha256:abc")
            pulumi.export(f"name{bool(tls)}", component.cluster_name)
            pulumi.export(f"address{bool(tls)}", component.candidate_address)
            pulumi.export(f"uid{bool(tls)}", component.cluster_uid)
            outputs[f"live{bool(tls)}"] = m.live_name

    run = run_program({}, program=program)
    for tls in (False, True):
        live = outputs[f"live{tls}"]
        assert run.outputs[f"name{tls}"] == live
        assert run.outputs[f"address{tls}"] == in_cluster_address(f"{live}-scheduler", "astro", tls)
        assert uuid.UUID(run.outputs[f"uid{tls}"])  # the uid the API server gave
