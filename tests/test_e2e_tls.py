"""TLS end to end without a cluster: the rendered DaskCluster with `security.tls` on, run as the operator and
kubelet would run it (tools/pod_emulator.py), with real certificates in its Secret.

The certificates are made here with `cryptography` (tests/support/certs.py), standing in for the ones pulumi-tls
makes at deploy time, with the same SANs (`certificate_dns_names`) and the Secret's keys (`TLS_FILES`). The
scheduler and workers must register over TLS, the verification (the dynamic provider's create, given the client
bundle as `pulumi up` gives it `clientTls`) must find exactly the cone's rows, and a plain-TCP client, a TLS client
without a certificate and one whose certificate another CA signed must all be refused.

Rotation (components/tls_schedule.py): the Secret is the TLS epoch's; a certificate rotation keeps the CA, so a
cluster started before it keeps serving clients holding the bundle issued after it; a CA rotation does not.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.cluster import TLS_FILES
from components.lock import PROJECT_DIR
from components.security import certificate_dns_names, tls_secret_name
from components.tls_schedule import certificate_schedule
from tests.support.certs import Authority, Pem
from tests.test_e2e import N_ROWS, SEED, direct_props, expected_rows, verification_props
from tools.pod_emulator import EmulatedCluster

pytestmark = pytest.mark.e2e

STACK = "devtls"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The dev stack with `security.tls: true` (the shipped prod and staging default), rendered offline."""
    from tools.render import render_stack

    directory = tmp_path_factory.mktemp("stack")
    shutil.copy(PROJECT_DIR / "Pulumi.yaml", directory / "Pulumi.yaml")
    doc = yaml.safe_load((PROJECT_DIR / "Pulumi.dev.yaml").read_text())
    doc["config"]["lsdb-k8s:security"] = {"tls": True}
    (directory / f"Pulumi.{STACK}.yaml").write_text(yaml.safe_dump(doc))
    result = render_stack(STACK, directory)
    objects = result.live_objects()  # patches applied: the stable Service with its selector
    (daskcluster,) = [o for o in objects if o["kind"] == "DaskCluster"]
    services = [o for o in objects if o["kind"] == "Service"]  # the stable <cluster.name>-scheduler
    return {"daskcluster": daskcluster, "summary": result.summary, "objects": objects, "services": services}


@pytest.fixture(scope="module")
def pki(rendered: dict[str, Any]) -> dict[str, Any]:
    cluster = rendered["daskcluster"]["metadata"]
    ca = Authority.create("lsdb-k8s test CA")
    # As the program names them: the stable Service and the live cluster's own (candidate) Service.
    services = [s["metadata"]["name"] for s in rendered["services"]] + [f"{cluster['name']}-scheduler"]
    server = ca.issue(services[0], certificate_dns_names(services, cluster["namespace"]))
    return {"ca": ca, "server": server, "client": ca.issue("lsdb-client", server=False)}


@pytest.fixture(scope="module")
def emulated(
    rendered: dict[str, Any], pki: dict[str, Any], tmp_path_factory: pytest.TempPathFactory, request: Any
) -> EmulatedCluster:
    from scripts.sample_catalog import write_sample_catalog

    daskcluster = rendered["daskcluster"]
    secret = {
        TLS_FILES["ca"]: pki["ca"].pem.cert,
        TLS_FILES["cert"]: pki["server"].cert,
        TLS_FILES["key"]: pki["server"].key,
    }
    root = tmp_path_factory.mktemp("emulated-tls")
    claim = root / "pvc"
    claim.mkdir()
    cluster = EmulatedCluster(
        daskcluster,
        root / "cluster",
        claims={"hats-catalog-pvc": claim},
        secrets={tls_secret(daskcluster): secret},
        services=rendered["services"],
    )
    request.addfinalizer(cluster.stop)
    props = verification_props(rendered["summary"])
    write_sample_catalog(cluster.map_path(props["catalogPath"]), N_ROWS, seed=SEED)
    cluster.start(timeout=120)
    cluster.wait_for_workers(timeout=120, security=client_security(pki["ca"].pem.cert, pki["client"], root))
    return cluster


