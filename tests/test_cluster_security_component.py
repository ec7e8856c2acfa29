"""ClusterSecurity alone under Pulumi's mocks (not the whole program): the NetworkPolicies it registers and the
TLS material, its uses and names. Fast enough for mutation testing (docs/mutation.md); the program-level tests
(tests/test_network_policy.py, tests/test_e2e_tls.py) check the same end to end."""

from __future__ import annotations

from datetime import date
from typing import Any

import pulumi
import pytest
from google.protobuf import empty_pb2, json_format

from components.config import SecurityConfig, StackConfig, parse_stack_config
from components.security import ClusterSecurity, network_policy_manifests
from components.tls_schedule import ANCHOR
from tools.mock_runtime import ProgramRun, RecordingMonitor, run_program, unwrap_secrets

CERT = "tls:index/locallySignedCert:LocallySignedCert"
CSR = "tls:index/certRequest:CertRequest"
CA = "tls:index/selfSignedCert:SelfSignedCert"
KEY = "tls:index/privateKey:PrivateKey"
SECRET = "kubernetes:core/v1:Secret"
POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"


GKE_IDENTITY = {"gcp": {"serviceAccount": "reader@project.iam.gserviceaccount.com"}}


def stack(security: dict[str, Any], **sections: Any) -> StackConfig:
    """Cluster `lsdb-x` in namespace `lsdb` with this security section (and other sections as given)."""
    base = {
        "namespace": "lsdb",
        "cluster": {"name": "lsdb-x"},
        "image": {"repository": "r/x"},
        "verify": {"enabled": False},
    }
    return parse_stack_config({**base, "security": security, **sections})


def run_security(security: dict[str, Any], today: date = ANCHOR, **sections: Any) -> tuple[ProgramRun, dict[str, Any]]:
    made: dict[str, Any] = {}

    def program() -> None:
        operator = pulumi.Output.from_input("dask-op")
        component = ClusterSecurity("sec", stack(security, **sections), operator, "lsdb-x-0a1b", today)
        made["component"] = component
        if component.client_tls is not None:
            pulumi.export("clientTls", component.client_tls)

    return run_program({}, program=program), made


def test_network_policies_are_the_pure_manifests_named_by_the_component() -> None:
    store = {"kind": "objectStore", "objectStore": {"url": "gs://bucket/catalogs", "identity": GKE_IDENTITY}}
    run, _ = run_security({"tls": False}, storage=store, monitoring={"enabled": True})  # Prometheus in `monitoring`
    expected = network_policy_manifests(
        "lsdb-x", "lsdb", SecurityConfig.model_validate({}), "dask-op", True, "gcp", scraper_namespace="monitoring"
    )
    registered = {r.name: r.inputs for r in run.of_type(POLICY)}  # registration order is the engine's
    assert sorted(registered) == ["sec-default-deny", "sec-egress", "sec-scheduler", "sec-workers"]
    for m in expected:
        inputs = registered["sec-" + m["metadata"]["name"].removeprefix("lsdb-x-")]
        assert inputs["metadata"] == m["metadata"]
        assert inputs["spec"] == m["spec"]  # with the operator's namespace, an Output
    assert run.of_type(CERT) == [] and run.of_type(SECRET) == []


def test_no_network_policy_and_no_tls_registers_nothing_but_the_component() -> None:
    run, made = run_security({"tls": False, "networkPolicy": False})
    assert [r.type for r in run.resources] == ["lsdb-k8s:security:ClusterSecurity"]
    assert made["component"].network_policies == [] and made["component"].client_tls is None


@pytest.fixture  # per test, not per module: mutation testing maps each test to the code it runs (docs/mutation.md)
def tls_run() -> ProgramRun:
    run, _ = run_security({"tls": True})  # the live cluster lsdb-x-0a1b
    return run


