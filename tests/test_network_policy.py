"""The NetworkPolicies around a DaskCluster, evaluated with Kubernetes' semantics (tests/support/netpol.py).

The pods are the ones the pinned operator builds from the program's DaskCluster (its own
`build_scheduler_deployment_spec` / `build_worker_deployment_spec`, through tools/pod_emulator.py), so the
selectors are checked against the labels pods really carry, not against labels written from memory.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from components.config import ConfigError
from components.constants import CLIENT_LABEL, DASHBOARD_LABEL
from tests.program_helpers import dask_cluster, kubernetes_objects, run_with
from tests.support.netpol import Cluster, External, Pod, pod_from_template, selector_matches
from tools.operator_objects import operator_objects
from tools.render import render_stack

NS = "lsdb-test"
SECURITY = {"clientNamespaces": ["jupyter"], "egressCidrs": ["52.216.0.0/15"]}
MONITORING = {"enabled": True}  # monitoring.prometheusNamespace left at its default, `monitoring`
OBJECT_STORE = {"kind": "objectStore", "objectStore": {"url": "s3://bucket/catalogs"}}


def cluster_pods(daskcluster: dict[str, Any], prefix: str, ip_base: int) -> dict[str, Pod]:
    """`<prefix>scheduler` and `<prefix>worker-0/1`, as the operator's Deployments would start them."""
    objects = operator_objects(daskcluster, uuids=["a" * 10, "b" * 10])
    ns = daskcluster["metadata"]["namespace"]
    pods = {f"{prefix}scheduler": objects.scheduler_deployment}
    pods |= {f"{prefix}worker-{i}": d for i, d in enumerate(objects.worker_deployments)}
    return {
        name: pod_from_template(name, ns, d["spec"]["template"], f"10.0.{ip_base}.{i + 1}")
        for i, (name, d) in enumerate(pods.items())
    }


def world(daskcluster: dict[str, Any], policies: list[dict[str, Any]]) -> tuple[Cluster, dict[str, Pod | External]]:
    ns = daskcluster["metadata"]["namespace"]
    # Green: the same cluster under another DaskCluster name (issue 8's blue/green keeps app.kubernetes.io/name).
    green = copy.deepcopy(daskcluster)
    green["metadata"]["name"] = daskcluster["metadata"]["name"] + "-0a1b2c3d"
    # Another team's DaskCluster in the same namespace.
    other = copy.deepcopy(daskcluster)
    other["metadata"]["name"] = "other-cluster"
    other["metadata"]["labels"]["app.kubernetes.io/name"] = "other-cluster"
    endpoints: dict[str, Pod | External] = {
        **cluster_pods(daskcluster, "", 1),
        **cluster_pods(green, "green-", 2),
        **cluster_pods(other, "other-", 3),
        "operator": Pod(
            "operator", "dask-operator", {"app.kubernetes.io/name": "dask-kubernetes-operator"}, "10.0.9.1"
        ),
        "client": Pod("client", ns, dict(CLIENT_LABEL), "10.0.9.2"),
        "unlabelled": Pod("unlabelled", ns, {"app": "notebook"}, "10.0.9.3"),
        "other-namespace": Pod("other-namespace", "other-team", dict(CLIENT_LABEL), "10.0.9.4"),
        "jupyter": Pod("jupyter", "jupyter", {"app": "jupyterhub"}, "10.0.9.5"),
        "prometheus": Pod("prometheus", "monitoring", {"app": "prometheus"}, "10.0.9.6"),
        "other-prometheus": Pod("other-prometheus", "observability", {"app": "prometheus"}, "10.0.9.8"),
        "dashboard-reader": Pod("dashboard-reader", ns, dict(DASHBOARD_LABEL), "10.0.9.9"),
        "grafana": Pod("grafana", "grafana", {"app": "grafana"}, "10.0.9.10"),
        "kube-dns": Pod(
            "kube-dns", "kube-system", {"k8s-app": "kube-dns"}, "10.0.9.7", (("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"))
        ),
        "s3": External("s3", "52.217.1.2"),
        "internet": External("internet", "203.0.113.9"),
    }
    return Cluster(policies), endpoints


def policies_of(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == "NetworkPolicy"]


@pytest.fixture(scope="module")
def configured() -> tuple[Cluster, dict[str, Pod | External]]:
    """A client namespace set, monitoring on (Prometheus in its default namespace), catalogs in an object store."""
    run = run_with(storage=OBJECT_STORE, security=SECURITY, monitoring=MONITORING)
    return world(dask_cluster(run), policies_of(kubernetes_objects(run)))


