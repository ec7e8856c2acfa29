"""The catalog copy's manifests as the cluster would act on them (components/catalogs.py): the flows its
NetworkPolicy allows, the command, environment, mounts and placement its pod gets, the Secret's keys. Fast (no
program run): `make mutate`'s tests of components/catalogs.py, with tests/test_catalogs.py."""

from __future__ import annotations

import json
from typing import Any

import pytest

from components.catalog_config import CatalogConfig
from components.catalogs import (
    BACKOFF_LIMIT,
    JOB_TIMEOUT,
    credentials_secret_manifest,
    engine_source,
    labels,
    provision_job_manifest,
    provision_network_policy_manifest,
    source_ports,
)
from components.constants import PART_OF
from tests.support.netpol import Cluster, External, Pod, pod_from_template
from tests.test_catalogs import CONFIG, IMAGE, S3, SECURE, stack

ABFS = CatalogConfig(source="abfs://survey/gaia", credentials={"accountName": SECURE, "accountKey": SECURE})
BLOCK, SOURCE, ELSEWHERE = "52.216.0.0/15", External("s3", "52.217.1.2"), External("internet", "203.0.113.9")
DNS = Pod("kube-dns", "kube-system", {"k8s-app": "kube-dns"}, "10.0.9.7")


def job(catalog: CatalogConfig = S3, name: str = "gaia", **kwargs: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"config": CONFIG, "pull_secret": None, "source": engine_source(), "image": IMAGE}
    manifest: dict[str, Any] = provision_job_manifest(name, catalog, **(args | kwargs))
    return manifest


def container_of(manifest: dict[str, Any]) -> dict[str, Any]:
    [container] = manifest["spec"]["template"]["spec"]["containers"]
    return dict(container)


def job_pod(name: str, catalog: CatalogConfig = S3, ip: str = "10.0.3.1") -> Pod:
    return pod_from_template(name, "lsdb", job(catalog, name)["spec"]["template"], ip)


def policies(catalog: CatalogConfig = S3, ports: tuple[int, ...] = (443, 9000)) -> Cluster:
    return Cluster([provision_network_policy_manifest("gaia", catalog, "lsdb", [BLOCK], list(ports))])


def test_the_policy_lets_the_job_reach_dns_and_its_source_on_its_ports_only() -> None:
    cluster, pod = policies(), job_pod("gaia")
    assert cluster.allowed(pod, SOURCE, 443) and cluster.allowed(pod, SOURCE, 9000)
    assert cluster.allowed(pod, DNS, 53, "UDP") and cluster.allowed(pod, DNS, 53, "TCP")
    assert not cluster.allowed(pod, SOURCE, 80) and not cluster.allowed(pod, SOURCE, 9000, "UDP")
    assert not cluster.allowed(pod, ELSEWHERE, 443) and not cluster.allowed(pod, DNS, 443)
    worker = Pod("worker", "lsdb", {"app.kubernetes.io/part-of": PART_OF}, "10.0.2.1")
    assert not cluster.allowed(pod, worker, 8788)
    assert not cluster.allowed(worker, pod, 8080) and not cluster.allowed(DNS, pod, 53, "UDP")  # no ingress at all


def test_the_policy_is_the_one_catalog_s_and_leaves_other_pods_alone() -> None:
    cluster, other = policies(), job_pod("ztf", ip="10.0.3.2")
    assert cluster.allowed(other, ELSEWHERE, 22)  # another catalog's Job: its own policy, not this one
    bystander = Pod("app", "lsdb", {"app.kubernetes.io/component": "catalog-provision"}, "10.0.9.1")
    assert cluster.allowed(bystander, ELSEWHERE, 22)
    policy = provision_network_policy_manifest("gaia", S3, "lsdb", [BLOCK], [443])
    assert (policy["apiVersion"], policy["kind"]) == ("networking.k8s.io/v1", "NetworkPolicy")
    assert policy["metadata"] == {"name": "gaia-provision", "namespace": "lsdb", "labels": labels("gaia")}


