"""LsdbDaskCluster: the DaskCluster (and DaskAutoscaler) custom resources the operator turns into pods, and
StableEndpoint: the program-owned Service `<cluster.name>-scheduler`, and StableEndpointSelector: the patch that
points it at the live cluster once that cluster passed its verification.

Blue/green. The pinned operator applies nothing of a changed DaskCluster but `spec.worker.replicas` (its controller
builds the scheduler, its Service and the worker group once, at create). So the DaskCluster is named
`<cluster.name>-<h>`, `<h>` = `cluster_spec_digest`, a digest of everything the operator does not reconcile
(image, pod specs, service spec, labels): a change of any of it is a NEW DaskCluster (a new Pulumi resource, its
logical name carries `<h>` too), verified through its own `<cluster.name>-<h>-scheduler` Service before the stable
Service is pointed at it; the old one is deleted at the end of a successful `pulumi up` only. `replicas`,
`idleTimeout` and the autoscaler's range are reconciled by the operator and stay out of `<h>`: they update the
live cluster in place. The extra worker groups' `replicas` are in `<h>`: only the default group is ever scaled in
place, and the scheduler offers only its workers to retire (components/scheduler_downscale.py, issue 20).

The manifests are pure functions in the style of dask-kubernetes' `make_cluster_spec`.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components import scheduler_downscale
from components.config import ClusterConfig, WorkerPodConfig
from components.constants import (
    API_VERSION,
    APP_NAME_LABEL,
    CLUSTER_NAME_LABEL,
    COMPONENT_LABEL,
    DASHBOARD_PORT,
    DASHBOARD_PORT_NAME,
    DEFAULT_GROUP,
    GROUP_LABEL,
    LABELS,
    NANNY_PORT,
    NANNY_PORT_NAME,
    SCHEDULER_PORT,
    SCHEDULER_PORT_NAME,
    SPEC_DIGEST_LENGTH,
    WORKER_DASHBOARD_PORT,
    WORKER_PORT,
    WORKER_PORT_NAME,
    candidate_service_name,
    default_worker_group_name,
    kubectl,
    live_cluster_name,
    pod_selector,
    stable_service_name,
)
from components.options import child_options
from components.placement import pod_placement, worker_spread_selector
from components.storage import PodStorage

SCRATCH_DIR = "/scratch"  # Dask's local directory for spilling; an emptyDir, so spill never fills the image layer
RUN_AS_USER = 10001  # the image's non-root `dask` user (docker/Dockerfile); >= 10000, outside host user ranges
HOME_DIR = "/home/dask"  # the image's WORKDIR and HOME (dask writes ~/.config/dask there)
# The root filesystem is read-only: every path Dask, Python or a library may write is an emptyDir.
WRITABLE_DIRS = {"dask-scratch": SCRATCH_DIR, "tmp": "/tmp", "home": HOME_DIR}
TLS_DIR = "/etc/dask-tls"  # the cluster's certificate Secret, mounted read-only
TLS_FILES = {"ca": "ca.crt", "cert": "tls.crt", "key": "tls.key"}  # keys of the Secret (kubernetes.io/tls + ca.crt)


# distributed's default scheduler HTTP routes plus the API route: the operator's autoscaler reads
# /api/v1/adaptive_target, and without it falls back to an RPC that breaks across Dask versions.
# Dask parses the env value with ast.literal_eval, so it must be a list literal, never "a,b".
SCHEDULER_HTTP_ROUTES = [
    "distributed.http.scheduler.prometheus",
    "distributed.http.scheduler.info",
    "distributed.http.scheduler.json",
    "distributed.http.health",
    "distributed.http.proxy",
    "distributed.http.statics",
    "distributed.http.scheduler.api",
]


def scheduler_downscale_env(live_name: str) -> list[dict[str, str]]:
    """The scheduler's preload that offers only the default group's workers `<live>-default-worker-<uuid>` to retire.

    Every scale-down of a worker group makes the pinned operator ask the scheduler which workers to retire (`POST
    /api/v1/retire_workers {"n": n}`, else the `workers_to_close` RPC, else LIFO within the group); the scheduler
    answers cluster-wide and the operator deletes the Deployments named after the answer (dask/dask-kubernetes#914),
    whatever their group. Only the default group is ever scaled in place (autoscaler, `cluster.workers.replicas`;
    the extra groups' `replicas` are in `<h>`), so the candidates are its workers, named by the operator's
    `build_worker_deployment_spec`. The filter is distributed's own hook, `SchedulerPlugin.valid_workers_downscaling`,
    applied by `Scheduler.workers_to_close` for the HTTP route and the RPC alike (distributed still picks among
    the candidates, idle and least data first). components/scheduler_downscale.py goes in as source text, which
    distributed runs as a preload: no image change, no extra object, no new network flow, and a change of it is a
    change of `<h>`. A list literal, like the routes; `$` doubled, as Kubernetes expands `$(VAR)` in env values."""
    source = Path(scheduler_downscale.__file__).read_text()
    prefix = f"{default_worker_group_name(live_name)}-worker-"
    return [
        {"name": "DASK_DISTRIBUTED__SCHEDULER__PRELOAD", "value": json.dumps([source]).replace("$", "$$")},
        {"name": scheduler_downscale.PREFIX_ENV, "value": prefix},
    ]


POD_SECURITY_CONTEXT = {
    "runAsNonRoot": True,
    "runAsUser": RUN_AS_USER,
    "runAsGroup": RUN_AS_USER,
    "fsGroup": RUN_AS_USER,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY_CONTEXT = {
    "allowPrivilegeEscalation": False,
    "privileged": False,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
    "readOnlyRootFilesystem": True,
}


@dataclass(frozen=True)
class PodTls:
    """TLS for a cluster's pods: the Secret holding `TLS_FILES` (its key and certificate, and the stack's CA)."""

    secret_name: str


def scheduler_args(tls: PodTls | None = None) -> list[str]:
    protocol = ["--protocol", "tls"] if tls else []
    return ["dask", "scheduler", *protocol, "--port", str(SCHEDULER_PORT), "--dashboard-address", f":{DASHBOARD_PORT}"]


def worker_args(workers: WorkerPodConfig) -> list[str]:
    # No scheduler address argument: DASK_SCHEDULER_ADDRESS (the operator's tcp://, or ours with TLS) says it.
    return [
        "dask", "worker",
        "--name", "$(DASK_WORKER_NAME)",
        "--nthreads", str(workers.threads),
        "--memory-limit", str(workers.memory_bytes),
        "--dashboard-address", f":{WORKER_DASHBOARD_PORT}",
        "--worker-port", str(WORKER_PORT),
        "--nanny-port", str(NANNY_PORT),
        "--local-directory", SCRATCH_DIR,
    ]  # fmt: skip


def writable_volumes() -> list[dict[str, Any]]:
    return [{"name": name, "emptyDir": {}} for name in WRITABLE_DIRS]


def writable_mounts() -> list[dict[str, Any]]:
    return [{"name": name, "mountPath": path} for name, path in WRITABLE_DIRS.items()]


def tls_env(tls: PodTls | None) -> list[dict[str, str]]:
    """Dask's own TLS keys (distributed.comm.tls.*): every role presents the cluster certificate, trusts the CA,
    and plain TCP is refused. https://distributed.dask.org/en/stable/tls.html"""
    if tls is None:
        return []
    ca, cert, key = (f"{TLS_DIR}/{TLS_FILES[k]}" for k in ("ca", "cert", "key"))
    env = [{"name": "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION", "value": "True"}]
    env.append({"name": "DASK_DISTRIBUTED__COMM__TLS__CA_FILE", "value": ca})
    for role in ("SCHEDULER", "WORKER", "CLIENT"):
        env.append({"name": f"DASK_DISTRIBUTED__COMM__TLS__{role}__CERT", "value": cert})
        env.append({"name": f"DASK_DISTRIBUTED__COMM__TLS__{role}__KEY", "value": key})
    return env


def tls_volumes(tls: PodTls | None) -> list[dict[str, Any]]:
    if tls is None:
        return []
    return [{"name": "dask-tls", "secret": {"secretName": tls.secret_name, "defaultMode": 0o440}}]


def tls_mounts(tls: PodTls | None) -> list[dict[str, Any]]:
    return [{"name": "dask-tls", "mountPath": TLS_DIR, "readOnly": True}] if tls else []


def worker_probes() -> dict[str, Any]:
    """The worker's HTTP server answers /health once the worker runs (distributed.http.health)."""
    get = {"httpGet": {"port": DASHBOARD_PORT_NAME, "path": "/health"}}
    return {
        "readinessProbe": {**get, "periodSeconds": 5, "timeoutSeconds": 5},
        # Generous: a worker busy with a large partition answers late, and a restart would lose its data.
        "livenessProbe": {**get, "initialDelaySeconds": 15, "periodSeconds": 20, "timeoutSeconds": 10,
                          "failureThreshold": 6},
    }  # fmt: skip


def worker_resources(w: WorkerPodConfig) -> dict[str, Any]:
    limits = {"memory": w.memory} | ({"cpu": w.cpu_limit} if w.cpu_limit else {})
    return {"requests": {"cpu": w.cpu, "memory": w.memory}, "limits": limits}


def scheduler_resources(cluster: ClusterConfig) -> dict[str, Any]:
    s = cluster.scheduler
    # A quota namespace that needs limits.cpu on workers needs it on the scheduler too (guide tip).
    cpu_limited = any(g.cpu_limit for g in (cluster.workers, *cluster.worker_groups.values()))
    limits = {"memory": s.memory} | ({"cpu": s.cpu} if cpu_limited else {})
    return {"requests": {"cpu": s.cpu, "memory": s.memory}, "limits": limits}


def scheduler_service_ports() -> list[dict[str, Any]]:
    """The ports of a scheduler Service (the operator's and the stable one): targets named like the container's."""
    return [
        {"name": name, "protocol": "TCP", "port": port, "targetPort": name}
        for name, port in ((SCHEDULER_PORT_NAME, SCHEDULER_PORT), (DASHBOARD_PORT_NAME, DASHBOARD_PORT))
    ]


def _pod_spec(
    containers: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
    pull_secret: str | None,
    service_account: str | None = None,
    placement: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The scheduler and workers never call the Kubernetes API, so no API token is mounted, with or without a
    workload identity (`service_account`, storage.objectStore.identity): EKS's and Azure's webhooks inject their
    own projected token volume and GKE's metadata server identifies the pod; neither needs the API token."""
    spec: dict[str, Any] = {
        "securityContext": POD_SECURITY_CONTEXT,
        "automountServiceAccountToken": False,
        "containers": containers,
    }
    if service_account:
        spec["serviceAccountName"] = service_account
    if volumes:
        spec["volumes"] = volumes
    if pull_secret:
        spec["imagePullSecrets"] = [{"name": pull_secret}]
    return spec | (placement or {})


def scheduler_placement(cluster: ClusterConfig) -> dict[str, Any]:
    """The scheduler's scheduling fields: its placement, kept off the spot nodes any worker group uses."""
    return pod_placement(cluster.scheduler.placement.pod_fields(), avoid_spot=cluster.spot_providers)


def worker_placement(cluster: ClusterConfig, group: str, workers: WorkerPodConfig) -> dict[str, Any]:
    """A worker group's scheduling fields: its placement and spot nodes, spread over nodes by default."""
    return pod_placement(
        workers.placement.pod_fields(), spot=workers.spot, spread=worker_spread_selector(cluster.name, group)
    )


def pod_metadata(storage: PodStorage) -> dict[str, Any]:
    """Pod-template metadata of every pod (the operator copies it onto the pods): Azure's webhook selects pods by
    the identity label, and the identity annotation makes a changed identity a changed cluster spec (webhooks act
    at pod creation only)."""
    items = (("labels", storage.pod_labels), ("annotations", storage.pod_annotations))
    return {key: dict(value) for key, value in items if value}


@dataclass(frozen=True)
class PodContext:
    """What every pod of one DaskCluster shares: the image, storage, pull secret, TLS, and where it lives."""

    image: str
    storage: PodStorage
    pull_secret: str | None
    namespace: str
    live_name: str  # the DaskCluster's name (its draft `cluster.name` while the digest is computed)
    tls: PodTls | None = None


def worker_template(cluster: ClusterConfig, group: str, workers: WorkerPodConfig, ctx: PodContext) -> dict[str, Any]:
    """`spec.worker` of a DaskCluster (the default group) or DaskWorkerGroup, without `replicas`.

    Every group gets the same container (image, storage mounts, env, TLS, hardened security context, probes,
    memory limit rules); only threads, resources and placement come from the group. The operator copies
    `metadata.labels` onto the worker pods: GROUP_LABEL names the group independently of the DaskCluster's name."""
    storage, tls = ctx.storage, ctx.tls
    worker_env = [*storage.env, *tls_env(tls)]
    if tls:  # the operator injects its tcp:// address only when the variable is absent
        address = in_cluster_address(candidate_service_name(ctx.live_name), ctx.namespace, tls=True)
        worker_env.append({"name": "DASK_SCHEDULER_ADDRESS", "value": address})
    worker: dict[str, Any] = {
        "name": "worker",
        "image": ctx.image,
        "args": worker_args(workers),
        "resources": worker_resources(workers),
        "ports": [
            {"name": DASHBOARD_PORT_NAME, "containerPort": WORKER_DASHBOARD_PORT, "protocol": "TCP"},
            {"name": WORKER_PORT_NAME, "containerPort": WORKER_PORT, "protocol": "TCP"},
            {"name": NANNY_PORT_NAME, "containerPort": NANNY_PORT, "protocol": "TCP"},
        ],
        **worker_probes(),
        "volumeMounts": [*storage.worker_mounts, *writable_mounts(), *tls_mounts(tls)],
        "securityContext": CONTAINER_SECURITY_CONTEXT,
    }
    if worker_env:
        worker["env"] = worker_env
    volumes = [*storage.volumes, *writable_volumes(), *tls_volumes(tls)]
    placement = worker_placement(cluster, group, workers)
    metadata = pod_metadata(storage)
    metadata["labels"] = {GROUP_LABEL: group, **metadata.get("labels", {})}
    return {
        "metadata": metadata,
        "spec": _pod_spec([worker], volumes, ctx.pull_secret, storage.service_account, placement),
    }


def worker_group_workers(cluster: ClusterConfig, ctx: PodContext) -> dict[str, dict[str, Any]]:
    """`spec.worker` (replicas included) of each extra worker group, by configured name."""
    return {
        group: {"replicas": workers.replicas, **worker_template(cluster, group, workers, ctx)}
        for group, workers in sorted(cluster.worker_groups.items())
    }


def worker_group_name(cluster_name: str, group: str) -> str:
    """The DaskWorkerGroup of `group` for the DaskCluster `cluster_name` (the operator's own is `<cluster>-default`)."""
    return f"{cluster_name}-{group}"


def worker_group_manifest(
    cluster: ClusterConfig, namespace: str, cluster_name: str, group: str, worker: dict[str, Any]
) -> dict[str, Any]:
    """The DaskWorkerGroup of one extra group, for the live DaskCluster `cluster_name`."""
    labels = {**LABELS, APP_NAME_LABEL: cluster.name, GROUP_LABEL: group}
    return {
        "apiVersion": API_VERSION,
        "kind": "DaskWorkerGroup",
        "metadata": {"name": worker_group_name(cluster_name, group), "namespace": namespace, "labels": labels},
        "spec": {"cluster": cluster_name, "worker": worker},
    }


def scheduler_disruption_budget_manifest(cluster: ClusterConfig, namespace: str, cluster_name: str) -> dict[str, Any]:
    """A PodDisruptionBudget allowing no voluntary eviction of the live cluster's scheduler pod.

    Evictions (kubectl drain, node upgrades, the cluster autoscaler's scale-down) wait; deletions (the
    operator removing a DaskCluster, a blue/green switch) are not evictions and are not blocked."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {
            "name": candidate_service_name(cluster_name),
            "namespace": namespace,
            "labels": {**LABELS, APP_NAME_LABEL: cluster.name},
        },
        "spec": {
            "maxUnavailable": 0,
            "selector": {"matchLabels": {CLUSTER_NAME_LABEL: cluster_name, COMPONENT_LABEL: "scheduler"}},
        },
    }


def cluster_live_name(
    cluster: ClusterConfig,
    namespace: str,
    image_identity: str,
    storage: PodStorage,
    pull_secret: str | None = None,
    tls: PodTls | None = None,
) -> str:
    """`<cluster.name>-<h>`: the DaskCluster name for this spec (see the module docstring). TLS settings and the
    extra worker groups' pod templates are part of the spec: changing them makes a new cluster."""
    draft = dask_cluster_manifest(cluster, namespace, image_identity, storage, pull_secret, cluster.name, tls)
    ctx = PodContext(image_identity, storage, pull_secret, namespace, cluster.name, tls)
    return live_cluster_name(cluster.name, cluster_spec_digest(draft, worker_group_workers(cluster, ctx)))


# What the operator reconciles on a live DaskCluster: changing these must not make a new cluster.
RECONCILED_PATHS: tuple[tuple[str, ...], ...] = (("spec", "worker", "replicas"), ("spec", "idleTimeout"))


def cluster_spec_digest(manifest: dict[str, Any], worker_groups: dict[str, dict[str, Any]] | None = None) -> str:
    """`<h>`: a digest of the DaskCluster without its names and without what the operator reconciles, and of the
    extra worker groups, `replicas` included: the operator ignores in-place changes of their pod templates, and an
    in-place scale-down would retire workers the scheduler picks (only the default group's: issue 20), so a new
    count is a new cluster. Without extra groups the digest is the DaskCluster's alone."""
    view = copy.deepcopy(manifest)
    if worker_groups:
        view["workerGroups"] = worker_groups
    view["metadata"].pop("name", None)
    view["spec"]["scheduler"]["service"].get("selector", {}).pop(CLUSTER_NAME_LABEL, None)
    for *parents, leaf in RECONCILED_PATHS:
        node = view
        for key in parents:
            node = node.get(key, {})
        node.pop(leaf, None)
    return hashlib.sha256(json.dumps(view, sort_keys=True).encode()).hexdigest()[:SPEC_DIGEST_LENGTH]


def dask_cluster_manifest(
    cluster: ClusterConfig,
    namespace: str,
    image: str,
    storage: PodStorage,
    pull_secret: str | None,
    live_name: str,
    tls: PodTls | None = None,
) -> dict[str, Any]:
    """The DaskCluster custom resource for this stack, named `live_name` (`cluster_live_name`; the digest is computed
    from a draft named `cluster.name`). `image` is the pushed digest, which only the build knows; the name comes
    from the image's identity known at evaluation (`image.ref`, or the content-derived tag of the build)."""
    http = {"tcp": SCHEDULER_PORT_NAME, "dash": DASHBOARD_PORT_NAME}
    scheduler = {
        "name": "scheduler",
        "image": image,
        "args": scheduler_args(tls),
        "env": [
            {"name": "DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES", "value": json.dumps(SCHEDULER_HTTP_ROUTES)},
            *scheduler_downscale_env(live_name),
            *storage.env,
            *tls_env(tls),
        ],
        "resources": scheduler_resources(cluster),
        "ports": [
            {"name": http["tcp"], "containerPort": SCHEDULER_PORT, "protocol": "TCP"},
            {"name": http["dash"], "containerPort": DASHBOARD_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {
            "httpGet": {"port": http["dash"], "path": "/health"},
            "initialDelaySeconds": 0,
            "periodSeconds": 1,
            "timeoutSeconds": 300,
        },
        "livenessProbe": {
            "httpGet": {"port": http["dash"], "path": "/health"},
            "initialDelaySeconds": 15,
            "periodSeconds": 20,
        },
        "securityContext": CONTAINER_SECURITY_CONTEXT,
    }
    # The scheduler opens catalogs too (lsdb reads metadata where the client asks): it mounts the object-store key.
    scheduler_volumes = [v for v in storage.volumes if v["name"] == "object-store-key"]
    scheduler_mounts = [m for m in storage.worker_mounts if m["name"] == "object-store-key"]
    scheduler["volumeMounts"] = [*scheduler_mounts, *writable_mounts(), *tls_mounts(tls)]
    # The operator copies these labels onto every pod: `app.kubernetes.io/name: <cluster.name>` selects the pods
    # of blue and green alike (`dask.org/cluster-name` tells them apart).
    labels = {**LABELS, APP_NAME_LABEL: cluster.name}
    metadata: dict[str, Any] = {"name": live_name, "namespace": namespace, "labels": labels}
    if skips := scanner_skips(cluster):
        metadata["annotations"] = skips
    ctx = PodContext(image, storage, pull_secret, namespace, live_name, tls)
    spec: dict[str, Any] = {
        "idleTimeout": cluster.idle_timeout_seconds,
        "worker": {
            "replicas": cluster.workers.replicas,
            **worker_template(cluster, DEFAULT_GROUP, cluster.workers, ctx),
        },
        "scheduler": {
            "spec": _pod_spec(
                [scheduler],
                [*scheduler_volumes, *writable_volumes(), *tls_volumes(tls)],
                pull_secret,
                storage.service_account,
                scheduler_placement(cluster),
            ),
            "service": {
                "type": "ClusterIP",
                "selector": {CLUSTER_NAME_LABEL: live_name, COMPONENT_LABEL: "scheduler"},
                "ports": scheduler_service_ports(),
            },
        },
    }
    if scheduler_metadata := pod_metadata(storage):
        spec["scheduler"]["metadata"] = scheduler_metadata
    return {
        "apiVersion": API_VERSION,
        "kind": "DaskCluster",
        "metadata": metadata,
        "spec": spec,
    }


def scanner_skips(cluster: ClusterConfig) -> dict[str, str]:
    """checkov skips, with their reasons, for checks that do not apply (the operator copies the DaskCluster's
    annotations onto the Deployments it creates, where the scanner reads them). Nothing is skipped silently."""
    skips = {}
    if not cluster.workers.cpu_limit:
        skips["checkov.io/skip1"] = (
            "CKV_K8S_11=CPU limits throttle Dask's event loop and heartbeats; requests reserve the CPU, and "
            "cluster.workers.cpuLimit sets limits where a ResourceQuota requires them"
        )
    return skips


def dask_autoscaler_manifest(cluster: ClusterConfig, namespace: str, live_name: str) -> dict[str, Any] | None:
    """The DaskAutoscaler of the live cluster (same name); its range is reconciled, so it is not in `<h>`."""
    if not cluster.autoscaler.enabled:
        return None
    return {
        "apiVersion": API_VERSION,
        "kind": "DaskAutoscaler",
        "metadata": {"name": live_name, "namespace": namespace, "labels": LABELS},
        "spec": {"cluster": live_name, "minimum": cluster.autoscaler.minimum, "maximum": cluster.autoscaler.maximum},
    }


# The selector patch's Server-Side Apply field manager: fixed (not Pulumi's random one) so that
# `kubectl get service <name>-scheduler --show-managed-fields` says who points the stable Service where.
SELECTOR_FIELD_MANAGER = "lsdb-k8s-stable-endpoint"


def stable_service_manifest(name: str, namespace: str) -> dict[str, Any]:
    """The stable endpoint `<cluster.name>-scheduler`, with the ports of the operator's scheduler Service and NO
    selector: `stable_service_selector_patch` owns it. A Service's `spec.selector` is an atomic map under
    Server-Side Apply (one manager owns it whole), so the Service, created before any cluster and deleted after
    all of them, cannot also hold the selector that must change only after a new cluster passed its verification.
    Without a selector the Service routes nothing: the first cluster is not served before it is verified."""
    labels = {**LABELS, APP_NAME_LABEL: name}
    spec = {"type": "ClusterIP", "ports": scheduler_service_ports()}
    return _stable_service(name, namespace, {"labels": labels}, spec)


def stable_service_selector_patch(name: str, live_name: str, namespace: str) -> dict[str, Any]:
    """The Server-Side Apply patch that points the stable Service at the scheduler pod of `live_name` (the pods
    carry `dask.org/cluster-name: <live>`, set by the operator). Applied with its own field manager, forcing
    conflicts: the program owns this Service, and a hand edit of its selector is taken back on the next `up`."""
    annotations = {"pulumi.com/patchFieldManager": SELECTOR_FIELD_MANAGER, "pulumi.com/patchForce": "true"}
    selector = {CLUSTER_NAME_LABEL: live_name, COMPONENT_LABEL: "scheduler"}
    return _stable_service(name, namespace, {"annotations": annotations}, {"selector": selector})


def _stable_service(name: str, namespace: str, metadata: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": stable_service_name(name), "namespace": namespace, **metadata},
        "spec": spec,
    }


def manifest_hash(*manifests: dict[str, Any] | None) -> str:
    """Stable digest of what was deployed, so verification re-runs exactly when the cluster changes."""
    return hashlib.sha256(json.dumps(manifests, sort_keys=True).encode()).hexdigest()


ENDPOINT_KEYS = (
    "schedulerAddress",
    "dashboardUrl",
    "portForwardScheduler",
    "localSchedulerAddress",
    "portForwardDashboard",
    "localDashboardUrl",
    "kubectlSchedulerPods",
    "kubectlWorkerPods",
)


def in_cluster_address(service: str, namespace: str, tls: bool = False) -> str:
    """The Dask address of a scheduler Service, as pods in the cluster reach it (`tls://` with TLS)."""
    return f"{'tls' if tls else 'tcp'}://{service}.{namespace}.svc.cluster.local:{SCHEDULER_PORT}"


def cluster_endpoints(
    name: str, live_name: str, namespace: str, kube_context: str | None, tls: bool = False
) -> dict[str, str]:
    """How to reach the scheduler (keys: ENDPOINT_KEYS): addresses and port-forwards name the stable Service
    `<name>-scheduler`, which outlives every upgrade; the pod listings name the live cluster `live_name`."""
    svc = stable_service_name(name)
    k = kubectl(kube_context)
    return {
        "schedulerAddress": in_cluster_address(svc, namespace, tls),
        "dashboardUrl": f"http://{svc}.{namespace}.svc.cluster.local:{DASHBOARD_PORT}/status",
        "portForwardScheduler": f"{k} port-forward -n {namespace} svc/{svc} {SCHEDULER_PORT}:{SCHEDULER_PORT}",
        "localSchedulerAddress": f"{'tls' if tls else 'tcp'}://localhost:{SCHEDULER_PORT}",
        "portForwardDashboard": f"{k} port-forward -n {namespace} svc/{svc} {DASHBOARD_PORT}:{DASHBOARD_PORT}",
        "localDashboardUrl": f"http://localhost:{DASHBOARD_PORT}/status",
        "kubectlSchedulerPods": f"{k} get pods -n {namespace} -l {pod_selector(live_name, 'scheduler')}",
        "kubectlWorkerPods": f"{k} get pods -n {namespace} -l {pod_selector(live_name, 'worker')}",
    }


@dataclass(frozen=True)
class LsdbDaskClusterArgs:
    cluster: ClusterConfig
    namespace: str
    image: pulumi.Input[str]
    storage: PodStorage
    # `cluster_live_name(...)` of the same cluster, image identity, storage, pull secret and TLS: the program needs it
    # before the cluster (the certificate's names), so it computes it once and hands it over.
    live_name: str
    pull_secret: str | None = None
    tls: PodTls | None = None  # the certificate Secret must exist first: depend on what creates it


class LsdbDaskCluster(pulumi.ComponentResource):
    """A DaskCluster `<cluster.name>-<h>` running the pinned LSDB image, plus its DaskAutoscaler when enabled, its
    extra DaskWorkerGroups `<cluster.name>-<h>-<group>` and its scheduler's PodDisruptionBudget.

    Both are registered under logical names that carry `<h>`: a spec change registers new resources (created
    first), and the old ones, no longer in the program, are deleted only after everything else of the
    `pulumi up` succeeded (the verification of the new cluster, the stable Service's switch). A failed
    `pulumi up` leaves the old cluster in the state untouched, never "pending delete".
    """

    dask_cluster: k8s.apiextensions.CustomResource
    autoscaler: k8s.apiextensions.CustomResource | None
    worker_groups: dict[str, k8s.apiextensions.CustomResource]
    disruption_budget: k8s.policy.v1.PodDisruptionBudget | None
    worker_group_names: dict[str, str]
    live_name: str
    digest: str
    cluster_name: pulumi.Output[str]
    cluster_uid: pulumi.Output[str]  # a new uid is a new object: the operator deleted it and `up` recreated it
    candidate_address: pulumi.Output[str]
    spec_hash: pulumi.Output[str]

    def __init__(self, name: str, args: LsdbDaskClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        cluster, namespace, storage, pull_secret = args.cluster, args.namespace, args.storage, args.pull_secret
        super().__init__("lsdb-k8s:cluster:LsdbDaskCluster", name, {}, opts)
        self.live_name = args.live_name
        self.digest = self.live_name.rsplit("-", 1)[1]
        live = self.live_name
        image = pulumi.Output.from_input(args.image)
        manifest = image.apply(
            lambda ref: dask_cluster_manifest(
                cluster, namespace, ref, storage, pull_secret, live_name=live, tls=args.tls
            )
        )
        self.dask_cluster = k8s.apiextensions.CustomResource(
            f"{name}-daskcluster-{self.digest}",
            api_version=API_VERSION,
            kind="DaskCluster",
            metadata=manifest["metadata"],
            spec=manifest["spec"],
            opts=child_options(self, opts),
        )
        self.autoscaler = None
        scaler = dask_autoscaler_manifest(cluster, namespace, live)
        if scaler is not None:
            self.autoscaler = k8s.apiextensions.CustomResource(
                f"{name}-daskautoscaler-{self.digest}",
                api_version=API_VERSION,
                kind="DaskAutoscaler",
                metadata=scaler["metadata"],
                spec=scaler["spec"],
                opts=child_options(self, opts, self.dask_cluster),
            )
        # Everything downstream is derived from the name the API server holds.
        self.cluster_name = self.dask_cluster.metadata.apply(lambda m: str(m["name"]))  # type: ignore[attr-defined]
        self.cluster_uid = self.dask_cluster.metadata.apply(lambda m: str(m.get("uid") or ""))  # type: ignore[attr-defined]
        self.candidate_address = self.cluster_name.apply(
            lambda n: in_cluster_address(candidate_service_name(n), namespace, args.tls is not None)
        )
        groups = image.apply(
            lambda ref: worker_group_workers(cluster, PodContext(ref, storage, pull_secret, namespace, live, args.tls))
        )
        self.worker_groups = self._worker_groups(name, args, groups, opts)
        self.worker_group_names = {g: worker_group_name(live, g) for g in sorted(cluster.worker_groups)}
        self.disruption_budget = self._disruption_budget(name, args, opts)
        # Re-runs the verification of this cluster when anything of it changes, reconciled fields included.
        self.spec_hash = pulumi.Output.all(manifest, groups).apply(lambda mg: manifest_hash(mg[0], scaler, mg[1]))
        self.register_outputs(
            {"clusterName": self.cluster_name, "digest": self.digest, "workerGroups": self.worker_group_names}
        )

    def _worker_groups(
        self,
        name: str,
        args: LsdbDaskClusterArgs,
        groups: pulumi.Output[dict[str, dict[str, Any]]],
        opts: pulumi.ResourceOptions | None,
    ) -> dict[str, k8s.apiextensions.CustomResource]:
        """One DaskWorkerGroup per extra group, `<live>-<group>`, registered like the DaskCluster under a logical
        name carrying `<h>`.

        First `pulumi up`: created after the DaskCluster (the operator's create handler looks the cluster up and
        adopts the group, so deleting the cluster deletes its groups too). A change of a group's pod template
        changes `<h>`: the new cluster gets new groups, and the old groups are deleted with the old cluster after the
        new one is verified. So does a change of `replicas`: a group is never scaled in place (issue 20).
        `pulumi destroy`: deleted with the cluster."""
        cluster, namespace, live = args.cluster, args.namespace, self.live_name
        created: dict[str, k8s.apiextensions.CustomResource] = {}
        for group in sorted(cluster.worker_groups):

            def render(workers: dict[str, dict[str, Any]], group: str = group) -> dict[str, Any]:
                return worker_group_manifest(cluster, namespace, live, group, workers[group])

            manifest = groups.apply(render)
            created[group] = k8s.apiextensions.CustomResource(
                f"{name}-workergroup-{group}-{self.digest}",
                api_version=API_VERSION,
                kind="DaskWorkerGroup",
                metadata=manifest["metadata"],
                spec=manifest["spec"],
                opts=child_options(self, opts, self.dask_cluster),
            )
        return created

    def _disruption_budget(
        self, name: str, args: LsdbDaskClusterArgs, opts: pulumi.ResourceOptions | None
    ) -> k8s.policy.v1.PodDisruptionBudget | None:
        """The live cluster's scheduler PodDisruptionBudget (a new cluster gets its own; the old one goes with the old
        cluster); none when `cluster.scheduler.disruptionBudget` is false."""
        if not args.cluster.scheduler.disruption_budget:
            return None
        manifest = scheduler_disruption_budget_manifest(args.cluster, args.namespace, self.live_name)
        return k8s.policy.v1.PodDisruptionBudget(
            f"{name}-scheduler-pdb-{self.digest}",
            metadata=manifest["metadata"],
            spec=manifest["spec"],
            opts=child_options(self, opts, self.dask_cluster),
        )


@dataclass(frozen=True)
class StableEndpointArgs:
    name: str  # cluster.name
    live_name: str  # the live DaskCluster (its pods, in the exported kubectl commands)
    namespace: str
    kube_context: str | None = None
    tls: bool = False


class StableEndpoint(pulumi.ComponentResource):
    """The Service `<cluster.name>-scheduler` that clients use (the exports name it), without a selector.

    Lifecycle: created on the first `pulumi up` BEFORE any cluster (the program makes every DaskCluster and
    DaskAutoscaler depend on it), routing nothing until `StableEndpointSelector` points it at a verified cluster;
    unchanged by upgrades (same object, same ClusterIP); deleted LAST by `pulumi destroy`, after the clusters.
    """

    service: k8s.core.v1.Service
    endpoints: dict[str, str]

    def __init__(self, name: str, args: StableEndpointArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("lsdb-k8s:cluster:StableEndpoint", name, {}, opts)
        manifest = stable_service_manifest(args.name, args.namespace)
        self.service = k8s.core.v1.Service(
            f"{name}-service",
            metadata=manifest["metadata"],
            spec=manifest["spec"],
            opts=child_options(self, opts),
        )
        self.endpoints = cluster_endpoints(args.name, args.live_name, args.namespace, args.kube_context, args.tls)
        self.register_outputs({"endpoints": self.endpoints})


@dataclass(frozen=True)
class StableEndpointSelectorArgs:
    name: str  # cluster.name
    live_name: str  # the DaskCluster to serve (plain: known at evaluation, so preview shows the switch)
    namespace: str


class StableEndpointSelector(pulumi.ComponentResource):
    """The selector of the stable Service: a `ServicePatch` pointing it at the live cluster's scheduler pod.

    Lifecycle: the program gives it `depends_on` the Service and the verification of the live cluster. First
    `pulumi up`: applied once the first cluster passed. An upgrade: updated in place (new `dask.org/cluster-name`)
    only after the new cluster passed its own verification; if that fails, `pulumi up` stops before this and the
    Service keeps selecting the old cluster. `pulumi destroy`: deleted first; the provider then relinquishes the
    selector (its field manager's only field), so the Service stops routing before the clusters go.
    """

    patch: k8s.core.v1.ServicePatch

    def __init__(self, name: str, args: StableEndpointSelectorArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("lsdb-k8s:cluster:StableEndpointSelector", name, {}, opts)
        manifest = stable_service_selector_patch(args.name, args.live_name, args.namespace)
        self.patch = k8s.core.v1.ServicePatch(
            f"{name}-patch",
            metadata=manifest["metadata"],
            spec=manifest["spec"],
            opts=child_options(self, opts),
        )
        self.register_outputs({"selector": manifest["spec"]["selector"]})