def test_the_server_certificate_serves_and_dials_every_scheduler_name(tls_run: ProgramRun) -> None:
    server = tls_run.named("sec-server")
    assert set(server.inputs["allowedUses"]) == {"digital_signature", "key_encipherment", "server_auth", "client_auth"}
    csr = tls_run.named("sec-server-csr")
    assert csr.inputs["subject"]["commonName"] == "lsdb-x-scheduler"  # the stable Service, then the live cluster's
    assert {"lsdb-x-scheduler.lsdb.svc", "lsdb-x-0a1b-scheduler.lsdb.svc.cluster.local", "localhost"} <= set(
        csr.inputs["dnsNames"]
    )
    assert csr.inputs["ipAddresses"] == ["127.0.0.1"]  # the port-forward
    # Valid 730 days, never renewed early (a re-issue under the same Secret name would reach no running pod).
    assert server.inputs["validityPeriodHours"] == 730 * 24 and "earlyRenewalHours" not in server.inputs


def test_the_client_certificate_only_dials(tls_run: ProgramRun) -> None:
    client = tls_run.named("sec-client")
    assert set(client.inputs["allowedUses"]) == {"digital_signature", "key_encipherment", "client_auth"}
    csr = tls_run.named("sec-client-csr")
    assert csr.inputs["subject"]["commonName"] == "lsdb-client"
    assert "dnsNames" not in csr.inputs and "ipAddresses" not in csr.inputs


def test_one_ca_signs_both_and_keys_are_ecdsa_p256(tls_run: ProgramRun) -> None:
    ca = tls_run.one(CA)
    assert ca.inputs["isCaCertificate"] is True
    assert set(ca.inputs["allowedUses"]) == {"cert_signing", "crl_signing", "digital_signature"}
    assert ca.inputs["validityPeriodHours"] > tls_run.named("sec-server").inputs["validityPeriodHours"]
    keys = tls_run.of_type(KEY)
    assert len(keys) == 3 and all(k.inputs["algorithm"] == "ECDSA" and k.inputs["ecdsaCurve"] == "P256" for k in keys)
    assert {c.name for c in tls_run.of_type(CERT)} == {"sec-server", "sec-client"}


def test_the_pods_secret_holds_ca_cert_and_key_as_a_secret_and_the_client_bundle_is_exported(
    tls_run: ProgramRun,
) -> None:
    secret = tls_run.one(SECRET)
    meta = secret.inputs["metadata"]
    assert meta["name"] == "lsdb-x-tls-g0-ca0-c0" and meta["namespace"] == "lsdb"
    assert secret.name == "sec-tls-secret-g0-ca0-c0"  # a new resource per epoch, never a replacement of one
    assert secret.inputs["type"] == "kubernetes.io/tls"
    assert set(unwrap_secrets(secret.inputs["stringData"])) == {"ca.crt", "tls.crt", "tls.key"}
    assert "4dabf18193072939515e22adb298388d" in str(secret.raw_inputs["stringData"])  # sent as a Pulumi secret
    assert "clientTls" in tls_run.secret_outputs
    assert set(unwrap_secrets(tls_run.outputs["clientTls"])) == {"ca", "cert", "key"}


def test_every_child_is_the_components_and_waits_for_what_the_component_waits_for() -> None:
    import pulumi_kubernetes as k8s

    def program() -> None:
        namespace = k8s.core.v1.Namespace("ns")
        config = stack({"tls": True})
        ClusterSecurity("sec", config, "dask-op", "lsdb-x-0a1b", opts=pulumi.ResourceOptions(depends_on=[namespace]))

    outputs: dict[str, Any] = {}

    def register_outputs(monitor: RecordingMonitor, request: Any) -> Any:
        outputs.update(json_format.MessageToDict(request.outputs))
        return empty_pb2.Empty()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RecordingMonitor, "RegisterResourceOutputs", register_outputs, raising=False)
        run = run_program({}, program=program)
    component = run.one("lsdb-k8s:security:ClusterSecurity")
    namespace = run.one("kubernetes:core/v1:Namespace")
    assert namespace.urn in component.dependencies  # the component keeps the caller's options
    assert sorted(outputs["networkPolicies"]) == ["lsdb-x-default-deny", "lsdb-x-egress", "lsdb-x-scheduler",
                                                  "lsdb-x-workers"]  # fmt: skip
    children = [r for r in run.resources if r.urn not in (component.urn, namespace.urn)]
    assert len(children) == 4 + 8 + 1  # NetworkPolicies; CA key and cert, server and client key, CSR, cert; Secret
    for child in children:
        assert child.parent == component.urn, child.name
        assert namespace.urn in child.dependencies, child.name


