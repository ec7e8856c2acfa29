"""Who may connect to whom under `network_policy_manifests` (components/security.py), on pods built by hand with
the labels and named ports the operator gives them: the same flow table as tests/test_network_policy.py without
running the program, fast enough for mutation testing (docs/mutation.md). Plus the TLS names and certificates'
pure parts."""

from __future__ import annotations

import json
from typing import Any

import pytest

from components.config import SecurityConfig
from components.security import (
    CLIENT_USES,
    SERVER_USES,
    certificate_dns_names,
    network_policy_manifests,
    tls_secret_name,
)
from tests.support.netpol import Cluster, External, Pod
from tests.test_network_policy import SECURITY, TABLE

NS = "lsdb-test"
SCHEDULER_PORTS = (("tcp-comm", 8786, "TCP"), ("http-dashboard", 8787, "TCP"))
WORKER_PORTS = (("tcp-worker", 8789, "TCP"), ("tcp-nanny", 8790, "TCP"), ("http-dashboard", 8788, "TCP"))


def dask_pods(app: str, prefix: str, ip_base: int) -> dict[str, Pod]:
    """A DaskCluster's pods: the DaskCluster's labels (copied by the operator) and the operator's component label."""

    def pod(name: str, component: str, ip: int, ports: tuple[tuple[str, int, str], ...]) -> Pod:
        labels = {
            "app.kubernetes.io/name": app,
            "app.kubernetes.io/part-of": "lsdb-k8s",
            "dask.org/component": component,
        }
        return Pod(prefix + name, NS, labels, f"10.0.{ip_base}.{ip}", ports)

    return {
        prefix + "scheduler": pod("scheduler", "scheduler", 1, SCHEDULER_PORTS),
        prefix + "worker-0": pod("worker-0", "worker", 2, WORKER_PORTS),
        prefix + "worker-1": pod("worker-1", "worker", 3, WORKER_PORTS),
    }


ENDPOINTS: dict[str, Pod | External] = {
    **dask_pods("lsdb-x", "", 1),
    **dask_pods("lsdb-x", "green-", 2),  # the next cluster of a blue/green switch: same app name
    **dask_pods("other-cluster", "other-", 3),
    "operator": Pod("operator", "dask-operator", {"app.kubernetes.io/name": "dask-kubernetes-operator"}, "10.0.9.1"),
    "client": Pod("client", NS, {"lsdb-k8s/client": "true"}, "10.0.9.2"),
    "unlabelled": Pod("unlabelled", NS, {"app": "notebook"}, "10.0.9.3"),
    "other-namespace": Pod("other-namespace", "other-team", {"lsdb-k8s/client": "true"}, "10.0.9.4"),
    "jupyter": Pod("jupyter", "jupyter", {"app": "jupyterhub"}, "10.0.9.5"),
    "prometheus": Pod("prometheus", "monitoring", {"app": "prometheus"}, "10.0.9.6"),
    "other-prometheus": Pod("other-prometheus", "observability", {"app": "prometheus"}, "10.0.9.8"),
    "dashboard-reader": Pod("dashboard-reader", NS, {"lsdb-k8s/dashboard": "true"}, "10.0.9.9"),
    "grafana": Pod("grafana", "grafana", {"app": "grafana"}, "10.0.9.10"),
    "kube-dns": Pod(
        "kube-dns", "kube-system", {"k8s-app": "kube-dns"}, "10.0.9.7", (("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"))
    ),
    "metadata": External("metadata", "169.254.169.254"),
    "gke-metadata": External("gke-metadata", "169.254.169.252"),
    "s3": External("s3", "52.217.1.2"),
    "internet": External("internet", "203.0.113.9"),
}


def policies(
    security: dict[str, Any],
    object_store: bool = True,
    identity: str | None = None,
    scrapers: str | None = "monitoring",
) -> list[dict[str, Any]]:
    """The policies with monitoring on (its Prometheus in `scrapers`), as test_network_policy.py's TABLE has it."""
    return network_policy_manifests(
        "lsdb-x", NS, SecurityConfig.model_validate(security), "dask-operator", object_store, identity, scrapers
    )


def allowed(cluster: Cluster, source: str, destination: str, port: int, protocol: str = "TCP") -> bool:
    return cluster.allowed(ENDPOINTS[source], ENDPOINTS[destination], port, protocol)


EXTRA = [
    ("prometheus", "worker-0", 8789, "TCP", False),  # metrics scrapers read the dashboard port only
    ("prometheus", "worker-0", 8790, "TCP", False),
    ("green-scheduler", "scheduler", 8786, "TCP", False),  # the scheduler's comm port: workers and clients only
]


@pytest.mark.parametrize(("source", "destination", "port", "protocol", "expected"), TABLE + EXTRA)
def test_who_may_connect(source: str, destination: str, port: int, protocol: str, expected: bool) -> None:
    assert allowed(Cluster(policies(SECURITY)), source, destination, port, protocol) is expected


