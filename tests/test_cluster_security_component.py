"""ClusterSecurity alone under Pulumi's mocks (not the whole program): the NetworkPolicies it registers and the
TLS material, its uses and names. Fast enough for mutation testing (docs/mutation.md); the program-level tests
(tests/test_network_policy.py, tests/test_e2e_tls.py) check the same end to end."""

from __future__ import annotations

from typing import Any

import pulumi
import pytest
from google.protobuf import empty_pb2, json_format

from components.config import SecurityConfig
from components.security import ClusterSecurity, ClusterSecurityArgs, network_policy_manifests
from tools.mock_runtime import ProgramRun, RecordingMonitor, run_program, unwrap_secrets

CERT = "tls:index/locallySignedCert:LocallySignedCert"
CSR = "tls:index/certRequest:CertRequest"
CA = "tls:index/selfSignedCert:SelfSignedCert"
KEY = "tls:index/privateKey:PrivateKey"
SECRET = "kubernetes:core/v1:Secret"
POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"


def run_security(security: dict[str, Any], **args: Any) -> tuple[ProgramRun, dict[str, Any]]:
    made: dict[str, Any] = {}

    def program() -> None:
        component = ClusterSecurity(
            "sec",
            ClusterSecurityArgs(
                "lsdb-x", "lsdb", SecurityConfig.model_validate(security), pulumi.Output.from_input("dask-op"), **args
            ),
        )
        made["component"] = component
        if component.client_tls is not None:
            pulumi.export("clientTls", component.client_tls)

    return run_program({}, program=program), made


def test_network_policies_are_the_pure_manifests_named_by_the_component() -> None:
    run, _ = run_security({"tls": False}, object_store=True, identity_provider="gcp", scraper_namespace="monitoring")
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
    run, _ = run_security({"tls": True}, service_names=("lsdb-x-0a1b-scheduler", "lsdb-x-scheduler"))
    return run


def test_the_server_certificate_serves_and_dials_every_scheduler_name(tls_run: ProgramRun) -> None:
    server = tls_run.named("sec-server")
    assert set(server.inputs["allowedUses"]) == {"digital_signature", "key_encipherment", "server_auth", "client_auth"}
    csr = tls_run.named("sec-server-csr")
    assert csr.inputs["subject"]["commonName"] == "lsdb-x-0a1b-scheduler"
    assert {"lsdb-x-scheduler.lsdb.svc", "lsdb-x-0a1b-scheduler.lsdb.svc.cluster.local", "localhost"} <= set(
        csr.inputs["dnsNames"]
    )
    assert csr.inputs["ipAddresses"] == ["127.0.0.1"]  # the port-forward
    assert server.inputs["validityPeriodHours"] == 365 * 24 and server.inputs["earlyRenewalHours"] == 30 * 24


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
    assert secret.inputs["metadata"]["name"] == "lsdb-x-tls" and secret.inputs["metadata"]["namespace"] == "lsdb"
    assert secret.inputs["type"] == "kubernetes.io/tls"
    assert set(unwrap_secrets(secret.inputs["stringData"])) == {"ca.crt", "tls.crt", "tls.key"}
    assert "4dabf18193072939515e22adb298388d" in str(secret.raw_inputs["stringData"])  # sent as a Pulumi secret
    assert "clientTls" in tls_run.secret_outputs
    assert set(unwrap_secrets(tls_run.outputs["clientTls"])) == {"ca", "cert", "key"}


def test_every_child_is_the_components_and_waits_for_what_the_component_waits_for() -> None:
    import pulumi_kubernetes as k8s

    def program() -> None:
        namespace = k8s.core.v1.Namespace("ns")
        args = ClusterSecurityArgs("lsdb-x", "lsdb", SecurityConfig.model_validate({"tls": True}), "dask-op")
        ClusterSecurity("sec", args, pulumi.ResourceOptions(depends_on=[namespace]))

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
