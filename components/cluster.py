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
    SCHEDULER_PORT,
    SCHEDULER_PORT_NAME,
    WORKER_DASHBOARD_PORT,
    kubectl,
    pod_selector,
    scheduler_service_name,
)
from components.options import child_options
from components.placement import pod_placement, worker_spread_selector
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


def worker_args(workers: WorkerPodConfig) -> list[str]:
    # No scheduler address argument: the operator injects DASK_SCHEDULER_ADDRESS, which Dask reads.
    return [
        "dask", "worker",
        "--name", "$(DASK_WORKER_NAME)",
        "--nthreads", str(workers.threads),
        "--memory-limit", str(workers.memory_bytes),
        "--dashboard-address", f":{WORKER_DASHBOARD_PORT}",
        "--local-directory", SCRATCH_DIR,
    ]  # fmt: skip


def worker_resources(w: WorkerPodConfig) -> dict[str, Any]:
    limits = {"memory": w.memory} | ({"cpu": w.cpu_limit} if w.cpu_limit else {})
    return {"requests": {"cpu": w.cpu, "memory": w.memory}, "limits": limits}


def scheduler_resources(cluster: ClusterConfig) -> dict[str, Any]:
    s = cluster.scheduler
    # A quota namespace that needs limits.cpu on workers needs it on the scheduler too (guide tip).
    cpu_limited = any(g.cpu_limit for g in (cluster.workers, *cluster.worker_groups.values()))
    limits = {"memory": s.memory} | ({"cpu": s.cpu} if cpu_limited else {})
    return {"requests": {"cpu": s.cpu, "memory": s.memory}, "limits": limits}


def _pod_spec(
    containers: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
    pull_secret: str | None,
    placement: dict[str, Any] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"securityContext": POD_SECURITY_CONTEXT, "containers": containers}
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


def worker_template(
    cluster: ClusterConfig,
    group: str,
    workers: WorkerPodConfig,
    image: str,
    storage: PodStorage,
    pull_secret: str | None,
) -> dict[str, Any]:
    """`spec.worker` of a DaskCluster (the default group) or DaskWorkerGroup, without `replicas`.

    Every group gets the same container (image, storage mounts, env, security context, memory limit rules);
    only threads, resources and placement come from the group. The operator copies `metadata.labels` onto
    the worker pods: GROUP_LABEL names the group independently of the DaskCluster's name."""
    worker = {
        "name": "worker",
        "image": image,
        "args": worker_args(workers),
        "resources": worker_resources(workers),
        "ports": [{"name": DASHBOARD_PORT_NAME, "containerPort": WORKER_DASHBOARD_PORT, "protocol": "TCP"}],
        "volumeMounts": [*storage.worker_mounts, {"name": "dask-scratch", "mountPath": SCRATCH_DIR}],
        "securityContext": CONTAINER_SECURITY_CONTEXT,
    }
    if storage.env:
        worker["env"] = storage.env
    volumes = [*storage.volumes, {"name": "dask-scratch", "emptyDir": {}}]
    return {
        "metadata": {"labels": {GROUP_LABEL: group}},
        "spec": _pod_spec([worker], volumes, pull_secret, worker_placement(cluster, group, workers)),
    }


