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

# Fixed (not Pulumi's random one): `kubectl get service ... --show-managed-fields` says who set the selector.
SELECTOR_FIELD_MANAGER = "lsdb-k8s-stable-endpoint"


def stable_service_manifest(name: str, namespace: str) -> dict[str, Any]:
    """`<cluster.name>-scheduler` with NO selector (routing nothing until a cluster is verified): a selector is an
    atomic map under Server-Side Apply, owned whole by `stable_service_selector_patch`."""
    labels = {**LABELS, APP_NAME_LABEL: name}
    spec = {"type": "ClusterIP", "ports": scheduler_service_ports()}
    return _stable_service(name, namespace, {"labels": labels}, spec)


def stable_service_selector_patch(name: str, live_name: str, namespace: str) -> dict[str, Any]:
    """Points the stable Service at `live_name`'s scheduler pod, forcing conflicts: a hand edit is taken back."""
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


def cluster_endpoints(
    name: str, live_name: str, namespace: str, kube_context: str | None, tls: bool = False
) -> dict[str, str]:
    """Stack exports: the stable Service's addresses and port-forwards; the live cluster's pod listings."""
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
    """The Service clients use, created before every cluster and deleted after them (docs/lifecycle.md)."""

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
    """The stable Service's selector, switched only after the live cluster passed its verification; deleted first
    at destroy (the provider relinquishes the field, so routing stops before the clusters go)."""

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
