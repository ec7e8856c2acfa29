"""ClusterSecurity: the NetworkPolicies around a DaskCluster's pods (docs/security.md's table, built by the pure
`network_policy_manifests`) and the certificates of its mutual TLS (pulumi-tls, keys in the state as secrets),
rotated on components/tls_schedule.py's epochs: the tag is in the Secret's name (so in `<h>`: a rotation is a new
cluster) and in the subjects (so pulumi-tls re-issues them)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_tls as tls

from components.cluster import TLS_FILES
from components.config import SecurityConfig, StackConfig
from components.constants import (
    APP_NAME_LABEL,
    CLIENT_LABEL,
    COMPONENT_LABEL,
    DASHBOARD_LABEL,
    DASHBOARD_PORT_NAME,
    LABELS,
    NAMESPACE_NAME_LABEL,
    NANNY_PORT_NAME,
    PART_OF,
    PART_OF_LABEL,
    SCHEDULER_PORT_NAME,
    WORKER_PORT_NAME,
    scheduler_service_name,
)
from components.options import child_options, manifest, register
from components.tls_schedule import (
    ANCHOR,
    CA_VALIDITY_DAYS,
    CERT_VALIDITY_DAYS,
    certificate_schedule,
    expiry_warnings,
    rotation_warnings,
)

SERVER_USES = ["digital_signature", "key_encipherment", "server_auth", "client_auth"]
CLIENT_USES = ["digital_signature", "key_encipherment", "client_auth"]


def cluster_pods(cluster_name: str, component: str | None = None) -> dict[str, Any]:
    """The cluster's pods (of one component): the DaskCluster's labels the operator copies, plus its component."""
    labels = {PART_OF_LABEL: PART_OF, APP_NAME_LABEL: cluster_name}
    if component:
        labels[COMPONENT_LABEL] = component
    return {"matchLabels": labels}


def _namespaces(names: Sequence[str]) -> list[dict[str, Any]]:
    if not names:
        return []
    selector = {"matchExpressions": [{"key": NAMESPACE_NAME_LABEL, "operator": "In", "values": sorted(names)}]}
    return [{"namespaceSelector": selector}]


def _ports(*names: str) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": name} for name in names]


# GKE Workload Identity with network policy: allow the metadata server (169.254.169.254:80) and, with GKE
# Dataplane V2, the gke-metadata-server (169.254.169.252:988).
# https://cloud.google.com/kubernetes-engine/docs/how-to/workload-identity#restrict
GKE_METADATA: tuple[tuple[str, int], ...] = (("169.254.169.254/32", 80), ("169.254.169.252/32", 988))


def dns_egress() -> dict[str, Any]:
    """DNS, wherever the resolver is (every pod's policy: the cluster's, the notebook's, the copy Job's)."""
    return {"ports": [{"protocol": p, "port": 53} for p in ("UDP", "TCP")]}


def ip_egress(cidrs: Sequence[str], ports: Sequence[int]) -> dict[str, Any]:
    return {
        "to": [{"ipBlock": {"cidr": cidr}} for cidr in cidrs],
        "ports": [{"protocol": "TCP", "port": p} for p in ports],
    }


def gke_metadata_egress() -> dict[str, Any]:
    return ip_egress([cidr for cidr, _ in GKE_METADATA], [port for _, port in GKE_METADATA])


def network_policy_manifests(
    cluster_name: str,
    namespace: str,
    security: SecurityConfig,
    operator_namespace: str,
    object_store: bool,
    identity_provider: str | None = None,
    scraper_namespace: str | None = None,
) -> list[dict[str, Any]]:
    """The NetworkPolicies of one cluster (none without `security.networkPolicy`). `scraper_namespace`: Prometheus's
    while monitoring is on. `identity_provider`: AWS's and Azure's token endpoints are HTTPS, which the object-store
    rule allows; GKE's metadata server is link-local on other ports."""
    if not security.network_policy:
        return []
    clients = [{"podSelector": {"matchLabels": dict(CLIENT_LABEL)}}, *_namespaces(security.client_namespaces)]
    pods, worker_pods, scheduler_pods = (cluster_pods(cluster_name, c) for c in (None, "worker", "scheduler"))
    workers, scheduler = {"podSelector": worker_pods}, {"podSelector": scheduler_pods}
    dashboard_readers = [
        {"podSelector": {"matchLabels": dict(DASHBOARD_LABEL)}},
        *_namespaces(security.dashboard_namespaces),
    ]
    scrapers = _namespaces([scraper_namespace] if scraper_namespace else [])
    egress = [dns_egress(), {"to": [{"podSelector": pods}]}]
    if object_store:
        egress.append(ip_egress(security.egress_cidrs, security.egress_ports))
    if identity_provider == "gcp":
        egress.append(gke_metadata_egress())
    scheduler_ingress = [
        {"from": [workers, *clients], "ports": _ports(SCHEDULER_PORT_NAME)},
        {
            "from": [*_namespaces([operator_namespace]), *scrapers, *dashboard_readers],
            "ports": _ports(DASHBOARD_PORT_NAME),
        },
    ]
    worker_ingress = [{"from": [scheduler, workers], "ports": _ports(WORKER_PORT_NAME, NANNY_PORT_NAME)}]
    if scrapers:
        worker_ingress.append({"from": scrapers, "ports": _ports(DASHBOARD_PORT_NAME)})
    specs = {
        # Default deny: selects every pod of the cluster for both directions; the others add what is allowed.
        "default-deny": {"podSelector": pods, "policyTypes": ["Ingress", "Egress"]},
        "egress": {"podSelector": pods, "policyTypes": ["Egress"], "egress": egress},
        "scheduler": {"podSelector": scheduler_pods, "policyTypes": ["Ingress"], "ingress": scheduler_ingress},
        "workers": {"podSelector": worker_pods, "policyTypes": ["Ingress"], "ingress": worker_ingress},
    }
    labels = {**LABELS, APP_NAME_LABEL: cluster_name}
    return [
        manifest("networking.k8s.io/v1", "NetworkPolicy", f"{cluster_name}-{part}", namespace, labels, spec=spec)
        for part, spec in specs.items()
    ]