@pytest.mark.parametrize(
    ("source", "port"),
    [("https://data.example/hats", 443), ("http://data.example/hats", 80), ("https://data.example:8443/h", 8443)],
)
def test_a_url_source_is_reached_on_its_own_port_not_the_egress_ports(source: str, port: int) -> None:
    catalog = CatalogConfig(source=source)
    assert source_ports(catalog, [9000]) == [port]
    cluster, pod = policies(catalog, (9000,)), job_pod("gaia", catalog)
    assert cluster.allowed(pod, SOURCE, port) and not cluster.allowed(pod, SOURCE, 9000)


def test_an_object_store_source_is_reached_on_the_egress_ports_once_each() -> None:
    assert source_ports(S3, [9000, 443, 9000]) == [443, 9000]


def test_the_labels_name_the_program_the_component_and_the_catalog() -> None:
    assert labels("gaia") == {
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/component": "catalog-provision",
        "lsdb-k8s/catalog": "gaia",
    }
    manifest = job()
    assert manifest["spec"]["template"]["metadata"]["labels"] == labels("gaia")
    assert manifest["metadata"]["labels"] == labels("gaia") and manifest["metadata"]["namespace"] == "lsdb"


def test_the_job_runs_the_engine_once_per_try_with_the_source_the_destination_and_its_threads() -> None:
    manifest = job()
    assert (manifest["apiVersion"], manifest["kind"]) == ("batch/v1", "Job")
    assert manifest["spec"]["backoffLimit"] == BACKOFF_LIMIT == 2 and JOB_TIMEOUT == "60m"
    assert manifest["metadata"]["annotations"] == {"pulumi.com/replaceUnready": "true"}
    pod = manifest["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and "nodeSelector" not in pod and "imagePullSecrets" not in pod
    container = container_of(manifest)
    assert container["name"] == "provision" and container["imagePullPolicy"] == "IfNotPresent"
    assert container["command"] == [
        "python", "/opt/lsdb-provision/catalog_copy.py",
        "--source", "s3://survey/gaia",
        "--dest", "/data/catalogs/gaia",
        "--threads", "8",
        "--storage-options", json.dumps({"anon": False}),
    ]  # fmt: skip
    assert container["resources"] == {
        "requests": {"cpu": "250m", "memory": "512Mi"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    }
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["provision-code"] == {"name": "provision-code", "mountPath": "/opt/lsdb-provision", "readOnly": True}
    assert mounts["catalog-data"] == {"name": "catalog-data", "mountPath": "/data"}
    assert mounts["provision-key"]["mountPath"] == "/var/run/secrets/lsdb-provision"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["provision-key"] == {"name": "provision-key", "secret": {"secretName": "gaia-provision-credentials"}}
    assert set(volumes) == set(mounts)


def test_an_anonymous_source_gets_no_keys() -> None:
    catalog = CatalogConfig(source="s3://survey/gaia", anonymous=True)
    container = container_of(job(catalog))
    assert container["env"] == [] and "provision-key" not in {m["name"] for m in container["volumeMounts"]}
    assert credentials_secret_manifest("gaia", catalog, "lsdb", {}) is None
    args = container["command"]
    assert json.loads(args[args.index("--storage-options") + 1]) == {"anon": True}


def test_abfs_keys_are_variables_from_the_secret_with_the_scanner_told_why() -> None:
    manifest = job(ABFS)
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container_of(manifest)["env"]}
    assert env == {
        "AZURE_STORAGE_ACCOUNT_NAME": {"name": "gaia-provision-credentials", "key": "AZURE_STORAGE_ACCOUNT_NAME"},
        "AZURE_STORAGE_ACCOUNT_KEY": {"name": "gaia-provision-credentials", "key": "AZURE_STORAGE_ACCOUNT_KEY"},
    }
    annotations = manifest["metadata"]["annotations"]
    assert annotations["pulumi.com/replaceUnready"] == "true"
    assert annotations["checkov.io/skip1"].startswith("CKV_K8S_35=") and "checkov.io/skip2" not in annotations
    secret = credentials_secret_manifest("gaia", ABFS, "lsdb", {"accountName": "acct", "accountKey": "k"})
    assert secret == {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "gaia-provision-credentials", "namespace": "lsdb", "labels": labels("gaia")},
        "type": "Opaque",
        "stringData": {"AZURE_STORAGE_ACCOUNT_NAME": "acct", "AZURE_STORAGE_ACCOUNT_KEY": "k"},
    }


