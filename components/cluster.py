"""LsdbDaskCluster: the DaskCluster (and DaskAutoscaler) custom resources the operator turns into pods, and
StableEndpoint: the program-owned Service `<cluster.name>-scheduler` that follows the live cluster.

Blue/green. The pinned operator applies nothing of a changed DaskCluster but `spec.worker.replicas` (its controller
builds the scheduler, its Service and the worker group once, at create). So the DaskCluster is named
`<cluster.name>-<h>`, `<h>` = `cluster_spec_digest`, a digest of everything the operator does not reconcile
(image, pod specs, service spec, labels): a change of any of it is a NEW DaskCluster (a new Pulumi resource, its
logical name carries `<h>` too), verified through its own `<cluster.name>-<h>-scheduler` Service before the stable
Service is pointed at it; the old one is deleted at the end of a successful `pulumi up` only. `replicas`,
`idleTimeout` and the autoscaler's range are reconciled by the operator and stay out of `<h>`: they update the
live cluster in place.

The manifests are pure functions in the style of dask-kubernetes' `make_cluster_spec`.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.config import ClusterConfig
from components.constants import (
    API_VERSION,
    APP_NAME_LABEL,
    CLUSTER_NAME_LABEL,
    COMPONENT_LABEL,
    DASHBOARD_PORT,
    DASHBOARD_PORT_NAME,
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
    kubectl,
    live_cluster_name,
    pod_selector,
    stable_service_name,
)
from components.options import child_options
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


def worker_args(cluster: ClusterConfig) -> list[str]:
    # No scheduler address argument: DASK_SCHEDULER_ADDRESS (the operator's tcp://, or ours with TLS) says it.
    return [
        "dask", "worker",
        "--name", "$(DASK_WORKER_NAME)",
        "--nthreads", str(cluster.workers.threads),
        "--memory-limit", str(cluster.workers.memory_bytes),
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


def worker_resources(cluster: ClusterConfig) -> dict[str, Any]:
    w = cluster.workers
    limits = {"memory": w.memory} | ({"cpu": w.cpu_limit} if w.cpu_limit else {})
    return {"requests": {"cpu": w.cpu, "memory": w.memory}, "limits": limits}


def scheduler_resources(cluster: ClusterConfig) -> dict[str, Any]:
    s = cluster.scheduler
    # A quota namespace that needs limits.cpu on workers needs it on the scheduler too (guide tip).
    limits = {"memory": s.memory} | ({"cpu": s.cpu} if cluster.workers.cpu_limit else {})
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
    return spec


def dask_cluster_manifest(
    cluster: ClusterConfig,
    namespace: str,
    image: str,
    storage: PodStorage,
    pull_secret: str | None = None,
    *,
    live_name: str | None = None,
    tls: PodTls | None = None,
) -> dict[str, Any]:
    """The DaskCluster custom resource for this stack, named `live_name` (default: `<cluster.name>-<h>` of `image`).

    The program passes `live_name` computed from the image's identity known at evaluation (`image.ref`, or the
    content-derived tag of the build) while `image` is the pushed digest, which only the build knows.
    """
    if live_name is None:
        live_name = cluster_live_name(cluster, namespace, image, storage, pull_secret, tls)
    return _dask_cluster_manifest(cluster, namespace, image, storage, pull_secret, live_name, tls)


def cluster_live_name(
    cluster: ClusterConfig,
    namespace: str,
    image_identity: str,
    storage: PodStorage,
    pull_secret: str | None = None,
    tls: PodTls | None = None,
) -> str:
    """`<cluster.name>-<h>`: the DaskCluster name for this spec (see the module docstring). TLS settings are part
    of the spec: turning TLS on or off makes a new cluster."""
    draft = _dask_cluster_manifest(cluster, namespace, image_identity, storage, pull_secret, cluster.name, tls)
    return live_cluster_name(cluster.name, cluster_spec_digest(draft))


# What the operator reconciles on a live DaskCluster: changing these must not make a new cluster.
RECONCILED_PATHS: tuple[tuple[str, ...], ...] = (("spec", "worker", "replicas"), ("spec", "idleTimeout"))


def cluster_spec_digest(manifest: dict[str, Any]) -> str:
    """`<h>`: a digest of the DaskCluster without its names and without what the operator reconciles."""
    view = copy.deepcopy(manifest)
    view["metadata"].pop("name", None)
    view["spec"]["scheduler"]["service"].get("selector", {}).pop(CLUSTER_NAME_LABEL, None)
    for *parents, leaf in RECONCILED_PATHS:
        node = view
        for key in parents:
            node = node.get(key, {})
        node.pop(leaf, None)
    return hashlib.sha256(json.dumps(view, sort_keys=True).encode()).hexdigest()[:SPEC_DIGEST_LENGTH]


def _dask_cluster_manifest(
    cluster: ClusterConfig,
    namespace: str,
    image: str,
    storage: PodStorage,
    pull_secret: str | None,
    live_name: str,
    tls: PodTls | None = None,
) -> dict[str, Any]:
    http = {"tcp": SCHEDULER_PORT_NAME, "dash": DASHBOARD_PORT_NAME}
    scheduler = {
        "name": "scheduler",
        "image": image,
        "args": scheduler_args(tls),
        "env": [
            {"name": "DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES", "value": json.dumps(SCHEDULER_HTTP_ROUTES)},
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
    worker_env = [*storage.env, *tls_env(tls)]
    if tls:  # the operator injects its tcp:// address only when the variable is absent
        address = in_cluster_address(candidate_service_name(live_name), namespace, tls=True)
        worker_env.append({"name": "DASK_SCHEDULER_ADDRESS", "value": address})
    worker = {
        "name": "worker",
        "image": image,
        "args": worker_args(cluster),
        "resources": worker_resources(cluster),
        "ports": [
            {"name": http["dash"], "containerPort": WORKER_DASHBOARD_PORT, "protocol": "TCP"},
            {"name": WORKER_PORT_NAME, "containerPort": WORKER_PORT, "protocol": "TCP"},
            {"name": NANNY_PORT_NAME, "containerPort": NANNY_PORT, "protocol": "TCP"},
        ],
        **worker_probes(),
        "volumeMounts": [*storage.worker_mounts, *writable_mounts(), *tls_mounts(tls)],
        "securityContext": CONTAINER_SECURITY_CONTEXT,
    }
    if worker_env:
        worker["env"] = worker_env
    # The operator copies these labels onto every pod: `app.kubernetes.io/name: <cluster.name>` selects the pods
    # of blue and green alike (`dask.org/cluster-name` tells them apart).
    labels = {**LABELS, APP_NAME_LABEL: cluster.name}
    metadata: dict[str, Any] = {"name": live_name, "namespace": namespace, "labels": labels}
    if skips := scanner_skips(cluster):
        metadata["annotations"] = skips
    spec: dict[str, Any] = {
        "idleTimeout": cluster.idle_timeout_seconds,
        "worker": {
            "replicas": cluster.workers.replicas,
            "spec": _pod_spec(
                [worker],
                [*storage.volumes, *writable_volumes(), *tls_volumes(tls)],
                pull_secret,
                storage.service_account,
            ),
        },
        "scheduler": {
            "spec": _pod_spec(
                [scheduler],
                [*scheduler_volumes, *writable_volumes(), *tls_volumes(tls)],
                pull_secret,
                storage.service_account,
            ),
            "service": {
                "type": "ClusterIP",
                "selector": {CLUSTER_NAME_LABEL: live_name, COMPONENT_LABEL: "scheduler"},
                "ports": scheduler_service_ports(),
            },
        },
    }
    # The operator copies this metadata onto the pod templates: Azure's webhook selects pods by the label, and
    # the identity annotation makes a changed identity a changed cluster spec (webhooks act at pod creation only).
    if storage.pod_labels or storage.pod_annotations:
        for role in ("scheduler", "worker"):
            spec[role]["metadata"] = {
                k: dict(v) for k, v in (("labels", storage.pod_labels), ("annotations", storage.pod_annotations)) if v
            }
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


def stable_service_manifest(name: str, live_name: str, namespace: str) -> dict[str, Any]:
    """The stable endpoint `<cluster.name>-scheduler`: the ports of the operator's scheduler Service, selecting
    the scheduler pod of `live_name` (the pods carry `dask.org/cluster-name: <live>`, set by the operator)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": stable_service_name(name),
            "namespace": namespace,
            "labels": {**LABELS, "app.kubernetes.io/name": name},
        },
        "spec": {
            "type": "ClusterIP",
            "selector": {CLUSTER_NAME_LABEL: live_name, COMPONENT_LABEL: "scheduler"},
            "ports": scheduler_service_ports(),
        },
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
    kube_context: str | None = None
    pull_secret: str | None = None
    # What identifies the image before it is built (`image.ref`, or repository:content-tag): the digest `<h>`
    # is computed from it, because resource names must be known when the program is evaluated.
    image_identity: str | None = None
    tls: PodTls | None = None  # the certificate Secret must exist first: depend on what creates it