def tls_secret(daskcluster: dict[str, Any]) -> str:
    """The certificate Secret the scheduler pod mounts."""
    volumes = daskcluster["spec"]["scheduler"]["spec"]["volumes"]
    (name,) = [v["secret"]["secretName"] for v in volumes if v["name"] == "dask-tls"]
    return str(name)


def client_security(ca: str, client: Pem | None, directory: Path) -> Any:
    from distributed.security import Security

    (directory / "ca.pem").write_text(ca)
    if client is None:
        return Security(tls_ca_file=str(directory / "ca.pem"), require_encryption=True)
    (directory / "client.pem").write_text(client.cert)
    (directory / "client.key").write_text(client.key)
    return Security(
        tls_ca_file=str(directory / "ca.pem"),
        tls_client_cert=str(directory / "client.pem"),
        tls_client_key=str(directory / "client.key"),
        require_encryption=True,
    )


def test_the_rendered_cluster_is_configured_for_tls(rendered: dict[str, Any]) -> None:
    spec = rendered["daskcluster"]["spec"]
    (scheduler,) = spec["scheduler"]["spec"]["containers"]
    (worker,) = spec["worker"]["spec"]["containers"]
    assert scheduler["args"][:4] == ["dask", "scheduler", "--protocol", "tls"]
    env = {e["name"]: e.get("value") for e in worker["env"]}
    live, ns = rendered["daskcluster"]["metadata"]["name"], rendered["daskcluster"]["metadata"]["namespace"]
    # Workers join their own cluster's Service over TLS; clients get the stable one (also tls://).
    assert env["DASK_SCHEDULER_ADDRESS"] == f"tls://{live}-scheduler.{ns}.svc.cluster.local:8786"
    assert rendered["summary"]["exports"]["schedulerAddress"].startswith("tls://")
    assert env["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] == "True"
    assert {m["mountPath"]: m.get("readOnly") for m in worker["volumeMounts"]}["/etc/dask-tls"] is True


def test_scheduler_and_workers_register_over_tls(emulated: EmulatedCluster, pki: dict[str, Any], tmp_path: Path):
    assert emulated.scheduler_address.startswith("tls://127.0.0.1:")
    workers = emulated.wait_for_workers(
        timeout=60, security=client_security(pki["ca"].pem.cert, pki["client"], tmp_path)
    )
    assert sorted(w["name"] for w in workers.values()) == sorted(emulated.worker_names)
    assert all(address.startswith("tls://") for address in workers)


def test_verification_over_tls_returns_the_exact_rows(
    emulated: EmulatedCluster, rendered: dict[str, Any], pki: dict[str, Any]
) -> None:
    """The provider gets the client bundle as `pulumi up` passes `clientTls` (a secret input) and keeps it out of
    its outputs."""
    from components.verification.resource import new_provider

    props = verification_props(rendered["summary"])
    bundle = {"ca": pki["ca"].pem.cert, "cert": pki["client"].cert, "key": pki["client"].key}
    inputs = {**direct_props(props, emulated, rendered["summary"]["exports"]), "clientTls": bundle}
    outs = new_provider().create(inputs).outs
    assert outs["rows"] == expected_rows(props["ra"], props["dec"], props["radiusArcsec"])
    assert "clientTls" not in outs and pki["client"].key not in str(outs)


def probe(address: str, security: Any) -> dict[str, Any]:
    """One Dask identity exchange, in a thread as the verification runs it (asyncio.run in pytest's main thread
    would leave it without an event loop, which Pulumi's mock runtime in later tests needs)."""
    from concurrent.futures import ThreadPoolExecutor

    from components.verification.check import _probe_scheduler

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(_probe_scheduler, address, 10.0, security).result(timeout=30)


def refused(address: str, security: Any) -> str:
    with pytest.raises(Exception) as exc:  # the TLS layer's errors differ by failure
        probe(address, security)
    return f"{type(exc.value).__name__}: {exc.value}"


def test_plain_tcp_client_is_refused(emulated: EmulatedCluster, rendered: dict[str, Any]) -> None:
    from components.verification.check import VerificationError, verify_catalog_query
    from components.verification.query import VerificationQuery

    tcp = emulated.scheduler_address.replace("tls://", "tcp://")
    refused(tcp, None)
    props = verification_props(rendered["summary"])
    query = VerificationQuery(
        catalog_path=props["catalogPath"], cone={"ra": 180.0, "dec": 0.0, "radius_arcsec": 60.0}, timeout_seconds=4.0
    )
    with pytest.raises(VerificationError) as exc:
        verify_catalog_query(tcp, query)
    assert exc.value.stage == "connect"


def test_client_without_a_certificate_is_refused(emulated: EmulatedCluster, pki: dict[str, Any], tmp_path: Path):
    refused(emulated.scheduler_address, client_security(pki["ca"].pem.cert, None, tmp_path))


def test_client_certificate_of_another_ca_is_refused(emulated: EmulatedCluster, pki: dict[str, Any], tmp_path: Path):
    stranger = Authority.create("another CA").issue("intruder", server=False)
    refused(emulated.scheduler_address, client_security(pki["ca"].pem.cert, stranger, tmp_path))


def test_the_right_certificate_is_accepted_by_the_same_probe(
    emulated: EmulatedCluster, pki: dict[str, Any], tmp_path: Path
) -> None:
    """Control for the refusals above: the probe itself works with the client certificate."""
    security = client_security(pki["ca"].pem.cert, pki["client"], tmp_path)
    assert probe(emulated.scheduler_address, security)["type"] == "Scheduler"


def test_the_pods_mount_the_tls_epochs_secret(rendered: dict[str, Any]) -> None:
    """The render ran on a day of some epoch: its tag names the Secret (a rotation is a new `<h>`)."""
    from datetime import UTC, datetime, timedelta

    daskcluster = rendered["daskcluster"]
    cluster_name = daskcluster["metadata"]["labels"]["app.kubernetes.io/name"]
    today = datetime.now(UTC).date()
    tags = {certificate_schedule(day).tag for day in (today - timedelta(days=1), today)}  # a render at midnight
    assert tls_secret(daskcluster) in {tls_secret_name(cluster_name, tag) for tag in tags}


def test_a_certificate_rotation_keeps_the_running_cluster_serving_the_new_bundle(
    emulated: EmulatedCluster, pki: dict[str, Any], tmp_path: Path
) -> None:
    """Same CA (a certificate rotation): the cluster started with the old server certificate accepts a client
    holding the bundle issued after the rotation (`clientTls` changes at the `pulumi up` that starts the new
    cluster; clients fetching it early still reach the old one), and clients keeping the old bundle are accepted too
    (the control above). After a CA rotation the new bundle is refused by the old cluster: the stable Service has
    switched to the new cluster by the time `pulumi up` exports it."""
    ca: Authority = pki["ca"]
    for directory in ("rotated", "new-ca"):
        (tmp_path / directory).mkdir()
    rotated = ca.issue("lsdb-client", server=False)
    assert rotated.cert != pki["client"].cert
    accepted = probe(emulated.scheduler_address, client_security(ca.pem.cert, rotated, tmp_path / "rotated"))
    assert accepted["type"] == "Scheduler"
    new_ca = Authority.create("lsdb-k8s devtls CA g0-ca1")
    bundle = new_ca.issue("lsdb-client", server=False)
    refused(emulated.scheduler_address, client_security(new_ca.pem.cert, bundle, tmp_path / "new-ca"))


def test_no_emulated_process_is_left_running(emulated: EmulatedCluster) -> None:
    emulated.stop()
    assert emulated.leftover_pids() == []