def worker_group_workers(
    cluster: ClusterConfig, image: str, storage: PodStorage, pull_secret: str | None
) -> dict[str, dict[str, Any]]:
    """`spec.worker` (replicas included) of each extra worker group, by configured name.

    Independent of the DaskCluster's live name, so it can be part of what identifies the cluster spec."""
    return {
        group: {"replicas": workers.replicas, **worker_template(cluster, group, workers, image, storage, pull_secret)}
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
            "name": scheduler_service_name(cluster_name),
            "namespace": namespace,
            "labels": {**LABELS, APP_NAME_LABEL: cluster.name},
        },
        "spec": {
            "maxUnavailable": 0,
            "selector": {"matchLabels": {CLUSTER_NAME_LABEL: cluster_name, COMPONENT_LABEL: "scheduler"}},
        },
    }


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
    labels = {**LABELS, APP_NAME_LABEL: cluster.name}
    spec: dict[str, Any] = {
        "idleTimeout": cluster.idle_timeout_seconds,
        "worker": {
            "replicas": cluster.workers.replicas,
            **worker_template(cluster, DEFAULT_GROUP, cluster.workers, image, storage, pull_secret),
        },
        "scheduler": {
            "spec": _pod_spec([scheduler], scheduler_volumes, pull_secret, scheduler_placement(cluster)),
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
    """A DaskCluster running the pinned LSDB image, plus its DaskAutoscaler when enabled, its extra
    DaskWorkerGroups and the scheduler's PodDisruptionBudget, all following the live DaskCluster's name."""

    dask_cluster: k8s.apiextensions.CustomResource
    autoscaler: k8s.apiextensions.CustomResource | None
    worker_groups: dict[str, k8s.apiextensions.CustomResource]
    disruption_budget: k8s.policy.v1.PodDisruptionBudget | None
    cluster_name: pulumi.Output[str]
    spec_hash: pulumi.Output[str]
    endpoints: pulumi.Output[dict[str, str]]
    worker_group_names: pulumi.Output[dict[str, str]]

    def __init__(self, name: str, args: LsdbDaskClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        cluster, namespace, storage, pull_secret = args.cluster, args.namespace, args.storage, args.pull_secret
        super().__init__("lsdb-k8s:cluster:LsdbDaskCluster", name, {}, opts)
        image = pulumi.Output.from_input(args.image)
        manifest = image.apply(lambda ref: dask_cluster_manifest(cluster, namespace, ref, storage, pull_secret))
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
        groups = image.apply(lambda ref: worker_group_workers(cluster, ref, storage, pull_secret))
        self.worker_groups = self._worker_groups(name, args, groups, opts)
        self.worker_group_names = self.cluster_name.apply(
            lambda n: {g: worker_group_name(n, g) for g in sorted(cluster.worker_groups)}
        )
        self.disruption_budget = self._disruption_budget(name, args, opts)
        self.spec_hash = pulumi.Output.all(manifest, groups).apply(lambda mg: manifest_hash(mg[0], scaler, mg[1]))
        self.register_outputs(
            {"clusterName": self.cluster_name, "endpoints": self.endpoints, "workerGroups": self.worker_group_names}
        )

    def _worker_groups(
        self,
        name: str,
        args: LsdbDaskClusterArgs,
        groups: pulumi.Output[dict[str, dict[str, Any]]],
        opts: pulumi.ResourceOptions | None,
    ) -> dict[str, k8s.apiextensions.CustomResource]:
        """One DaskWorkerGroup per extra group, named after the live DaskCluster.

        First `pulumi up`: created after the DaskCluster (the operator's create handler looks the cluster up and
        adopts the group, so deleting the cluster deletes its groups). A new live cluster name (a blue/green
        replacement) renames the group: Pulumi creates the new cluster's group and deletes the old one, which
        also goes with the old cluster. The operator reacts to `spec.worker.replicas` only, so a change of the
        worker pod template replaces the group (`replace_on_changes`; same name, so the Kubernetes provider
        deletes before it creates); replicas change in place. `pulumi destroy`: deleted with the cluster."""
        cluster, namespace = args.cluster, args.namespace
        created: dict[str, k8s.apiextensions.CustomResource] = {}
        for group in sorted(cluster.worker_groups):

            def render(names_and_groups: list[Any], group: str = group) -> dict[str, Any]:
                live_name, workers = names_and_groups
                return worker_group_manifest(cluster, namespace, live_name, group, workers[group])

            manifest = pulumi.Output.all(self.cluster_name, groups).apply(render)
            created[group] = k8s.apiextensions.CustomResource(
                f"{name}-workergroup-{group}",
                api_version=API_VERSION,
                kind="DaskWorkerGroup",
                metadata=manifest["metadata"],
                spec=manifest["spec"],
                opts=pulumi.ResourceOptions.merge(
                    child_options(self, opts, self.dask_cluster),
                    pulumi.ResourceOptions(replace_on_changes=["spec.worker.spec", "spec.worker.metadata"]),
                ),
            )
        return created

    def _disruption_budget(
        self, name: str, args: LsdbDaskClusterArgs, opts: pulumi.ResourceOptions | None
    ) -> k8s.policy.v1.PodDisruptionBudget | None:
        """The scheduler's PodDisruptionBudget, for the live cluster (renamed with it); none when turned off."""
        if not args.cluster.scheduler.disruption_budget:
            return None
        manifest = self.cluster_name.apply(
            lambda n: scheduler_disruption_budget_manifest(args.cluster, args.namespace, n)
        )
        return k8s.policy.v1.PodDisruptionBudget(
            f"{name}-scheduler-pdb",
            metadata=manifest["metadata"],
            spec=manifest["spec"],
            opts=child_options(self, opts, self.dask_cluster),
        )
