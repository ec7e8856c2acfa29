"""Prometheus monitors for the scheduler and workers, and a Grafana dashboard (`monitoring.*`, docs/operations.md):
the operator chart's own ServiceMonitor and PodMonitor when this stack installs it (`chart_monitoring_values`),
else equivalent ones here, selecting the live cluster's pods by the operator's labels."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.config import ClusterConfig, MonitoringConfig, StackConfig
from components.constants import (
    APP_NAME_LABEL,
    CLUSTER_NAME_LABEL,
    COMPONENT_LABEL,
    DASHBOARD_PORT_NAME,
    LABELS,
    WORKER_GROUP_LABEL,
)
from components.options import child_options, manifest, register

MONITORING_API_VERSION = "monitoring.coreos.com/v1"
TASK_STATES = 'state=~"processing|waiting|queued|no-worker"'
SCRAPE_INTERVAL = "15s"
METRICS_PATH = "/metrics"
SCHEDULER_TARGET_LABELS = [CLUSTER_NAME_LABEL, APP_NAME_LABEL]
WORKER_TARGET_LABELS = [CLUSTER_NAME_LABEL, APP_NAME_LABEL, WORKER_GROUP_LABEL]


def prometheus_label(label: str) -> str:
    """How Prometheus names a Kubernetes label it copies onto a target (`dask.org/cluster-name` -> `dask_org_...`)."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", label)


def chart_monitoring_values(monitoring: MonitoringConfig, cluster_namespace: str) -> dict[str, Any]:
    """Helm values of the operator chart that turn on its ServiceMonitor (scheduler) and PodMonitor (workers)."""
    if not monitoring.enabled:
        return {}
    common = {
        "enabled": True,
        # The chart's monitors scrape the release's (operator's) namespace unless told otherwise.
        "namespaceSelector": {"matchNames": [cluster_namespace]},
        "interval": SCRAPE_INTERVAL,
        "additionalLabels": dict(monitoring.labels),
    }
    # The 2026.3.0 PodMonitor template reads `targetLabels` (not the `podTargetLabels` its values.yaml documents) and
    # renders it as the PodMonitor's podTargetLabels: set both.
    workers = {**common, "podTargetLabels": WORKER_TARGET_LABELS, "targetLabels": WORKER_TARGET_LABELS}
    return {
        "metrics": {
            "scheduler": {"enabled": True, "serviceMonitor": {**common, "targetLabels": SCHEDULER_TARGET_LABELS}},
            "worker": {"enabled": True, "podMonitor": workers},
        }
    }


def monitor_manifests(
    cluster: ClusterConfig, namespace: str, cluster_name: str, labels: Mapping[str, str]
) -> dict[str, dict[str, Any]]:
    """By kind: the scheduler's ServiceMonitor (the operator's scheduler Service of the live cluster) and the
    workers' PodMonitor (every worker pod, all groups), both on port http-dashboard."""
    endpoints = [{"port": DASHBOARD_PORT_NAME, "path": METRICS_PATH, "interval": SCRAPE_INTERVAL}]
    monitors = {  # kind -> (name suffix, component, the key of its endpoints, of its target labels, the labels)
        "ServiceMonitor": ("scheduler", "scheduler", "endpoints", "targetLabels", SCHEDULER_TARGET_LABELS),
        "PodMonitor": ("workers", "worker", "podMetricsEndpoints", "podTargetLabels", WORKER_TARGET_LABELS),
    }
    own_labels = {**LABELS, APP_NAME_LABEL: cluster.name, **labels}
    return {
        kind: manifest(
            MONITORING_API_VERSION,
            kind,
            f"{cluster.name}-{suffix}",
            namespace,
            own_labels,
            spec={
                "selector": {"matchLabels": {CLUSTER_NAME_LABEL: cluster_name, COMPONENT_LABEL: component}},
                "namespaceSelector": {"matchNames": [namespace]},
                endpoints_key: endpoints,
                targets_key: targets,
            },
        )
        for kind, (suffix, component, endpoints_key, targets_key, targets) in monitors.items()
    }


def group_memory_limits(cluster: ClusterConfig) -> dict[str, int]:
    """Each worker group's memory limit in bytes (Dask exports no limit metric; the dashboard draws these)."""
    limits = {"default": cluster.workers.memory_bytes}
    limits |= {group: workers.memory_bytes for group, workers in sorted(cluster.worker_groups.items())}
    return limits


def dashboard_queries(cluster: ClusterConfig, namespace: str) -> dict[str, list[tuple[str, str]]]:
    """Panel title -> [(PromQL, legend)]. Every metric is Dask's own (tests scrape real processes for them)."""
    this = f'namespace="{namespace}", {prometheus_label(APP_NAME_LABEL)}="{cluster.name}"'
    group = prometheus_label(WORKER_GROUP_LABEL)
    return {
        "Workers by state": [(f"sum by (state) (dask_scheduler_workers{{{this}}})", "{{state}}")],
        "Workers by group": [(f"count by ({group}) (dask_worker_threads{{{this}}})", f"{{{{{group}}}}}")],
        "Worker memory used vs limit": [
            (f'sum by (pod) (dask_worker_memory_bytes{{{this}, type=~"managed|unmanaged"}})', "{{pod}}"),
            *((f"vector({limit})", f"limit ({name})") for name, limit in group_memory_limits(cluster).items()),
        ],
        "Tasks processing / waiting": [
            (f"sum by (state) (dask_scheduler_tasks{{{this}, {TASK_STATES}}})", "{{state}}")
        ],
        "Spilled bytes": [
            (f'sum by (pod) (dask_worker_memory_bytes{{{this}, type="spilled"}})', "on disk {{pod}}"),
            (f'sum(rate(dask_worker_spill_bytes_total{{{this}, activity="disk_write"}}[5m]))', "written/s"),
        ],
    }