@pytest.fixture(scope="module")
def prod() -> tuple[Cluster, dict[str, Pod | External]]:
    """The prod stack as rendered: NFS catalogs, no client or metrics namespaces."""
    objects = [obj for _, obj in render_stack("prod").objects]
    (daskcluster,) = [o for o in objects if o["kind"] == "DaskCluster"]
    return world(daskcluster, policies_of(objects))


ALLOW, DENY = True, False
# (source, destination, port, protocol, expected): ports are numbers, as a connection has them.
TABLE = [
    ("other-namespace", "scheduler", 8786, "TCP", DENY),  # a client label counts only in the cluster's namespace
    ("client", "scheduler", 8786, "TCP", ALLOW),
    ("client", "scheduler", 8787, "TCP", DENY),  # clients get Dask only: 8787 also serves the HTTP API
    ("client", "worker-0", 8789, "TCP", DENY),  # clients talk to the scheduler only
    ("unlabelled", "scheduler", 8786, "TCP", DENY),
    ("unlabelled", "scheduler", 8787, "TCP", DENY),
    ("jupyter", "scheduler", 8786, "TCP", ALLOW),  # security.clientNamespaces
    ("jupyter", "scheduler", 8787, "TCP", DENY),
    ("jupyter", "worker-0", 8789, "TCP", DENY),
    ("dashboard-reader", "scheduler", 8787, "TCP", ALLOW),  # opted in: lsdb-k8s/dashboard: "true"
    ("dashboard-reader", "scheduler", 8786, "TCP", DENY),  # a reader, not a client
    ("grafana", "scheduler", 8787, "TCP", DENY),  # not in security.dashboardNamespaces here
    ("worker-0", "scheduler", 8786, "TCP", ALLOW),
    ("worker-0", "worker-1", 8789, "TCP", ALLOW),
    ("worker-0", "worker-1", 8790, "TCP", ALLOW),
    ("worker-0", "worker-1", 8788, "TCP", DENY),  # worker dashboards: metrics scrapers only
    ("worker-0", "scheduler", 8787, "TCP", DENY),
    ("scheduler", "worker-0", 8789, "TCP", ALLOW),
    ("scheduler", "worker-1", 8790, "TCP", ALLOW),
    ("scheduler", "worker-1", 8788, "TCP", DENY),
    ("worker-0", "worker-1", 22, "TCP", DENY),  # ports not opened stay closed between our own pods
    ("operator", "scheduler", 8787, "TCP", ALLOW),  # autoscaler, idle check, retire-workers
    ("operator", "scheduler", 8786, "TCP", DENY),
    ("operator", "worker-0", 8789, "TCP", DENY),
    ("operator", "worker-0", 8788, "TCP", DENY),
    ("prometheus", "scheduler", 8787, "TCP", ALLOW),  # monitoring on: monitoring.prometheusNamespace
    ("prometheus", "worker-0", 8788, "TCP", ALLOW),
    ("prometheus", "scheduler", 8786, "TCP", DENY),  # the metrics ports only
    ("prometheus", "worker-0", 8789, "TCP", DENY),
    ("prometheus", "worker-0", 8790, "TCP", DENY),
    ("other-prometheus", "scheduler", 8787, "TCP", DENY),
    ("other-prometheus", "worker-0", 8788, "TCP", DENY),
    ("green-worker-0", "scheduler", 8786, "TCP", ALLOW),  # blue and green are one application
    ("green-scheduler", "worker-0", 8789, "TCP", ALLOW),
    ("other-worker-0", "scheduler", 8786, "TCP", DENY),  # another DaskCluster in the same namespace
    ("scheduler", "other-worker-0", 8789, "TCP", DENY),
    ("worker-0", "kube-dns", 53, "UDP", ALLOW),
    ("worker-0", "kube-dns", 53, "TCP", ALLOW),
    ("worker-0", "s3", 443, "TCP", ALLOW),  # storage.kind objectStore, security.egressCIDRs
    ("worker-0", "s3", 80, "TCP", DENY),
    ("worker-0", "internet", 443, "TCP", DENY),
    ("scheduler", "jupyter", 8888, "TCP", DENY),  # no egress to other pods
]
PROD_TABLE = [
    ("other-namespace", "scheduler", 8786, "TCP", DENY),
    ("client", "scheduler", 8786, "TCP", ALLOW),
    ("worker-0", "worker-1", 8789, "TCP", ALLOW),
    ("operator", "scheduler", 8787, "TCP", ALLOW),
    ("operator", "worker-0", 8789, "TCP", DENY),
    ("jupyter", "scheduler", 8786, "TCP", DENY),  # no client namespaces in prod's stack file
    ("client", "scheduler", 8787, "TCP", DENY),  # by default only the operator's namespace reaches 8787
    ("prometheus", "scheduler", 8787, "TCP", DENY),  # monitoring is off in prod
    ("prometheus", "worker-0", 8788, "TCP", DENY),
    ("worker-0", "s3", 443, "TCP", DENY),  # NFS is mounted by the node: no pod egress
    ("worker-0", "kube-dns", 53, "UDP", ALLOW),
]


