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
    CLUSTER_NAME_LABEL,
    COMPONENT_LABEL,
    DASHBOARD_PORT,
    DASHBOARD_PORT_NAME,
    LABELS,
    SCHEDULER_PORT,
    SCHEDULER_PORT_NAME,
    WORKER_DASHBOARD_PORT,
    kubectl,
    pod_selector,
    scheduler_service_name,
)
from components.options import child_options
from components.storage import PodStorage

SCRATCH_DIR = "/scratch"  # Dask's local directory for spilling; an emptyDir, so spill never fills the image layer
RUN_AS_USER = 1000  # the image's non-root `dask` user (docker/Dockerfile)

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
}


def scheduler_args() -> list[str]:
    return ["dask", "scheduler", "--port", str(SCHEDULER_PORT), "--dashboard-address", f":{DASHBOARD_PORT}"]


def worker_args(cluster: ClusterConfig) -> list[str]:
    # No scheduler address argument: the operator injects DASK_SCHEDULER_ADDRESS, which Dask reads.
    return [
        "dask", "worker",
        "--name", "$(DASK_WORKER_NAME)",
        "--nthreads", str(cluster.workers.threads),
        "--memory-limit", str(cluster.workers.memory_bytes),
        "--dashboard-address", f":{WORKER_DASHBOARD_PORT}",
        "--local-directory", SCRATCH_DIR,
    ]  # fmt: skip


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
    service_account: str | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"securityContext": POD_SECURITY_CONTEXT, "containers": containers}
    if service_account:
        spec["serviceAccountName"] = service_account  # workload identity (storage.objectStore.identity)
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
) -> dict[str, Any]:
    """The DaskCluster custom resource for this stack."""
    http = {"tcp": SCHEDULER_PORT_NAME, "dash": DASHBOARD_PORT_NAME}
    scheduler = {
        "name": "scheduler",
        "image": image,
        "args": scheduler_args(),
        "env": [
            {"name": "DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES", "value": json.dumps(SCHEDULER_HTTP_ROUTES)},
            *storage.env,
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
    if scheduler_mounts:
        scheduler["volumeMounts"] = scheduler_mounts
    worker = {
        "name": "worker",
        "image": image,
        "args": worker_args(cluster),
        "resources": worker_resources(cluster),
        "ports": [{"name": http["dash"], "containerPort": WORKER_DASHBOARD_PORT, "protocol": "TCP"}],
        "volumeMounts": [*storage.worker_mounts, {"name": "dask-scratch", "mountPath": SCRATCH_DIR}],
        "securityContext": CONTAINER_SECURITY_CONTEXT,
    }
    if storage.env:
        worker["env"] = storage.env
    labels = {**LABELS, "app.kubernetes.io/name": cluster.name}
    spec: dict[str, Any] = {
        "idleTimeout": cluster.idle_timeout_seconds,
        "worker": {
            "replicas": cluster.workers.replicas,
            "spec": _pod_spec(
                [worker],
                [*storage.volumes, {"name": "dask-scratch", "emptyDir": {}}],
                pull_secret,
                storage.service_account,
            ),
        },
        "scheduler": {
            "spec": _pod_spec([scheduler], scheduler_volumes, pull_secret, storage.service_account),
            "service": {
                "type": "ClusterIP",
                "selector": {CLUSTER_NAME_LABEL: cluster.name, COMPONENT_LABEL: "scheduler"},
                "ports": [
                    {"name": http["tcp"], "protocol": "TCP", "port": SCHEDULER_PORT, "targetPort": http["tcp"]},
                    {"name": http["dash"], "protocol": "TCP", "port": DASHBOARD_PORT, "targetPort": http["dash"]},
                ],
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
        "metadata": {"name": cluster.name, "namespace": namespace, "labels": labels},
        "spec": spec,
    }


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


def cluster_endpoints(cluster_name: str, namespace: str, kube_context: str | None) -> dict[str, str]:
    """How to reach the scheduler from inside the cluster and from a workstation (keys: ENDPOINT_KEYS)."""
    svc = scheduler_service_name(cluster_name)
    k = kubectl(kube_context)
    return {
        "schedulerAddress": f"tcp://{svc}.{namespace}.svc.cluster.local:{SCHEDULER_PORT}",
        "dashboardUrl": f"http://{svc}.{namespace}.svc.cluster.local:{DASHBOARD_PORT}/status",
        "portForwardScheduler": f"{k} port-forward -n {namespace} svc/{svc} {SCHEDULER_PORT}:{SCHEDULER_PORT}",
        "localSchedulerAddress": f"tcp://localhost:{SCHEDULER_PORT}",
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
            lambda ref: dask_cluster_manifest(cluster, namespace, ref, storage, pull_secret)
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
        self.endpoints = self.cluster_name.apply(lambda n: cluster_endpoints(n, namespace, args.kube_context))
        self.spec_hash = manifest.apply(lambda m: manifest_hash(m, scaler))
        self.register_outputs({"clusterName": self.cluster_name, "endpoints": self.endpoints})