def test_without_object_store_or_extra_namespaces_only_the_cluster_and_its_clients_connect() -> None:
    cluster = Cluster(policies({}, object_store=False, scrapers=None))
    assert not allowed(cluster, "worker-0", "s3", 443)
    assert not allowed(cluster, "prometheus", "scheduler", 8787)
    assert not allowed(cluster, "prometheus", "worker-0", 8788)
    assert not allowed(cluster, "jupyter", "scheduler", 8786)
    assert allowed(cluster, "client", "scheduler", 8786)
    assert allowed(cluster, "worker-0", "kube-dns", 53, "UDP")


def test_dashboard_namespaces_read_the_schedulers_dashboard_only() -> None:
    cluster = Cluster(policies({"dashboardNamespaces": ["grafana"]}))
    assert allowed(cluster, "grafana", "scheduler", 8787)
    assert not allowed(cluster, "grafana", "scheduler", 8786) and not allowed(cluster, "grafana", "worker-0", 8788)
    assert not allowed(Cluster(policies({})), "grafana", "scheduler", 8787)


@pytest.mark.parametrize("scrapers", [None, "monitoring"])
def test_no_policy_holds_a_null_the_api_server_would_reject(scrapers: str | None) -> None:
    for security in ({}, SECURITY, {"dashboardNamespaces": []}):
        assert "null" not in json.dumps(policies(security, scrapers=scrapers))


def test_the_object_store_is_reached_on_its_cidrs_and_ports_only() -> None:
    cluster = Cluster(policies({"egressCidrs": ["52.216.0.0/15"], "egressPorts": [9000, 443]}))
    assert allowed(cluster, "worker-0", "s3", 9000) and allowed(cluster, "worker-0", "s3", 443)
    assert not allowed(cluster, "worker-0", "s3", 80)
    assert not allowed(cluster, "worker-0", "internet", 9000)


def test_gke_workload_identity_reaches_the_metadata_servers_and_no_one_else_does() -> None:
    gke = Cluster(policies({"egressCidrs": ["199.36.153.8/30"]}, identity="gcp"))
    assert allowed(gke, "worker-0", "metadata", 80) and allowed(gke, "scheduler", "gke-metadata", 988)
    assert not allowed(gke, "worker-0", "metadata", 8080) and not allowed(gke, "worker-0", "internet", 80)
    for identity in (None, "aws", "azure"):
        other = Cluster(policies({"egressCidrs": ["199.36.153.8/30"]}, identity=identity))
        assert not allowed(other, "worker-0", "metadata", 80) and not allowed(other, "worker-0", "gke-metadata", 988)


def by_part(made: list[dict[str, Any]], part: str) -> list[dict[str, Any]]:
    return [p for p in made if p["metadata"]["name"] == f"lsdb-x-{part}"]


def test_the_default_deny_alone_isolates_the_cluster_both_ways() -> None:
    assert allowed(Cluster([]), "client", "scheduler", 8786) and allowed(Cluster([]), "worker-0", "s3", 443)
    deny = Cluster(by_part(policies(SECURITY), "default-deny"))
    assert not allowed(deny, "client", "scheduler", 8786) and not allowed(deny, "worker-0", "s3", 443)
    assert allowed(deny, "client", "unlabelled", 8888)  # pods outside the cluster are not its business


def test_the_egress_policy_alone_leaves_ingress_to_the_component_policies() -> None:
    egress = Cluster(by_part(policies(SECURITY), "egress"))
    assert allowed(egress, "client", "scheduler", 8786) and allowed(egress, "unlabelled", "worker-0", 22)
    assert not allowed(egress, "worker-0", "internet", 443)


def test_network_policy_off_creates_none_and_on_names_each_by_the_cluster() -> None:
    assert policies({"networkPolicy": False}) == []
    made = policies({})
    assert [p["metadata"]["name"] for p in made] == [
        "lsdb-x-default-deny",
        "lsdb-x-egress",
        "lsdb-x-scheduler",
        "lsdb-x-workers",
    ]
    assert {p["metadata"]["namespace"] for p in made} == {NS}
    assert all(p["apiVersion"] == "networking.k8s.io/v1" and p["kind"] == "NetworkPolicy" for p in made)
    assert {p["metadata"]["labels"]["app.kubernetes.io/name"] for p in made} == {"lsdb-x"}
    assert all(p["metadata"]["labels"]["app.kubernetes.io/part-of"] == "lsdb-k8s" for p in made)


def test_the_certificate_names_every_form_of_each_scheduler_service_and_localhost_once() -> None:
    assert certificate_dns_names(["a", "b", "a"], "ns") == [
        "a", "a.ns", "a.ns.svc", "a.ns.svc.cluster.local",
        "b", "b.ns", "b.ns.svc", "b.ns.svc.cluster.local",
        "localhost",
    ]  # fmt: skip
    assert tls_secret_name("lsdb-x", "g0-ca0-c1") == "lsdb-x-tls-g0-ca0-c1"


def test_the_scheduler_and_workers_certificate_also_acts_as_a_tls_client() -> None:
    # Workers dial the scheduler and each other: their certificate needs client_auth as well as server_auth.
    assert {"server_auth", "client_auth", "digital_signature"} <= set(SERVER_USES)
    assert "client_auth" in CLIENT_USES and "server_auth" not in CLIENT_USES