@pytest.mark.parametrize(("source", "destination", "port", "protocol", "expected"), TABLE)
def test_who_may_connect(configured: Any, source: str, destination: str, port: int, protocol: str, expected: bool):
    cluster, endpoints = configured
    assert cluster.allowed(endpoints[source], endpoints[destination], port, protocol) is expected


@pytest.mark.parametrize(("source", "destination", "port", "protocol", "expected"), PROD_TABLE)
def test_who_may_connect_in_prod(prod: Any, source: str, destination: str, port: int, protocol: str, expected: bool):
    cluster, endpoints = prod
    assert cluster.allowed(endpoints[source], endpoints[destination], port, protocol) is expected


def test_every_pod_of_the_cluster_is_isolated_both_ways(prod: Any) -> None:
    """The default-deny policy selects the operator-built scheduler and worker pods (labels from its builders)."""
    cluster, endpoints = prod
    ours = [p for name, p in endpoints.items() if isinstance(p, Pod) and name.split("-")[0] in ("scheduler", "worker")]
    assert len(ours) == 1 + 6  # the scheduler and the large preset's 6 workers
    for pod in ours:
        types = {
            t for policy in cluster.policies if selector_matches(policy["spec"]["podSelector"], pod.labels)
            for t in policy["spec"]["policyTypes"]
        }  # fmt: skip
        assert types == {"Ingress", "Egress"}, pod.name
        assert pod.labels["dask.org/component"] in ("scheduler", "worker")


def test_the_ports_the_policy_names_are_the_pods_ports(prod: Any) -> None:
    """Named ports resolve on the pods: pinned worker and nanny ports, the scheduler's comm and dashboard."""
    _, endpoints = prod
    scheduler, worker = endpoints["scheduler"], endpoints["worker-0"]
    assert isinstance(scheduler, Pod) and isinstance(worker, Pod)
    assert scheduler.named_port("tcp-comm", "TCP") == 8786 and scheduler.named_port("http-dashboard", "TCP") == 8787
    assert worker.named_port("tcp-worker", "TCP") == 8789 and worker.named_port("tcp-nanny", "TCP") == 8790


def test_network_policy_off_creates_none() -> None:
    run = run_with(security={"networkPolicy": False, "tls": False})
    assert policies_of(kubernetes_objects(run)) == []


def test_the_evaluator_can_deny_and_allow() -> None:
    """Controls of the evaluator itself: no policy = open; an empty ingress list = closed; selectors' operators."""
    a = Pod("a", "ns", {"app": "x"}, "10.1.0.1")
    b = Pod("b", "ns", {"app": "y"}, "10.1.0.2", (("http", 80, "TCP"),))
    assert Cluster([]).allowed(a, b, 80)
    deny = {"metadata": {"namespace": "ns"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
    assert not Cluster([deny]).allowed(a, b, 80)
    allow = {
        "metadata": {"namespace": "ns"},
        "spec": {"podSelector": {"matchLabels": {"app": "y"}}, "ingress": [{"ports": [{"port": "http"}]}]},
    }
    assert Cluster([deny, allow]).allowed(a, b, 80)
    assert not Cluster([deny, allow]).allowed(a, b, 81)
    assert selector_matches({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["x"]}]}, {"app": "y"})
    assert not selector_matches({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}, {"app": "y"})


