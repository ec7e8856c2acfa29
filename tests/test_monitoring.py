"""Monitoring under the mock runtime: chart values or own monitors, the dashboard, and nothing when it is off.

The monitors themselves are validated against the prometheus-operator CRDs in tests/test_schemas.py, and
the dashboard's metric names against real Dask processes in tests/test_e2e.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from components.config import ConfigError, parse_stack_config
from components.monitoring import (
    chart_monitoring_values,
    dashboard_json,
    verification_markdown,
)
from components.operator_chart import packaged_chart_dir
from tests.program_helpers import OPERATOR_INSTALLED, dask_cluster, manifest, run_with
from tests.support.dashboard import dashboard_metric_names

SERVICE_MONITOR = "kubernetes:monitoring.coreos.com/v1:ServiceMonitor"
POD_MONITOR = "kubernetes:monitoring.coreos.com/v1:PodMonitor"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
RELEASE = "kubernetes:helm.sh/v3:Release"
FROM_STACK = {"fromStack": "organization/lsdb-k8s/platform"}
ON = {"enabled": True, "labels": {"release": "kube-prometheus-stack"}}


def release_values(run: Any) -> dict[str, Any]:
    return dict(run.one(RELEASE).inputs["values"])


def test_monitoring_off_creates_nothing_that_needs_the_prometheus_operator() -> None:
    for run in (run_with(operator=OPERATOR_INSTALLED), run_with(operator=FROM_STACK)):
        assert run.of_type(SERVICE_MONITOR) == [] and run.of_type(POD_MONITOR) == []
        assert run.of_type(CONFIG_MAP) == []
        assert not [r for r in run.resources if "monitoring.coreos.com" in r.type]
        assert run.of_type("lsdb-k8s:monitoring:LsdbMonitoring") == []
    assert "metrics" not in release_values(run_with(operator=OPERATOR_INSTALLED))


def test_operator_installed_here_turns_on_the_charts_monitors_for_this_namespace() -> None:
    run = run_with(monitoring=ON, operator=OPERATOR_INSTALLED)
    metrics = release_values(run)["metrics"]
    for component, monitor in (("scheduler", "serviceMonitor"), ("worker", "podMonitor")):
        assert metrics[component]["enabled"] is True and metrics[component][monitor]["enabled"] is True
        assert metrics[component][monitor]["namespaceSelector"] == {"matchNames": ["lsdb-test"]}
        assert metrics[component][monitor]["additionalLabels"] == {"release": "kube-prometheus-stack"}
    assert run.of_type(SERVICE_MONITOR) == [] and run.of_type(POD_MONITOR) == []  # the chart has them
    assert len(run.of_type(CONFIG_MAP)) == 1


def test_chart_values_set_only_keys_the_pinned_chart_reads() -> None:
    chart = packaged_chart_dir()
    values = yaml.safe_load((chart / "values.yaml").read_text())
    templates = "\n".join(p.read_text() for p in (chart / "templates").glob("*monitor*.yaml"))
    config = parse_stack_config({"monitoring": ON, "verify": {"enabled": False}, "image": {"repository": "r/x"}})

    def walk(ours: dict[str, Any], theirs: dict[str, Any], path: str) -> None:
        for key, value in ours.items():
            dotted = f"{path}.{key}"
            # A key counts when the chart's values.yaml declares it or a monitor template reads it.
            assert key in theirs or f".Values{dotted} " in templates + " ", dotted
            if isinstance(value, dict) and isinstance(theirs.get(key), dict) and theirs[key]:
                walk(value, theirs[key], dotted)

    walk(chart_monitoring_values(config.monitoring, "lsdb"), values, "")
    # The worker monitor's labels reach the PodMonitor through the key its template really reads.
    assert ".Values.metrics.worker.podMonitor.targetLabels" in templates
    assert "port: http-dashboard" in templates  # the port name the scheduler and workers declare


def test_operator_from_another_stack_gets_own_monitors_for_the_live_cluster() -> None:
    run = run_with(operator=FROM_STACK, monitoring=ON, cluster={"name": "lsdb-mon"})
    live = dask_cluster(run)["metadata"]["name"]
    scheduler, workers = manifest(run.one(SERVICE_MONITOR)), manifest(run.one(POD_MONITOR))
    assert scheduler["spec"]["selector"]["matchLabels"] == {
        "dask.org/cluster-name": live,
        "dask.org/component": "scheduler",
    }
    assert workers["spec"]["selector"]["matchLabels"] == {"dask.org/cluster-name": live, "dask.org/component": "worker"}
    assert scheduler["spec"]["endpoints"][0]["port"] == "http-dashboard"
    assert workers["spec"]["podMetricsEndpoints"][0]["port"] == "http-dashboard"
    # The named ports exist on the scheduler Service and the worker containers this cluster declares.
    spec = dask_cluster(run)["spec"]
    assert "http-dashboard" in {p["name"] for p in spec["scheduler"]["service"]["ports"]}
    assert "http-dashboard" in {p["name"] for p in spec["worker"]["spec"]["containers"][0]["ports"]}
    for monitor in (scheduler, workers):
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert monitor["metadata"]["namespace"] == "lsdb-test"
    assert "metrics" not in json.dumps([r.inputs for r in run.of_type(RELEASE)])
    component = run.one("lsdb-k8s:monitoring:LsdbMonitoring")
    # Waiting on the cluster component means waiting on its children.
    assert run.one("kubernetes:kubernetes.dask.org/v1:DaskCluster").urn in component.dependencies
    assert run.one("kubernetes:kubernetes.dask.org/v1:DaskCluster").urn in run.one(SERVICE_MONITOR).dependencies


def test_the_charts_monitors_and_this_stacks_agree() -> None:
    """Whichever makes them (the operator chart here, this stack when the operator comes from elsewhere), the
    monitors scrape the cluster's namespace, carry the labels the Prometheus selects them by, and read the same
    port, path, interval and target labels. The chart's side is its values as its templates render them."""
    config = parse_stack_config(
        {"namespace": "lsdb-test", "monitoring": ON, "verify": {"enabled": False}, "image": {"repository": "r/x"}}
    )
    chart = chart_monitoring_values(config.monitoring, config.namespace)["metrics"]
    templates = {
        component: (packaged_chart_dir() / "templates" / name).read_text()
        for component, name in (("scheduler", "servicemonitor-scheduler.yaml"), ("worker", "podmonitor-workers.yaml"))
    }
    run = run_with(operator=FROM_STACK, monitoring=ON)
    own = {"scheduler": manifest(run.one(SERVICE_MONITOR)), "worker": manifest(run.one(POD_MONITOR))}
    shapes = {"scheduler": ("serviceMonitor", "endpoints", "targetLabels"),
              "worker": ("podMonitor", "podMetricsEndpoints", "podTargetLabels")}  # fmt: skip
    for component, (monitor, endpoints_key, targets_key) in shapes.items():
        values, ours, template = chart[component][monitor], own[component], templates[component]
        # Namespace selection: the template renders the value's namespaceSelector as it is.
        assert f".Values.metrics.{component}.{monitor}.namespaceSelector | toYaml" in template
        assert ours["spec"]["namespaceSelector"] == values["namespaceSelector"] == {"matchNames": ["lsdb-test"]}
        # The labels the Prometheus selects monitors by (monitoring.labels) are on both.
        assert f"with .Values.metrics.{component}.{monitor}.additionalLabels" in template
        assert values["additionalLabels"] == ON["labels"]
        assert ours["metadata"]["labels"].items() >= ON["labels"].items()
        (endpoint,) = ours["spec"][endpoints_key]
        assert f"port: {endpoint['port']}" in template and endpoint["interval"] == values["interval"]
        assert endpoint["path"] == "/metrics" and "path:" not in template  # the prometheus-operator's default path
        # Target labels: the templates render `targetLabels` (the PodMonitor's as podTargetLabels).
        assert f"with .Values.metrics.{component}.{monitor}.targetLabels" in template
        assert ours["spec"][targets_key] == values["targetLabels"]
        assert ours["spec"]["selector"]["matchLabels"]["dask.org/component"] == component
        assert f'dask.org/component: "{component}"' in template