def certificate_dns_names(service_names: Sequence[str], namespace: str) -> list[str]:
    """Every name a client may dial a scheduler Service by, plus localhost (the port-forward)."""
    names = []
    for svc in service_names:
        names += [svc, f"{svc}.{namespace}", f"{svc}.{namespace}.svc", f"{svc}.{namespace}.svc.cluster.local"]
    return [*dict.fromkeys(names), "localhost"]


def tls_secret_name(cluster_name: str, tag: str) -> str:
    """The certificate Secret of the epoch `tag` (TlsSchedule.tag): a new epoch, a new Secret and a new cluster."""
    return f"{cluster_name}-tls-{tag}"


class ClusterSecurity(pulumi.ComponentResource):
    """NetworkPolicies, and with `security.tls` the CA, certificates and certificate Secret of the cluster whose live
    DaskCluster is `live_name`, on `today` (the program reads the clock)."""

    client_tls: pulumi.Output[dict[str, Any]] | None = None
    certificate_expiry: pulumi.Output[str] | None = None  # the server certificate's `validity_end_time` (RFC 3339)

    def __init__(
        self,
        name: str,
        config: StackConfig,
        operator_namespace: pulumi.Input[str],
        live_name: str,
        today: date = ANCHOR,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("lsdb-k8s:security:ClusterSecurity", name, {}, opts)
        cluster, storage, monitoring = config.cluster.name, config.storage, config.monitoring
        identity_provider = storage.identity[0] if storage.identity else None
        scrapers = monitoring.prometheus_namespace if monitoring.enabled else None

        def build(operator: str) -> list[dict[str, Any]]:
            object_store = storage.kind == "objectStore"
            return network_policy_manifests(
                cluster, config.namespace, config.security, operator, object_store, identity_provider, scrapers
            )

        # The operator's namespace may be another stack's output; the set of policies never depends on it.
        manifests = pulumi.Output.from_input(operator_namespace).apply(build)
        self.network_policies = [
            register(
                k8s.networking.v1.NetworkPolicy,
                f"{name}-{shape['metadata']['name'].removeprefix(f'{cluster}-')}",
                shape,
                child_options(self, opts),
                spec=manifests[i]["spec"],
            )
            for i, shape in enumerate(build("operator"))
        ]
        self.schedule = certificate_schedule(today, config.security.tls_generation)
        if config.security.tls:
            # The certificate covers the stable Service and the operator's of the live cluster.
            services = [scheduler_service_name(config.cluster.name), scheduler_service_name(live_name)]
            self._certificates(name, config, services, today, opts)
        self.register_outputs({"networkPolicies": [p.metadata["name"] for p in self.network_policies]})

    def _certificates(
        self, name: str, config: StackConfig, services: list[str], today: date, opts: pulumi.ResourceOptions | None
    ) -> None:
        child = child_options(self, opts)
        schedule = self.schedule
        self._warn(rotation_warnings(today, schedule))
        # Generation 0 keeps the previous release's names; a new generation is new keys (new logical names).
        generation = f"-g{schedule.generation}" if schedule.generation else ""

        def private_key(suffix: str) -> tls.PrivateKey:
            return tls.PrivateKey(f"{name}-{suffix}-key{generation}", algorithm="ECDSA", ecdsa_curve="P256", opts=child)

        ca_key = private_key("ca")
        # The first CA keeps the previous release's subject: an upgraded stack keeps its CA and clients' bundles.
        ca_name = f"lsdb-k8s {pulumi.get_stack()} CA"
        ca = tls.SelfSignedCert(
            f"{name}-ca",
            private_key_pem=ca_key.private_key_pem,
            is_ca_certificate=True,
            allowed_uses=["cert_signing", "crl_signing", "digital_signature"],
            subject={
                "common_name": ca_name if schedule.ca_tag == "g0-ca0" else f"{ca_name} {schedule.ca_tag}",
                "organization": PART_OF,
            },
            validity_period_hours=CA_VALIDITY_DAYS * 24,  # outlives every certificate it signs (tls_schedule.py)
            opts=child,
        )

        def signed(suffix: str, common_name: str, uses: list[str], dns_names: list[str]) -> tuple[Any, dict[str, Any]]:
            """The certificate, and its bundle: `ca`, `cert`, `key`."""
            key = private_key(suffix)
            request = tls.CertRequest(
                f"{name}-{suffix}-csr",
                private_key_pem=key.private_key_pem,
                # The tag: a new epoch changes the subject, which replaces the CSR, hence the certificate.
                subject={"common_name": common_name, "organization": PART_OF, "organizational_unit": schedule.tag},
                dns_names=dns_names or None,
                ip_addresses=["127.0.0.1"] if dns_names else None,
                opts=child,
            )
            cert = tls.LocallySignedCert(
                f"{name}-{suffix}",
                cert_request_pem=request.cert_request_pem,
                ca_private_key_pem=ca_key.private_key_pem,
                ca_cert_pem=ca.cert_pem,
                allowed_uses=uses,
                # No `early_renewal_hours`: its re-issue would rewrite the Secret under a running cluster, which never
                # reloads it (docs/security.md); the schedule's new tag re-issues it long before, with a new cluster.
                validity_period_hours=CERT_VALIDITY_DAYS * 24,
                opts=child,
            )
            return cert, {"ca": ca.cert_pem, "cert": cert.cert_pem, "key": key.private_key_pem}

        dns_names = certificate_dns_names(services, config.namespace)
        server_cert, server = signed("server", services[0], SERVER_USES, dns_names)
        client_cert, client = signed("client", "lsdb-client", CLIENT_USES, [])
        # A new logical name per epoch (not a replacement of one resource): the old Secret stays, mounted by the old
        # cluster, until the end of a successful `pulumi up`; a replaced one would be deleted at the start of the
        # next `pulumi up` after a failed one, under the old cluster still serving.
        secret_name = tls_secret_name(config.cluster.name, schedule.tag)
        secret = manifest("v1", "Secret", secret_name, config.namespace, LABELS, type="kubernetes.io/tls")
        string_data = pulumi.Output.secret({TLS_FILES[k]: v for k, v in server.items()})
        register(k8s.core.v1.Secret, f"{name}-tls-secret-{schedule.tag}", secret, child, string_data=string_data)
        self.client_tls = pulumi.Output.secret(client)
        self.certificate_expiry = server_cert.validity_end_time
        certificates = {"stack's CA": ca, "cluster's certificate": server_cert, "client certificate": client_cert}
        for what, cert in certificates.items():  # warned at `pulumi up`, once each end is known
            cert.validity_end_time.apply(lambda end, what=what: self._warn(expiry_warnings(what, end, today)))

    def _warn(self, messages: list[str]) -> None:
        for message in messages:
            pulumi.log.warn(message, resource=self)
