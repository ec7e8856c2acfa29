"""LsdbDaskCluster: the DaskCluster (and DaskAutoscaler) custom resources the operator turns into pods.

The manifests are pure functions in the style of dask-kubernetes' `make_cluster_spec`; the component
only registers them and derives the endpoint outputs from the real cluster name.
"""

from __future__ import annotations

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
    WORKER_DASHBOARD_PORT,
    WORKER_PORT,
    WORKER_PORT_NAME,
    kubectl,
    pod_selector,
    scheduler_service_name,
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


def scheduler_address(cluster_name: str, namespace: str, tls: bool) -> str:
    """The DaskCluster's own scheduler Service (the operator's), as the workers reach it."""
    scheme = "tls" if tls else "tcp"
    return f"{scheme}://{scheduler_service_name(cluster_name)}.{namespace}.svc.cluster.local:{SCHEDULER_PORT}"


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


def _pod_spec(
    containers: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
    pull_secret: str | None,
    service_account_token: bool = False,
) -> dict[str, Any]:
    """`service_account_token`: the scheduler and workers never call the Kubernetes API, so no token is mounted;
    a workload identity (a ServiceAccount whose projected token a cloud SDK exchanges) sets it true."""
    spec: dict[str, Any] = {
        "securityContext": POD_SECURITY_CONTEXT,
        "automountServiceAccountToken": service_account_token,
        "containers": containers,
    }
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
    tls: PodTls | None = None,
) -> dict[str, Any]:
    """The DaskCluster custom resource for this stack."""
    name = cluster.name
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
        worker_env.append({"name": "DASK_SCHEDULER_ADDRESS", "value": scheduler_address(name, namespace, tls=True)})
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
    labels = {**LABELS, APP_NAME_LABEL: name}
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels}
    if skips := scanner_skips(cluster):
        metadata["annotations"] = skips
    spec: dict[str, Any] = {
        "idleTimeout": cluster.idle_timeout_seconds,
        "worker": {
            "replicas": cluster.workers.replicas,
            "spec": _pod_spec([worker], [*storage.volumes, *writable_volumes(), *tls_volumes(tls)], pull_secret),
        },
        "scheduler": {
            "spec": _pod_spec([scheduler], [*scheduler_volumes, *writable_volumes(), *tls_volumes(tls)], pull_secret),
            "service": {
                "type": "ClusterIP",
                "selector": {CLUSTER_NAME_LABEL: name, COMPONENT_LABEL: "scheduler"},
                "ports": [
                    {"name": http["tcp"], "protocol": "TCP", "port": SCHEDULER_PORT, "targetPort": http["tcp"]},
                    {"name": http["dash"], "protocol": "TCP", "port": DASHBOARD_PORT, "targetPort": http["dash"]},
                ],
            },
        },
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


def dask_autoscaler_manifest(cluster: ClusterConfig, namespace: str) -> dict[str, Any] | None:
    if not cluster.autoscaler.enabled:
        return None
    return {
        "apiVersion": API_VERSION,
        "kind": "DaskAutoscaler",
        "metadata": {"name": cluster.name, "namespace": namespace, "labels": LABELS},
        "spec": {"cluster": cluster.name, "minimum": cluster.autoscaler.minimum, "maximum": cluster.autoscaler.maximum},
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


def cluster_endpoints(cluster_name: str, namespace: str, kube_context: str | None, tls: bool = False) -> dict[str, str]:
    """How to reach the scheduler from inside the cluster and from a workstation (keys: ENDPOINT_KEYS)."""
    svc = scheduler_service_name(cluster_name)
    k = kubectl(kube_context)
    scheme = "tls" if tls else "tcp"
    return {
        "schedulerAddress": scheduler_address(cluster_name, namespace, tls),
        "dashboardUrl": f"http://{svc}.{namespace}.svc.cluster.local:{DASHBOARD_PORT}/status",
        "portForwardScheduler": f"{k} port-forward -n {namespace} svc/{svc} {SCHEDULER_PORT}:{SCHEDULER_PORT}",
        "localSchedulerAddress": f"{scheme}://localhost:{SCHEDULER_PORT}",
        "portForwardDashboard": f"{k} port-forward -n {namespace} svc/{svc} {DASHBOARD_PORT}:{DASHBOARD_PORT}",
        "localDashboardUrl": f"http://localhost:{DASHBOARD_PORT}/status",
        "kubectlSchedulerPods": f"{k} get pods -n {namespace} -l {pod_selector(cluster_name, 'scheduler')}",
        "kubectlWorkerPods": f"{k} get pods -n {namespace} -l {pod_selector(cluster_name, 'worker')}",
    }


@dataclass(frozen=True)
class LsdbDaskClusterArgs:
    cluster: ClusterConfig
    namespace: str
    image: pulumi.Input[str]
    storage: PodStorage
    kube_context: str | None = None
    pull_secret: str | None = None
    tls: PodTls | None = None  # the certificate Secret must exist first: depend on what creates it


class LsdbDaskCluster(pulumi.ComponentResource):
    """A DaskCluster running the pinned LSDB image, plus its DaskAutoscaler when enabled."""

    dask_cluster: k8s.apiextensions.CustomResource
    autoscaler: k8s.apiextensions.CustomResource | None
    cluster_name: pulumi.Output[str]
    spec_hash: pulumi.Output[str]
    endpoints: pulumi.Output[dict[str, str]]

    def __init__(self, name: str, args: LsdbDaskClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        cluster, namespace, storage, pull_secret = args.cluster, args.namespace, args.storage, args.pull_secret
        super().__init__("lsdb-k8s:cluster:LsdbDaskCluster", name, {}, opts)
        manifest = pulumi.Output.from_input(args.image).apply(
            lambda ref: dask_cluster_manifest(cluster, namespace, ref, storage, pull_secret, args.tls)
        )
        self.dask_cluster = k8s.apiextensions.CustomResource(
            f"{name}-daskcluster",
            api_version=API_VERSION,
            kind="DaskCluster",
            metadata=manifest["metadata"],
            spec=manifest["spec"],
            opts=child_options(self, opts),
        )
        self.autoscaler = None
        scaler = dask_autoscaler_manifest(cluster, namespace)
        if scaler is not None:
            self.autoscaler = k8s.apiextensions.CustomResource(
                f"{name}-daskautoscaler",
                api_version=API_VERSION,
                kind="DaskAutoscaler",
                metadata=scaler["metadata"],
                spec=scaler["spec"],
                opts=child_options(self, opts, self.dask_cluster),
            )
        # Everything downstream is derived from the name the API server holds, not from config.
        self.cluster_name = self.dask_cluster.metadata.apply(lambda m: str(m["name"]))  # type: ignore[attr-defined]
        self.endpoints = self.cluster_name.apply(
            lambda n: cluster_endpoints(n, namespace, args.kube_context, args.tls is not None)
        )
        self.spec_hash = manifest.apply(lambda m: manifest_hash(m, scaler))
        self.register_outputs({"clusterName": self.cluster_name, "endpoints": self.endpoints})