def verification_markdown(result: Mapping[str, Any] | None) -> str:
    """The text panel: the verification's last result as of the last `pulumi up` (it fails `up` when it fails)."""
    if result is None:
        return "Post-deploy verification is off (`verify.enabled: false`)."
    groups = ", ".join(f"{g}: {int(n)}" for g, n in sorted((result.get("workersByGroup") or {}).items()))
    warnings = result.get("warnings") or []
    lines = [
        "**Last verification: passed** (it runs on every `pulumi up` that changes the cluster, image or query; "
        "a failing check fails the deploy, so this panel only ever shows a pass).",
        "",
        f"* rows in the cone: {int(result.get('rows') or 0)} from {int(result.get('partitions') or 0)} partition(s)",
        f"* workers: {int(result.get('workers') or 0)}" + (f" ({groups})" if groups else ""),
        f"* elapsed: {float(result.get('elapsedSeconds') or 0):.1f} s",
    ]
    lines += [f"* warning: {w}" for w in warnings]
    return "\n".join(lines)


def dashboard_json(cluster: ClusterConfig, namespace: str, verification: Mapping[str, Any] | None) -> dict[str, Any]:
    """The Grafana dashboard model (schemaVersion 39) for this cluster."""
    datasource = {"type": "prometheus", "uid": "${datasource}"}
    panels: list[dict[str, Any]] = []
    for index, (title, queries) in enumerate(dashboard_queries(cluster, namespace).items()):
        unit = "bytes" if "memory" in title.lower() or "bytes" in title.lower() else "short"
        panels.append(
            {
                "id": index + 1,
                "type": "timeseries",
                "title": title,
                "datasource": datasource,
                "gridPos": {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "targets": [
                    {"refId": chr(ord("A") + i), "datasource": datasource, "expr": expr, "legendFormat": legend}
                    for i, (expr, legend) in enumerate(queries)
                ],
            }
        )
    panels.append(
        {
            "id": len(panels) + 1,
            "type": "text",
            "title": "Post-deploy verification",
            "gridPos": {"h": 8, "w": 12, "x": 12 * (len(panels) % 2), "y": 8 * (len(panels) // 2)},
            "options": {"mode": "markdown", "content": verification_markdown(verification)},
        }
    )
    return {
        "uid": f"lsdb-{cluster.name}"[:40],
        "title": f"LSDB Dask cluster {cluster.name} ({namespace})",
        "tags": ["lsdb", "dask"],
        "schemaVersion": 39,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "templating": {
            "list": [{"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}]
        },
        "panels": panels,
    }


def dashboard_config_map(
    cluster: ClusterConfig, monitoring: MonitoringConfig, namespace: str, verification: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The ConfigMap the Grafana sidecar loads (it watches for `monitoring.dashboardLabels`)."""
    labels = {**LABELS, APP_NAME_LABEL: cluster.name, **monitoring.dashboard_labels}
    data = {f"{cluster.name}.json": json.dumps(dashboard_json(cluster, namespace, verification), indent=1)}
    where = monitoring.dashboard_namespace or namespace
    return manifest("v1", "ConfigMap", f"{cluster.name}-dashboard", where, labels, data=data)


class LsdbMonitoring(pulumi.ComponentResource):
    """The monitors (when the operator, so its chart's monitors, comes from elsewhere) and the Grafana dashboard
    ConfigMap of the live cluster `cluster_name`; a blue/green rename updates the monitors' selectors in place (their
    names follow `cluster.name`). `verification`: LsdbVerification's outputs, None when it is off."""

    service_monitor: k8s.apiextensions.CustomResource | None = None
    pod_monitor: k8s.apiextensions.CustomResource | None = None
    dashboard: k8s.core.v1.ConfigMap | None = None

    def __init__(
        self,
        name: str,
        config: StackConfig,
        cluster_name: pulumi.Input[str],
        verification: pulumi.Input[Mapping[str, Any]] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("lsdb-k8s:monitoring:LsdbMonitoring", name, {}, opts)
        cluster, namespace, monitoring = config.cluster, config.namespace, config.monitoring
        live = pulumi.Output.from_input(cluster_name)
        if not config.operator.install:
            monitors = live.apply(lambda n: monitor_manifests(cluster, namespace, n, monitoring.labels))
            self.service_monitor, self.pod_monitor = (
                register(k8s.apiextensions.CustomResource, f"{name}-{suffix}",
                         {"apiVersion": MONITORING_API_VERSION, "kind": kind}, child_options(self, opts),
                         metadata=monitors[kind]["metadata"], spec=monitors[kind]["spec"])
                for suffix, kind in (("scheduler", "ServiceMonitor"), ("workers", "PodMonitor"))
            )  # fmt: skip
        if monitoring.dashboard:
            manifest = pulumi.Output.from_input(verification).apply(
                lambda v: dashboard_config_map(cluster, monitoring, namespace, v)
            )
            fields = {"metadata": manifest["metadata"], "data": manifest["data"]}
            self.dashboard = register(k8s.core.v1.ConfigMap, f"{name}-dashboard", fields, child_options(self, opts))
        self.register_outputs({})