def test_dashboard_config_map_for_the_grafana_sidecar() -> None:
    run = run_with(
        monitoring={**ON, "dashboardLabels": {"grafana_dashboard": "1", "team": "astro"}},
        cluster={"name": "lsdb-dash", "workerGroups": {"highmem": {"memory": "16Gi"}}},
    )
    cm = manifest(run.one(CONFIG_MAP))
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1" and cm["metadata"]["labels"]["team"] == "astro"
    (body,) = cm["data"].values()
    dashboard = json.loads(body)
    titles = [p["title"] for p in dashboard["panels"]]
    assert titles == [
        "Workers by state",
        "Workers by group",
        "Worker memory used vs limit",
        "Tasks processing / waiting",
        "Spilled bytes",
        "Post-deploy verification",
    ]
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert all('namespace="lsdb-test"' in e and 'app_kubernetes_io_name="lsdb-dash"' in e for e in exprs if "{" in e)
    assert f"vector({16 * 2**30})" in exprs and f"vector({4 * 2**30})" in exprs  # each group's memory limit
    assert dashboard_metric_names(dashboard) == {
        "dask_scheduler_workers",
        "dask_worker_threads",
        "dask_worker_memory_bytes",
        "dask_scheduler_tasks",
        "dask_worker_spill_bytes_total",
    }


def test_dashboard_namespace_can_differ() -> None:
    run = run_with(monitoring={**ON, "dashboardNamespace": "monitoring", "dashboard": True})
    assert manifest(run.one(CONFIG_MAP))["metadata"]["namespace"] == "monitoring"
    assert run_with(monitoring={**ON, "dashboard": False}).of_type(CONFIG_MAP) == []


def test_verification_panel_shows_the_last_result() -> None:
    text = verification_markdown(
        {"rows": 812.0, "partitions": 3.0, "workers": 3.0, "workersByGroup": {"c-default": 2.0, "c-highmem": 1.0},
         "elapsedSeconds": 4.25, "warnings": ["a worker left"]}
    )  # fmt: skip
    assert "passed" in text and "812" in text and "c-default: 2, c-highmem: 1" in text and "4.2 s" in text
    assert "a worker left" in text
    assert "off" in verification_markdown(None)
    config = parse_stack_config({"verify": {"enabled": False}, "image": {"repository": "r/x"}})
    panel = dashboard_json(config.cluster, "ns", None)["panels"][-1]
    assert panel["type"] == "text" and "off" in panel["options"]["content"]


def test_dashboard_takes_the_verification_outputs_when_verification_runs() -> None:
    run = run_with(monitoring=ON, verify={"catalogPath": "/data/x"})
    cm = run.one(CONFIG_MAP)
    verification = run.one("pulumi-python:dynamic/lsdb:Verification")
    # The dashboard is rendered from the verification's outputs: it waits for them and shows the result panel.
    assert verification.urn in cm.dependencies
    assert "Last verification: passed" in json.dumps(cm.inputs)


def test_platform_stack_leaves_monitors_to_the_environments() -> None:
    # A platform stack runs no cluster: monitoring is configured by the environments taking its operator.
    with pytest.raises(ConfigError, match="monitoring"):
        parse_stack_config({"role": "platform", "monitoring": ON})
