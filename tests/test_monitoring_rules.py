"""What Prometheus and Grafana get from components/monitoring.py, called directly: the operator chart's monitor
values, this stack's own ServiceMonitor and PodMonitor (the pods they select, the port and labels they scrape),
the dashboard's queries, layout and verification panel, and `LsdbMonitoring` alone under the mocks. Fast enough
for mutation testing (docs/mutation.md); tests/test_monitoring.py checks the same through the whole program and
against the pinned chart's templates, tests/test_e2e.py the metric names against real Dask processes."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pulumi
import pytest

from components.config import ClusterConfig, MonitoringConfig, parse_stack_config
from components.monitoring import (
    LsdbMonitoring,
    chart_monitoring_values,
    dashboard_config_map,
    dashboard_json,
    dashboard_queries,
    group_memory_limits,
    monitor_manifests,
    prometheus_label,
    verification_markdown,
)
from tests.support.dashboard import dashboard_metric_names
from tools.mock_runtime import ProgramRun, run_program

GiB = 2**30
ON: dict[str, Any] = {"enabled": True, "labels": {"release": "kube-prometheus-stack"}}
THIS = 'namespace="astro", app_kubernetes_io_name="lsdb-x"'
# The labels the operator puts on a DaskCluster's scheduler Service and worker pods (tools/operator_objects.py),
# with the DaskCluster's own `app.kubernetes.io/name` (= cluster.name) copied onto them.
SCHEDULER_SERVICE = {"dask.org/cluster-name": "lsdb-x-0a1b", "dask.org/component": "scheduler",
                     "app.kubernetes.io/name": "lsdb-x"}  # fmt: skip
WORKER_POD = {"dask.org/cluster-name": "lsdb-x-0a1b", "dask.org/component": "worker",
              "dask.org/workergroup-name": "lsdb-x-0a1b-default", "app.kubernetes.io/name": "lsdb-x"}  # fmt: skip


def stack(**sections: Any) -> Any:
    return parse_stack_config({"verify": {"enabled": False}, "image": {"repository": "r/x"}, **sections})


def cluster(**keys: Any) -> ClusterConfig:
    return stack(cluster={"name": "lsdb-x", **keys}).cluster  # type: ignore[no-any-return]


def monitoring(**keys: Any) -> MonitoringConfig:
    return stack(monitoring={**ON, **keys}).monitoring  # type: ignore[no-any-return]


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


# --- monitors ---------------------------------------------------------------------------------------------------


def test_prometheus_label_names() -> None:
    assert prometheus_label("dask.org/cluster-name") == "dask_org_cluster_name"
    assert prometheus_label("app.kubernetes.io/name") == "app_kubernetes_io_name"
    assert prometheus_label("a_B9:x") == "a_B9_x"


def test_monitoring_off_sets_no_chart_value() -> None:
    assert chart_monitoring_values(stack().monitoring, "astro") == {}
    assert chart_monitoring_values(stack(monitoring={"enabled": False, "labels": {"a": "b"}}).monitoring, "n") == {}


def test_the_charts_monitors_scrape_this_namespace_with_the_labels_prometheus_selects() -> None:
    targets = ["dask.org/cluster-name", "app.kubernetes.io/name"]
    common = {"enabled": True, "namespaceSelector": {"matchNames": ["astro"]},
              "additionalLabels": {"release": "kube-prometheus-stack"}, "interval": "15s"}  # fmt: skip
    assert chart_monitoring_values(monitoring(), "astro") == {
        "metrics": {
            "scheduler": {"enabled": True, "serviceMonitor": {**common, "targetLabels": targets}},
            "worker": {
                "enabled": True,
                # The pinned template reads targetLabels for the PodMonitor's podTargetLabels: both set.
                "podMonitor": {
                    **common,
                    "podTargetLabels": [*targets, "dask.org/workergroup-name"],
                    "targetLabels": [*targets, "dask.org/workergroup-name"],
                },
            },
        }
    }


def test_the_scheduler_monitor_selects_the_live_clusters_scheduler_service() -> None:
    monitor = monitor_manifests(cluster(), "astro", "lsdb-x-0a1b", {"release": "kps"})["ServiceMonitor"]
    assert (monitor["apiVersion"], monitor["kind"]) == ("monitoring.coreos.com/v1", "ServiceMonitor")
    # Named after cluster.name: a blue/green rename updates it in place.
    assert monitor["metadata"] == {
        "name": "lsdb-x-scheduler",
        "namespace": "astro",
        "labels": {"app.kubernetes.io/part-of": "lsdb-k8s", "app.kubernetes.io/name": "lsdb-x", "release": "kps"},
    }
    spec = monitor["spec"]
    assert selects(spec["selector"], SCHEDULER_SERVICE)
    assert not selects(spec["selector"], WORKER_POD)
    assert not selects(spec["selector"], {**SCHEDULER_SERVICE, "dask.org/cluster-name": "lsdb-x-ffff"})  # the old one
    assert spec["namespaceSelector"] == {"matchNames": ["astro"]}
    assert spec["endpoints"] == [{"port": "http-dashboard", "path": "/metrics", "interval": "15s"}]
    assert spec["targetLabels"] == ["dask.org/cluster-name", "app.kubernetes.io/name"]
    assert set(spec) == {"selector", "namespaceSelector", "endpoints", "targetLabels"}


def test_the_workers_monitor_selects_every_worker_pod_of_the_live_cluster() -> None:
    monitor = monitor_manifests(cluster(), "astro", "lsdb-x-0a1b", {"release": "kps"})["PodMonitor"]
    assert (monitor["apiVersion"], monitor["kind"]) == ("monitoring.coreos.com/v1", "PodMonitor")
    assert monitor["metadata"] == {
        "name": "lsdb-x-workers",
        "namespace": "astro",
        "labels": {"app.kubernetes.io/part-of": "lsdb-k8s", "app.kubernetes.io/name": "lsdb-x", "release": "kps"},
    }
    spec = monitor["spec"]
    assert selects(spec["selector"], WORKER_POD)
    assert selects(spec["selector"], {**WORKER_POD, "dask.org/workergroup-name": "lsdb-x-0a1b-highmem"})
    assert not selects(spec["selector"], SCHEDULER_SERVICE)
    assert not selects(spec["selector"], {**WORKER_POD, "dask.org/cluster-name": "lsdb-x-ffff"})
    assert spec["namespaceSelector"] == {"matchNames": ["astro"]}
    assert spec["podMetricsEndpoints"] == [{"port": "http-dashboard", "path": "/metrics", "interval": "15s"}]
    assert spec["podTargetLabels"] == ["dask.org/cluster-name", "app.kubernetes.io/name", "dask.org/workergroup-name"]
    assert set(spec) == {"selector", "namespaceSelector", "podMetricsEndpoints", "podTargetLabels"}


def test_the_users_labels_win_over_the_programs() -> None:
    monitor = monitor_manifests(cluster(), "n", "c", {"app.kubernetes.io/part-of": "mine"})["ServiceMonitor"]
    assert monitor["metadata"]["labels"]["app.kubernetes.io/part-of"] == "mine"
    assert (
        monitor_manifests(cluster(), "n", "c", {"app.kubernetes.io/name": "x"})["PodMonitor"]["metadata"]["labels"][
            "app.kubernetes.io/name"
        ]
        == "x"
    )


# --- dashboard --------------------------------------------------------------------------------------------------


def test_each_groups_memory_limit_in_bytes_default_first() -> None:
    groups = {"zeta": {"memory": "1Gi"}, "highmem": {"memory": "16Gi"}}
    assert list(group_memory_limits(cluster(workers={"memory": "8Gi"}, workerGroups=groups)).items()) == [
        ("default", 8 * GiB),
        ("highmem", 16 * GiB),
        ("zeta", 1 * GiB),
    ]


def test_every_query_selects_this_namespace_and_cluster_name() -> None:
    queries = dashboard_queries(cluster(workerGroups={"highmem": {"memory": "16Gi"}}), "astro")
    assert queries == {
        "Workers by state": [(f"sum by (state) (dask_scheduler_workers{{{THIS}}})", "{{state}}")],
        "Workers by group": [
            (f"count by (dask_org_workergroup_name) (dask_worker_threads{{{THIS}}})", "{{dask_org_workergroup_name}}")
        ],
        "Worker memory used vs limit": [
            (f'sum by (pod) (dask_worker_memory_bytes{{{THIS}, type=~"managed|unmanaged"}})', "{{pod}}"),
            (f"vector({4 * GiB})", "limit (default)"),
            (f"vector({16 * GiB})", "limit (highmem)"),
        ],
        "Tasks processing / waiting": [
            (f'sum by (state) (dask_scheduler_tasks{{{THIS}, state=~"processing|waiting|queued|no-worker"}})',
             "{{state}}")
        ],
        "Spilled bytes": [
            (f'sum by (pod) (dask_worker_memory_bytes{{{THIS}, type="spilled"}})', "on disk {{pod}}"),
            (f'sum(rate(dask_worker_spill_bytes_total{{{THIS}, activity="disk_write"}}[5m]))', "written/s"),
        ],
    }  # fmt: skip


def test_metric_names_are_read_from_every_panels_queries() -> None:
    dashboard = {
        "panels": [
            {"targets": [{"expr": "sum(a_b{x}) + rate(c:d{y}[5m])"}, {"expr": "vector(1)"}, {}]},
            {"type": "text"},
            {"targets": [{"expr": "e_f{z}"}]},
        ]
    }
    assert dashboard_metric_names(dashboard) == {"a_b", "c:d", "e_f"}
    assert dashboard_metric_names({}) == set()


RESULT = {"rows": 812.0, "partitions": 3.0, "workers": 3.0, "workersByGroup": {"c-highmem": 1.0, "c-default": 2.0},
          "elapsedSeconds": 4.25, "warnings": ["a worker left", "slow"]}  # fmt: skip


def test_the_verification_panel_shows_the_last_pass() -> None:
    lines = verification_markdown(RESULT).split("\n")
    assert lines[0] == (
        "**Last verification: passed** (it runs on every `pulumi up` that changes the cluster, image or query; "
        "a failing check fails the deploy, so this panel only ever shows a pass)."
    )
    assert lines[1:] == [
        "",
        "* rows in the cone: 812 from 3 partition(s)",
        "* workers: 3 (c-default: 2, c-highmem: 1)",
        "* elapsed: 4.2 s",
        "* warning: a worker left",
        "* warning: slow",
    ]
    assert verification_markdown(None) == "Post-deploy verification is off (`verify.enabled: false`)."


def test_the_verification_panel_with_missing_values() -> None:
    lines = verification_markdown({"rows": None, "workersByGroup": None, "warnings": None}).split("\n")
    assert lines[2:] == ["* rows in the cone: 0 from 0 partition(s)", "* workers: 0", "* elapsed: 0.0 s"]


def test_dashboard_layout_two_panels_a_row_then_the_verification() -> None:
    dashboard = dashboard_json(cluster(workerGroups={"highmem": {"memory": "16Gi"}}), "astro", RESULT)
    datasource = {"type": "prometheus", "uid": "${datasource}"}
    panels = dashboard["panels"]
    assert [p["id"] for p in panels] == [1, 2, 3, 4, 5, 6]
    assert [(p["gridPos"]["x"], p["gridPos"]["y"]) for p in panels] == [(0, 0), (12, 0), (0, 8), (12, 8), (0, 16),
                                                                        (12, 16)]  # fmt: skip
    assert all((p["gridPos"]["w"], p["gridPos"]["h"]) == (12, 8) for p in panels)
    assert all(type(v) is int for p in panels for v in p["gridPos"].values())  # whole grid units, not 12.0
    charts, text = panels[:-1], panels[-1]
    assert [p["fieldConfig"]["defaults"]["unit"] for p in charts] == ["short", "short", "bytes", "short", "bytes"]
    queries = dashboard_queries(cluster(workerGroups={"highmem": {"memory": "16Gi"}}), "astro")
    for panel, (title, expected) in zip(charts, queries.items(), strict=True):
        assert panel["title"] == title and panel["type"] == "timeseries" and panel["datasource"] == datasource
        assert panel["fieldConfig"]["overrides"] == []
        assert panel["targets"] == [
            {"refId": "ABC"[i], "datasource": datasource, "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(expected)
        ]
    assert text == {
        "id": 6,
        "type": "text",
        "title": "Post-deploy verification",
        "gridPos": {"h": 8, "w": 12, "x": 12, "y": 16},
        "options": {"mode": "markdown", "content": verification_markdown(RESULT)},
    }


def test_dashboard_identity_time_and_datasource_variable() -> None:
    dashboard = dashboard_json(cluster(), "astro", None)
    assert {k: v for k, v in dashboard.items() if k != "panels"} == {
        "uid": "lsdb-lsdb-x",
        "title": "LSDB Dask cluster lsdb-x (astro)",
        "tags": ["lsdb", "dask"],
        "schemaVersion": 39,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "templating": {
            "list": [{"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}]
        },
    }
    # Grafana's uid is at most 40 characters; the longest cluster.name (28) fits whole.
    longest = stack(cluster={"name": "a" * 28}).cluster
    assert dashboard_json(longest, "n", None)["uid"] == "lsdb-" + "a" * 28


def test_the_dashboard_config_map_for_the_grafana_sidecar() -> None:
    cfg = monitoring(dashboardLabels={"grafana_dashboard": "1", "app.kubernetes.io/name": "mine"})
    cm = dashboard_config_map(cluster(), cfg, "astro", RESULT)
    assert (cm["apiVersion"], cm["kind"]) == ("v1", "ConfigMap")
    assert cm["metadata"] == {
        "name": "lsdb-x-dashboard",
        "namespace": "astro",
        "labels": {"app.kubernetes.io/part-of": "lsdb-k8s", "app.kubernetes.io/name": "mine", "grafana_dashboard": "1"},
    }
    assert list(cm["data"]) == ["lsdb-x.json"]
    assert json.loads(cm["data"]["lsdb-x.json"]) == dashboard_json(cluster(), "astro", RESULT)
    assert cm["data"]["lsdb-x.json"].startswith('{\n "uid"')  # indented for a readable ConfigMap
    elsewhere = dashboard_config_map(cluster(), monitoring(dashboardNamespace="grafana"), "astro", None)
    assert elsewhere["metadata"]["namespace"] == "grafana"
    assert json.loads(elsewhere["data"]["lsdb-x.json"])["title"] == "LSDB Dask cluster lsdb-x (astro)"


# --- the component ----------------------------------------------------------------------------------------------


def run_monitoring(
    own_monitors: bool, verification: Mapping[str, Any] | None = None, **keys: Any
) -> tuple[ProgramRun, LsdbMonitoring]:
    made: list[LsdbMonitoring] = []

    def program() -> None:
        wait = pulumi.CustomResource("test:index:DaskCluster", "dc")
        config = stack(
            namespace="astro",
            cluster={"name": "lsdb-x"},
            monitoring={**ON, **keys},
            operator={"install": not own_monitors},
        )
        result = pulumi.Output.from_input(verification) if verification is not None else None
        made.append(LsdbMonitoring("mon", config, pulumi.Output.from_input("lsdb-x-0a1b"), result,
                                   pulumi.ResourceOptions(depends_on=[wait])))  # fmt: skip

    return run_program({}, program=program), made[0]


def test_own_monitors_and_the_dashboard_are_the_pure_manifests_under_the_component() -> None:
    run, component = run_monitoring(True, RESULT)
    me, wait = run.one("lsdb-k8s:monitoring:LsdbMonitoring"), run.named("dc")
    assert wait.urn in me.dependencies
    expected = {
        "mon-scheduler": monitor_manifests(cluster(), "astro", "lsdb-x-0a1b", ON["labels"])["ServiceMonitor"],
        "mon-workers": monitor_manifests(cluster(), "astro", "lsdb-x-0a1b", ON["labels"])["PodMonitor"],
    }
    for name, manifest in expected.items():
        monitor = run.named(name)
        assert monitor.type == f"kubernetes:monitoring.coreos.com/v1:{manifest['kind']}"
        assert monitor.inputs == manifest
        assert monitor.parent == me.urn and wait.urn in monitor.dependencies
    dashboard = run.named("mon-dashboard")
    assert dashboard.type == "kubernetes:core/v1:ConfigMap"
    manifest = dashboard_config_map(cluster(), monitoring(), "astro", RESULT)
    assert dashboard.inputs == manifest
    assert dashboard.parent == me.urn and wait.urn in dashboard.dependencies
    assert component.service_monitor is not None and component.pod_monitor is not None
    assert component.dashboard is not None


def test_the_charts_monitors_leave_only_the_dashboard() -> None:
    run, component = run_monitoring(False)
    assert [r.name for r in run.resources if r.custom and r.name != "dc"] == ["mon-dashboard"]
    content = json.loads(run.named("mon-dashboard").inputs["data"]["lsdb-x.json"])["panels"][-1]["options"]["content"]
    assert content == verification_markdown(None)
    assert component.service_monitor is None and component.pod_monitor is None


@pytest.mark.parametrize("own", [True, False])
def test_no_dashboard_when_it_is_off(own: bool) -> None:
    run, component = run_monitoring(own, dashboard=False)
    assert run.of_type("kubernetes:core/v1:ConfigMap") == [] and component.dashboard is None
    assert len([r for r in run.resources if "monitoring.coreos.com" in r.type]) == (2 if own else 0)
