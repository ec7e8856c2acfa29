"""The program-owned Service `<cluster.name>-scheduler` clients use (StableEndpoint) and the patch pointing it at the
live DaskCluster once that cluster passed its verification (StableEndpointSelector): docs/lifecycle.md."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.cluster import in_cluster_address, scheduler_service_ports
from components.config import StackConfig
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
from components.options import child_options, register

# Fixed (not Pulumi's random one): `kubectl get service ... --show-managed-fields` says who set the selector.
SELECTOR_FIELD_MANAGER = "lsdb-k8s-stable-endpoint"


def _metadata(cluster_name: str, namespace: str, **more: Any) -> dict[str, Any]:
    return {"name": scheduler_service_name(cluster_name), "namespace": namespace, **more}


class StableEndpoint(pulumi.ComponentResource):
    """With NO selector (a selector is an atomic map under Server-Side Apply, owned whole by the patch).
    `endpoints`: the stack exports that say how to reach it."""

    service: k8s.core.v1.Service
    endpoints: dict[str, str]

    def __init__(self, name: str, config: StackConfig, live_name: str, opts: pulumi.ResourceOptions | None) -> None:
        """`live_name`: the live DaskCluster (its pods, in the exported kubectl commands)."""
        super().__init__("lsdb-k8s:cluster:StableEndpoint", name, {}, opts)
        cluster_name, namespace, tls = config.cluster.name, config.namespace, config.security.tls
        service = {
            "metadata": _metadata(cluster_name, namespace, labels={**LABELS, APP_NAME_LABEL: cluster_name}),
            "spec": {"type": "ClusterIP", "ports": scheduler_service_ports()},
        }
        self.service = register(k8s.core.v1.Service, f"{name}-service", service, child_options(self, opts))
        svc, k = scheduler_service_name(cluster_name), kubectl(config.kube_context)
        self.endpoints = {
            "schedulerAddress": in_cluster_address(svc, namespace, tls),
            "dashboardUrl": f"http://{svc}.{namespace}.svc.cluster.local:{DASHBOARD_PORT}/status",
            "localSchedulerAddress": f"{'tls' if tls else 'tcp'}://localhost:{SCHEDULER_PORT}",
            "localDashboardUrl": f"http://localhost:{DASHBOARD_PORT}/status",
            "kubectlSchedulerPods": f"{k} get pods -n {namespace} -l {pod_selector(live_name, 'scheduler')}",
            "kubectlWorkerPods": f"{k} get pods -n {namespace} -l {pod_selector(live_name, 'worker')}",
        }
        self.register_outputs({"endpoints": self.endpoints})


class StableEndpointSelector(pulumi.ComponentResource):
    """Forced: a hand edit is taken back. Deleted first at destroy: routing stops before the clusters go."""

    patch: k8s.core.v1.ServicePatch

    def __init__(self, name: str, config: StackConfig, live_name: str, opts: pulumi.ResourceOptions | None) -> None:
        """`live_name`: the DaskCluster to serve (plain: known at evaluation, so preview shows the switch)."""
        super().__init__("lsdb-k8s:cluster:StableEndpointSelector", name, {}, opts)
        cluster_name, namespace = config.cluster.name, config.namespace
        annotations = {"pulumi.com/patchFieldManager": SELECTOR_FIELD_MANAGER, "pulumi.com/patchForce": "true"}
        selector = {CLUSTER_NAME_LABEL: live_name, COMPONENT_LABEL: "scheduler"}
        patch = {
            "metadata": _metadata(cluster_name, namespace, annotations=annotations),
            "spec": {"selector": selector},
        }
        self.patch = register(k8s.core.v1.ServicePatch, f"{name}-patch", patch, child_options(self, opts))
        self.register_outputs({"selector": selector})