def test_a_new_certificate_epoch_reissues_the_certificates_with_the_same_keys_and_ca() -> None:
    """The tag is in the CSRs' subjects (a changed subject replaces a CSR, hence its certificate) and in the Secret's
    name; keys and the CA keep their names and inputs within a generation and a CA epoch."""
    first, _ = run_security({"tls": True}, today=date(2026, 3, 1))
    second, _ = run_security({"tls": True}, today=date(2026, 7, 1))  # day 181: certificate epoch 1, CA epoch 0
    for run, tag in ((first, "g0-ca0-c0"), (second, "g0-ca0-c1")):
        for csr in run.of_type(CSR):
            assert csr.inputs["subject"]["organizationalUnit"] == tag, csr.name
        assert run.one(SECRET).inputs["metadata"]["name"] == f"lsdb-x-tls-{tag}"
    assert {k.name for k in first.of_type(KEY)} == {k.name for k in second.of_type(KEY)}
    assert first.one(CA).inputs == second.one(CA).inputs
    # The first CA has the previous release's subject: upgraded stacks keep their CA and their clients' bundles.
    assert first.one(CA).inputs["subject"]["commonName"] == "lsdb-k8s dev CA"
    assert first.one(CA).inputs["validityPeriodHours"] == 10 * 365 * 24  # unchanged too: no replacement


def test_a_new_ca_epoch_replaces_the_ca() -> None:
    run, made = run_security({"tls": True}, today=date(2030, 12, 10))  # day 1804: CA epoch 1
    assert made["component"].schedule.tag == "g0-ca1-c10"
    assert run.one(CA).inputs["subject"]["commonName"] == "lsdb-k8s dev CA g0-ca1"
    assert {k.name for k in run.of_type(KEY)} == {"sec-ca-key", "sec-server-key", "sec-client-key"}


def test_a_new_generation_replaces_keys_ca_and_certificates() -> None:
    run, _ = run_security({"tls": True, "tlsGeneration": 2}, today=date(2026, 3, 1))
    assert {k.name for k in run.of_type(KEY)} == {"sec-ca-key-g2", "sec-server-key-g2", "sec-client-key-g2"}
    assert run.one(CA).inputs["subject"]["commonName"] == "lsdb-k8s dev CA g2-ca0"
    assert run.one(SECRET).inputs["metadata"]["name"] == "lsdb-x-tls-g2-ca0-c0"
    assert {c.inputs["subject"]["organizationalUnit"] for c in run.of_type(CSR)} == {"g2-ca0-c0"}


def test_pulumi_up_warns_before_a_rotation(monkeypatch: pytest.MonkeyPatch) -> None:
    warned: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda message, *a, **k: warned.append(message))
    run_security({"tls": True}, today=date(2026, 6, 1))  # 29 days before the rotation of 2026-06-30
    assert len(warned) == 1 and "rotate on 2026-06-30 (in 29 days)" in warned[0]
    warned.clear()
    run_security({"tls": True}, today=date(2026, 5, 30))  # 31 days before
    run_security({"tls": False}, today=date(2026, 6, 1))  # no TLS, nothing to rotate
    assert warned == []