class LsdbDaskCluster(pulumi.ComponentResource):
    """A DaskCluster `<cluster.name>-<h>` running the pinned LSDB image, plus its DaskAutoscaler when enabled.

    Both are registered under logical names that carry `<h>`: a spec change registers new resources (created
    first), and the old ones, no longer in the program, are deleted only after everything else of the
    `pulumi up` succeeded (the verification of the new cluster, the stable Service's switch). A failed
    `pulumi up` leaves the old cluster in the state untouched, never "pending delete".
    """

    dask_cluster: k8s.apiextensions.CustomResource
    autoscaler: k8s.apiextensions.CustomResource | None
    live_name: str
    digest: str
    cluster_name: pulumi.Output[str]
    candidate_address: pulumi.Output[str]
    spec_hash: pulumi.Output[str]

    def __init__(self, name: str, args: LsdbDaskClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        cluster, namespace, storage, pull_secret = args.cluster, args.namespace, args.storage, args.pull_secret
        super().__init__("lsdb-k8s:cluster:LsdbDaskCluster", name, {}, opts)
        identity = args.image_identity
        if identity is None:
            if not isinstance(args.image, str):
                raise ValueError("LsdbDaskClusterArgs: give image_identity when image is not a plain string")
            identity = args.image
        self.live_name = cluster_live_name(cluster, namespace, identity, storage, pull_secret, args.tls)
        self.digest = self.live_name.rsplit("-", 1)[1]
        live = self.live_name
        manifest = pulumi.Output.from_input(args.image).apply(
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
        self.candidate_address = self.cluster_name.apply(
            lambda n: in_cluster_address(candidate_service_name(n), namespace, args.tls is not None)
        )
        # Re-runs the verification of this cluster when anything of it changes, reconciled fields included.
        self.spec_hash = manifest.apply(lambda m: manifest_hash(m, scaler))
        self.register_outputs({"clusterName": self.cluster_name, "digest": self.digest})


@dataclass(frozen=True)
class StableEndpointArgs:
    name: str  # cluster.name
    live_name: str  # the DaskCluster the Service selects (plain: known at evaluation, so preview shows it)
    namespace: str
    kube_context: str | None = None
    tls: bool = False


class StableEndpoint(pulumi.ComponentResource):
    """The Service `<cluster.name>-scheduler` that clients use; it selects the live cluster's scheduler pod.

    Lifecycle: created on the first `pulumi up` after the first cluster is verified; on an upgrade its selector is
    updated in place (same Service, same ClusterIP) once the new cluster passed the verification (the program gives
    it `depends_on` the verification); `pulumi destroy` deletes it before the clusters it depends on.
    """

    service: k8s.core.v1.Service
    endpoints: dict[str, str]

    def __init__(self, name: str, args: StableEndpointArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("lsdb-k8s:cluster:StableEndpoint", name, {}, opts)
        manifest = stable_service_manifest(args.name, args.live_name, args.namespace)
        self.service = k8s.core.v1.Service(
            f"{name}-service",
            metadata=manifest["metadata"],
            spec=manifest["spec"],
            opts=child_options(self, opts),
        )
        self.endpoints = cluster_endpoints(args.name, args.live_name, args.namespace, args.kube_context, args.tls)
        self.register_outputs({"endpoints": self.endpoints})
