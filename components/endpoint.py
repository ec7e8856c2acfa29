"""StableEndpoint: the program-owned Service `<cluster.name>-scheduler` that clients use, and
StableEndpointSelector: the patch that points it at the live DaskCluster (components/cluster.py) once that cluster
passed its verification; the exports that say how to reach it (`cluster_endpoints`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.cluster import in_cluster_address, scheduler_service_ports
from components.constants import (
    APP_NAME_LABEL,
    CLUSTER_NAME_LABEL,
    COMPONENT_LABEL,
    DASHBOARD_PORT,
    LABELS,
    SCHEDULER_PORT,
    kubectl,
    pod_selector,
    scheduler_service_name,
)
from components.options import child_options

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
        "metadata": {"name": scheduler_service_name(name), "namespace": namespace, **metadata},
        "spec": spec,
    }


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


def cluster_endpoints(
    name: str, live_name: str, namespace: str, kube_context: str | None, tls: bool = False
) -> dict[str, str]:
    """How to reach the scheduler (keys: ENDPOINT_KEYS): addresses and port-forwards name the stable Service
    `<name>-scheduler`, which outlives every upgrade; the pod listings name the live cluster `live_name`."""
    svc = scheduler_service_name(name)
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