def test_a_pinned_hostpath_copy_runs_on_the_workers_node() -> None:
    one_node = stack(cluster={"workers": {"placement": {"nodeSelector": {"kubernetes.io/hostname": "n1"}}}})
    assert job(config=one_node)["spec"]["template"]["spec"]["nodeSelector"] == {"kubernetes.io/hostname": "n1"}


def test_the_job_name_is_the_catalog_and_a_digest_of_its_spec() -> None:
    name = job()["metadata"]["name"]
    assert name.startswith("gaia-provision-") and len(name) == len("gaia-provision-") + 8
    assert all(c in "0123456789abcdef" for c in name.removeprefix("gaia-provision-"))
    assert job(pull_secret="p")["metadata"]["name"] != name  # the pod template changed: a new Job


def test_a_digest_is_of_the_content_not_its_key_order() -> None:
    from components.catalogs import code_config_map_manifest
    from components.cluster import spec_digest

    assert spec_digest({"a": 1, "b": [2]}) == spec_digest({"b": [2], "a": 1}) != spec_digest({"a": 1, "b": [3]})
    name = code_config_map_manifest("gaia", "ns", "x")["metadata"]["name"]
    assert name == "gaia-provision-code-" + spec_digest("x")[:8]


def test_the_component_names_waits_for_and_guards_each_catalog_s_objects(monkeypatch: pytest.MonkeyPatch) -> None:
    import pulumi
    import pulumi_kubernetes as k8s

    from components.catalogs import CatalogProvisioning, code_config_map_manifest
    from tools.mock_runtime import has_plaintext, run_program

    timeouts: dict[str, Any] = {}
    job_class = k8s.batch.v1.Job

    def recording_job(name: str, **kwargs: Any) -> Any:
        timeouts[name] = kwargs["opts"].custom_timeouts
        return job_class(name, **kwargs)

    monkeypatch.setattr(k8s.batch.v1, "Job", recording_job)
    registered: dict[str, Any] = {}
    monkeypatch.setattr(CatalogProvisioning, "register_outputs", lambda self, out: registered.setdefault("cats", out))
    catalogs = {"gaia": S3, "ztf": ABFS, "anon": CatalogConfig(source="https://data.example/hats/anon")}
    raw = {
        "gaia": {"source": "s3://survey/gaia", "credentials": {"accessKeyId": SECURE, "secretAccessKey": SECURE}},
        "ztf": {"source": "abfs://survey/gaia", "credentials": {"accountName": SECURE, "accountKey": SECURE}},
        "anon": {"source": "https://data.example/hats/anon"},
    }
    config = stack(catalogs=raw)
    closed = stack(security={"networkPolicy": False}, catalogs={"gaia": raw["gaia"]})
    assert config.catalogs == catalogs

    def program() -> None:
        creds = pulumi.Output.secret({"accessKeyId": "AKIAEXAMPLE", "secretAccessKey": "very-secret"})
        gate = k8s.core.v1.Namespace("gate", metadata={"name": "lsdb"})
        opts = pulumi.ResourceOptions(depends_on=[gate])
        component = CatalogProvisioning("cats", config, IMAGE, "regcred", {"gaia": creds}, opts)  # ztf's not given
        pulumi.export("paths", component.paths)
        CatalogProvisioning("closed", closed, IMAGE, None, {})

    run = run_program({}, program=program)
    by_name = {r.name: r for r in run.resources}
    assert {n for n in by_name if n.startswith("cats-")} == {
        "cats-gaia-code", "cats-gaia-credentials", "cats-gaia-netpol", "cats-gaia-job",
        "cats-ztf-code", "cats-ztf-netpol", "cats-ztf-job", "cats-anon-code", "cats-anon-netpol", "cats-anon-job",
    }  # fmt: skip
    assert {n for n in by_name if n.startswith("closed-")} == {"closed-gaia-code", "closed-gaia-job"}
    assert by_name["cats"].type == "lsdb-k8s:catalogs:CatalogProvisioning"
    assert by_name["gate"].urn in by_name["cats"].dependencies
    for child in (r for n, r in by_name.items() if n.startswith("cats-")):  # each waits for what the component does
        assert by_name["gate"].urn in child.dependencies and child.parent == by_name["cats"].urn, child.name
    assert run.outputs["paths"] == {k: f"/data/catalogs/{k}" for k in catalogs}
    assert registered["cats"] == {"catalogPaths": run.outputs["paths"]}
    code = by_name["cats-gaia-code"].inputs
    expected = code_config_map_manifest("gaia", "lsdb", engine_source())
    assert code == expected and code["immutable"] is True and code["metadata"]["namespace"] == "lsdb"
    secret = by_name["cats-gaia-credentials"]
    assert secret.inputs["type"] == "Opaque" and secret.inputs["metadata"]["name"] == "gaia-provision-credentials"
    assert secret.inputs["metadata"]["labels"] == labels("gaia") and secret.inputs["metadata"]["namespace"] == "lsdb"
    assert "aws_secret_access_key = very-secret" in secret.inputs["stringData"]["credentials"]
    assert not has_plaintext(secret.raw_inputs, "very-secret")
    policy = by_name["cats-ztf-netpol"].inputs
    assert policy == provision_network_policy_manifest("ztf", ABFS, "lsdb", ["0.0.0.0/0"], [443])
    job_ = by_name["cats-gaia-job"]
    assert job_.inputs == job(config=config, pull_secret="regcred")
    needs = {by_name[n].urn for n in ("cats-gaia-code", "cats-gaia-credentials", "cats-gaia-netpol")}
    assert needs <= set(job_.dependencies) and by_name["cats-gaia-job"].parent == by_name["cats-gaia-code"].parent
    assert by_name["cats-gaia-code"].parent.endswith("CatalogProvisioning::cats")
    assert set(timeouts) == {"cats-gaia-job", "cats-ztf-job", "cats-anon-job", "closed-gaia-job"}
    assert all((t.create, t.update, t.delete) == ("60m", "60m", None) for t in timeouts.values())


def test_a_key_with_a_line_break_is_refused_at_its_catalog_s_key() -> None:
    with pytest.raises(ValueError, match=r"^catalogs\.gaia\.credentials\.secretAccessKey holds a line break"):
        credentials_secret_manifest("gaia", S3, "lsdb", {"accessKeyId": "k", "secretAccessKey": "s\nx"})


def test_the_component_refuses_a_key_with_a_line_break_at_its_catalog_s_key() -> None:
    import pulumi

    from components.catalogs import CatalogProvisioning
    from tools.mock_runtime import run_program

    config = stack(catalogs={"gaia": {"source": "s3://survey/gaia", "credentials": {"accessKeyId": SECURE}}})

    def program() -> None:
        creds = pulumi.Output.secret({"accessKeyId": "AKIA\nEXAMPLE"})
        CatalogProvisioning("cats", config, IMAGE, None, {"gaia": creds})

    with pytest.raises(Exception, match=r"catalogs\.gaia\.credentials\.accessKeyId holds a line break"):
        run_program({}, program=program)