def mock_pem(kind: str, logical: str) -> str:
    """What tools.mock_runtime puts in a pulumi-tls output: a labelled placeholder naming the resource."""
    return f"-----BEGIN MOCK {kind}-----\n{logical}\n-----END MOCK {kind}-----\n"


def test_each_certificate_is_made_from_its_own_key_and_signed_by_the_ca(tls_run: ProgramRun) -> None:
    """The wiring a swapped or dropped argument would break: the CA self-signs with the CA key, each CSR carries its
    own key, each certificate is its CSR signed with the CA's key and certificate, every subject names the program."""
    key = lambda suffix: mock_pem("privateKeyPem", f"sec-{suffix}-key")  # noqa: E731
    ca = tls_run.one(CA)
    assert ca.inputs["privateKeyPem"] == key("ca")
    assert ca.inputs["subject"] == {"commonName": "lsdb-k8s dev CA", "organization": "lsdb-k8s"}
    for suffix in ("server", "client"):
        csr, cert = tls_run.named(f"sec-{suffix}-csr"), tls_run.named(f"sec-{suffix}")
        assert csr.inputs["privateKeyPem"] == key(suffix)
        assert csr.inputs["subject"]["organization"] == "lsdb-k8s"
        assert set(csr.inputs["subject"]) == {"commonName", "organization", "organizationalUnit"}
        assert cert.inputs["certRequestPem"] == mock_pem("certRequestPem", f"sec-{suffix}-csr")
        assert cert.inputs["caPrivateKeyPem"] == key("ca")
        assert cert.inputs["caCertPem"] == mock_pem("certPem", "sec-ca")
    (secret,) = tls_run.of_type(SECRET)
    assert secret.inputs["metadata"]["labels"]["app.kubernetes.io/part-of"] == "lsdb-k8s"


def test_warnings_name_what_expires_and_are_attached_to_the_component(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rotation and expiry warnings go to `pulumi up`'s log on the ClusterSecurity component (so the CLI shows which
    resource), each expiry warning naming the certificate it is about."""
    from tools import mock_runtime

    class Ending(mock_runtime.EngineMocks):
        def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
            rid, state = super().new_resource(args)
            if args.typ in (CA, CERT):
                state["validityEndTime"] = "2026-06-10T00:00:00Z"  # 9 days after the day below
            return rid, state

    warned: list[tuple[str, Any]] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda message, resource=None, **k: warned.append((message, resource)))
    monkeypatch.setattr(mock_runtime, "EngineMocks", Ending)
    _, made = run_security({"tls": True}, today=date(2026, 6, 1))
    messages = sorted(m for m, _ in warned)
    assert all(resource is made["component"] for _, resource in warned)
    assert [m.split(" expires", 1)[0] for m in messages if " expires on 2026-06-10" in m] == [
        "security.tls: the client certificate",
        "security.tls: the cluster's certificate",
        "security.tls: the stack's CA",
    ]
    assert sum("rotate on 2026-06-30" in m for m in messages) == 1 and len(messages) == 4
    assert isinstance(made["component"].certificate_expiry, pulumi.Output)  # the server certificate's end
    assert run_security({"tls": False})[1]["component"].certificate_expiry is None  # no TLS: no certificate


@pytest.mark.parametrize("enabled", [False, True])
def test_prometheus_may_scrape_only_while_monitoring_is_on(enabled: bool) -> None:
    """`monitoring.prometheusNamespace` (default `monitoring`) reaches the dashboard ports only with monitoring on."""
    run, _ = run_security({"tls": False}, monitoring={"enabled": enabled})
    scrapers = "monitoring" if enabled else None
    expected = network_policy_manifests(
        "lsdb-x", "lsdb", SecurityConfig.model_validate({}), "dask-op", False, scraper_namespace=scrapers
    )
    registered = {r.name: r.inputs["spec"] for r in run.of_type(POLICY)}
    for m in expected:
        assert registered["sec-" + m["metadata"]["name"].removeprefix("lsdb-x-")] == m["spec"]