def test_gke_workload_identity_may_reach_the_metadata_server() -> None:
    """GKE Workload Identity tokens come from the link-local metadata server: opened only with a gcp identity."""
    account = {"gcp": {"serviceAccount": "reader@project.iam.gserviceaccount.com"}}
    gcs = {"kind": "objectStore", "objectStore": {"url": "gs://bucket/catalogs", "identity": account}}
    metadata, gke = External("metadata", "169.254.169.254"), External("gke-metadata", "169.254.169.252")
    run = run_with(storage=gcs, security={"egressCidrs": ["199.36.153.8/30"]})
    cluster, endpoints = world(dask_cluster(run), policies_of(kubernetes_objects(run)))
    worker = endpoints["worker-0"]
    assert cluster.allowed(worker, metadata, 80, "TCP")
    assert cluster.allowed(worker, gke, 988, "TCP")
    assert not cluster.allowed(worker, metadata, 443, "TCP")
    assert not cluster.allowed(worker, endpoints["internet"], 443, "TCP")
    plain_run = run_with(storage=OBJECT_STORE)
    plain, others = world(dask_cluster(plain_run), policies_of(kubernetes_objects(plain_run)))
    assert not plain.allowed(others["worker-0"], metadata, 80, "TCP")


def test_monitoring_on_admits_its_prometheus_to_the_metrics_ports_only() -> None:
    """Issue 20 defect 4: `monitoring.enabled` alone (no other key) lets the scrapers in its Prometheus namespace
    read `/metrics` on the scheduler's 8787 and the workers' 8788, and nothing else; another namespace is named
    by `monitoring.prometheusNamespace`; with monitoring off no scraper gets in."""
    for monitoring, scraper, other in (
        (MONITORING, "prometheus", "other-prometheus"),
        ({**MONITORING, "prometheusNamespace": "observability"}, "other-prometheus", "prometheus"),
    ):
        run = run_with(monitoring=monitoring)
        cluster, endpoints = world(dask_cluster(run), policies_of(kubernetes_objects(run)))
        scheduler, worker = endpoints["scheduler"], endpoints["worker-0"]
        assert cluster.allowed(endpoints[scraper], scheduler, 8787)
        assert cluster.allowed(endpoints[scraper], worker, 8788)
        for destination, port in ((scheduler, 8786), (worker, 8789), (worker, 8790)):
            assert not cluster.allowed(endpoints[scraper], destination, port)
        assert not cluster.allowed(endpoints[other], scheduler, 8787)
        assert not cluster.allowed(endpoints[other], worker, 8788)
    off = run_with(monitoring={"enabled": False, "prometheusNamespace": "observability"})
    cluster, endpoints = world(dask_cluster(off), policies_of(kubernetes_objects(off)))
    for scraper in ("prometheus", "other-prometheus"):
        assert not cluster.allowed(endpoints[scraper], endpoints["scheduler"], 8787)
        assert not cluster.allowed(endpoints[scraper], endpoints["worker-0"], 8788)


def test_dashboard_readers_are_an_explicit_opt_in() -> None:
    """Issue 20 defect 5: 8787 (dashboard, metrics and the unauthenticated HTTP API with `retire_workers`) is not a
    client's by default; pods labelled `lsdb-k8s/dashboard: "true"` in the namespace and every pod of
    `security.dashboardNamespaces` opt in, to the scheduler's 8787 only."""
    run = run_with(security={**SECURITY, "dashboardNamespaces": ["grafana"]})
    cluster, endpoints = world(dask_cluster(run), policies_of(kubernetes_objects(run)))
    scheduler, worker = endpoints["scheduler"], endpoints["worker-0"]
    for reader in ("dashboard-reader", "grafana"):
        assert cluster.allowed(endpoints[reader], scheduler, 8787)
        for destination, port in ((scheduler, 8786), (worker, 8788), (worker, 8789)):
            assert not cluster.allowed(endpoints[reader], destination, port), (reader, port)
    for client in ("client", "jupyter"):  # still clients, still not readers
        assert cluster.allowed(endpoints[client], scheduler, 8786)
        assert not cluster.allowed(endpoints[client], scheduler, 8787)
    assert not cluster.allowed(endpoints["other-namespace"], scheduler, 8787)


def test_the_retired_metrics_namespaces_key_names_its_replacement() -> None:
    with pytest.raises(ConfigError, match=r"security\.metricsNamespaces = \[\"monitoring\"\]: was replaced by "
                       r"monitoring\.prometheusNamespace.*Fix: remove it; set monitoring\.enabled true"):  # fmt: skip
        run_with(security={"metricsNamespaces": ["monitoring"]})
