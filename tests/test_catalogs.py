"""The `catalogs` section, the refusals, and the provisioning Job/ConfigMap/Secret/NetworkPolicy manifests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import kubernetes_validate
import pytest
import yaml
from pydantic import TypeAdapter, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from components import cluster
from components.catalog_config import MAX_NAME, CatalogConfig, provisioning_problems
from components.catalogs import (
    CATALOG_LABEL,
    CLAIM_VOLUME,
    CODE_DIR,
    ENGINE_FILE,
    KEY_DIR,
    code_config_map_manifest,
    credentials_secret_manifest,
    engine_source,
    provision_job_manifest,
    provision_network_policy_manifest,
)
from components.config import StackConfig, parse_stack_config
from components.storage_config import StorageConfig
from tests.support.checkov import CHECKOV, require_checkov

SECURE = {"secure": "v1:x"}  # a value `pulumi config set --secret` stored


def storage(**values: Any) -> StorageConfig:
    return cast(StorageConfig, TypeAdapter(StorageConfig).validate_python(values, by_name=True))


IMAGE = "registry.example/lsdb@sha256:" + "a" * 64
PVC = storage(kind="pvc", mount_path="/data")


def stack(**sections: Any) -> StackConfig:
    """A stack with the claim PVC in namespace lsdb, and these sections."""
    pvc = {"kind": "pvc", "mountPath": "/data"}
    return parse_stack_config({
        "namespace": "lsdb", "storage": pvc, "image": {"repository": "ghcr.io/acme/lsdb-dask"},
        "verify": {"enabled": False}, **sections,
    })  # fmt: skip


CONFIG = stack()
S3 = CatalogConfig(source="s3://survey/gaia", credentials={"accessKeyId": SECURE, "secretAccessKey": SECURE})


def rule_errors(exc: ValidationError) -> list[tuple[str, Any, str, str]]:
    return [(".".join(map(str, e["loc"])), e["input"], e["msg"], e["ctx"]["fix"]) for e in exc.errors()]


def described(found: InitErrorDetails) -> tuple[str, str]:
    """(key, the rest of the report line) of a stack-level problem."""
    error = found["type"]
    assert isinstance(error, PydanticCustomError)
    return ".".join(map(str, found["loc"])), f"{found['input']}: {error.message()} Fix: {error.context['fix']}"


def test_a_source_is_a_url_with_a_driver_and_its_own_credentials() -> None:
    with pytest.raises(ValidationError) as exc:
        CatalogConfig(source="ftp://host/cat", credentials={"accountKey": SECURE}, anonymous=True)
    keys = {rule[0] for rule in rule_errors(exc.value)}
    assert keys == {"source", "anonymous"}  # all problems at once
    with pytest.raises(ValidationError) as exc:
        CatalogConfig(source="gs://b/c", credentials={"accessKeyId": SECURE})
    [(key, _value, what, fix)] = rule_errors(exc.value)
    assert key == "credentials.accessKeyId" and "gs://" in what and "serviceAccountJson" in fix
    with pytest.raises(ValidationError) as exc:
        CatalogConfig(source="s3://b/c", credentials={"accessKeyId": "AKIAEXAMPLE"})
    [(key, value, what, fix)] = rule_errors(exc.value)
    assert (key, value) == ("credentials.accessKeyId", "[plaintext]") and "--secret catalogs.<name>" in fix
    decrypted = CatalogConfig.model_validate(
        {"source": "s3://b/c", "credentials": {"accessKeyId": "AKIAEXAMPLE"}}, context={"secret_keys": {"catalogs"}}
    )  # `catalogs` held as a secret by Pulumi: the program gets its values decrypted, the model keeps a marker
    assert decrypted.credentials == {"accessKeyId": "[secret]"}
    assert CatalogConfig(source="s3a://b/c", anonymous=True).storage_options == {"anon": True}
    assert CatalogConfig(source="https://data.example/hats/gaia").storage_options == {}
    assert S3.credential_env == {"accessKeyId": "AWS_ACCESS_KEY_ID", "secretAccessKey": "AWS_SECRET_ACCESS_KEY"}


@pytest.mark.parametrize(
    ("storage", "selector", "key", "needle"),
    [
        (storage(kind="objectStore", object_store={"url": "s3://b/c", "anonymous": True}), {}, "catalogs", "in place"),
        (storage(kind="none"), {}, "catalogs", "storage.kind none"),
        (storage(kind="pvc", access_mode="ReadOnlyMany"), {}, "storage.accessMode", "ReadOnlyMany"),
        (storage(kind="hostPath", host_path={"path": "/cats"}), {}, "storage.kind", "kubernetes.io/hostname"),
    ],
)
def test_provisioning_is_refused_where_it_cannot_work(
    storage: StorageConfig, selector: dict[str, str], key: str, needle: str
) -> None:
    [found] = provisioning_problems({"gaia": S3}, storage, selector)
    assert described(found)[0] == key and needle in described(found)[1]


def test_provisioning_is_accepted_where_it_works() -> None:
    assert list(provisioning_problems({"gaia": S3}, PVC, {})) == []
    host = storage(kind="hostPath", host_path={"path": "/cats"})
    assert list(provisioning_problems({"gaia": S3}, host, {"kubernetes.io/hostname": "node-1"})) == []
    assert list(provisioning_problems({}, storage(kind="none"), {})) == []
    [long_name] = provisioning_problems({"g" * (MAX_NAME + 1): S3}, PVC, {})
    assert described(long_name)[0] == "catalogs." + "g" * (MAX_NAME + 1) and str(MAX_NAME) in described(long_name)[1]


def name_of(catalog: CatalogConfig, source: str, image: str = IMAGE) -> str:
    name: str = provision_job_manifest("gaia", catalog, CONFIG, None, source, image)["metadata"]["name"]
    return name


def test_the_job_name_follows_the_source_and_the_engine() -> None:
    source = engine_source()
    name = name_of(S3, source)
    assert len(name) <= 63 and name.startswith("gaia-provision-")
    assert name_of(S3, source) == name  # same source: same Job, a re-run of `pulumi up` changes nothing
    assert name_of(S3.model_copy(update={"source": "s3://survey/gaia-dr4"}), source) != name
    assert name_of(CatalogConfig(source="s3://survey/gaia", anonymous=True), source) != name
    # The credentials' files are in the spec (s3: `credentials`, `config`), their values only in the Secret.
    assert name_of(S3.model_copy(update={"credentials": {"region": "[secret]"}}), source) != name
    assert name_of(S3.model_copy(update={"credentials": {}}), source) != name
    assert name_of(S3, source + "\n# changed engine\n") != name
    assert name_of(S3, source, image=IMAGE.replace("a", "b")) != name  # a new lock: a new Job (a 0-byte re-run)
    code = code_config_map_manifest("gaia", "lsdb", source)
    assert code["metadata"]["name"] != code_config_map_manifest("gaia", "lsdb", source + " ")["metadata"]["name"]


def manifests(
    catalog: CatalogConfig = S3, config: StackConfig = CONFIG, pull_secret: str | None = None
) -> dict[str, Any]:
    source = engine_source()
    return {
        "job": provision_job_manifest("gaia", catalog, config, pull_secret, source, IMAGE),
        "code": code_config_map_manifest("gaia", "lsdb", source),
        "policy": provision_network_policy_manifest("gaia", catalog, "lsdb", ["10.0.0.0/8"], [443, 9000]),
        "secret": credentials_secret_manifest("gaia", catalog, "lsdb", {"accessKeyId": "k", "secretAccessKey": "s"}),
    }


def test_the_job_is_hardened_like_the_cluster_pods_and_writes_only_its_directory() -> None:
    one_node = stack(cluster={"workers": {"placement": {"nodeSelector": {"kubernetes.io/hostname": "n1"}}}})
    assert one_node.storage == PVC and one_node.namespace == "lsdb"
    m = manifests(config=one_node, pull_secret="p")
    pod = m["job"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert pod["securityContext"] == cluster.POD_SECURITY_CONTEXT
    assert container["securityContext"] == cluster.CONTAINER_SECURITY_CONTEXT
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["automountServiceAccountToken"] is False and pod["restartPolicy"] == "Never"
    assert container["image"] == IMAGE
    mounts = {v["mountPath"]: v for v in container["volumeMounts"]}
    assert mounts["/data"]["name"] == CLAIM_VOLUME and not mounts["/data"].get("readOnly")
    assert mounts[CODE_DIR]["readOnly"] is True and "/tmp" in mounts and cluster.HOME_DIR in mounts
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[CLAIM_VOLUME]["persistentVolumeClaim"]["claimName"] == PVC.claim_name
    assert volumes[mounts[CODE_DIR]["name"]]["configMap"]["name"] == m["code"]["metadata"]["name"]
    assert container["command"][:2] == ["python", f"{CODE_DIR}/{ENGINE_FILE}"]
    args = container["command"]
    assert args[args.index("--dest") + 1] == "/data/catalogs/gaia"
    assert json.loads(args[args.index("--storage-options") + 1]) == {"anon": False}
    assert pod["nodeSelector"] == {"kubernetes.io/hostname": "n1"} and pod["imagePullSecrets"] == [{"name": "p"}]
    # The keys: the AWS shared-credentials file of the Secret, mounted read-only where the variable says.
    assert container["env"] == [{"name": "AWS_SHARED_CREDENTIALS_FILE", "value": f"{KEY_DIR}/credentials"}]
    assert mounts[KEY_DIR]["readOnly"] is True
    assert volumes[mounts[KEY_DIR]["name"]]["secret"]["secretName"] == m["secret"]["metadata"]["name"]
    assert m["secret"]["stringData"] == {"credentials": "[default]\naws_access_key_id = k\naws_secret_access_key = s\n"}
    assert "checkov.io/skip1" not in m["job"]["metadata"]["annotations"]
    assert m["job"]["spec"]["backoffLimit"] >= 1
    assert m["code"]["data"][ENGINE_FILE] == engine_source() and m["code"]["immutable"] is True


def test_the_network_policy_selects_the_job_pods_and_allows_dns_and_the_source_only() -> None:
    m = manifests()
    spec = m["policy"]["spec"]
    pod_labels = m["job"]["spec"]["template"]["metadata"]["labels"]
    assert all(pod_labels[k] == v for k, v in spec["podSelector"]["matchLabels"].items())
    assert spec["podSelector"]["matchLabels"][CATALOG_LABEL] == "gaia"
    assert spec["policyTypes"] == ["Ingress", "Egress"] and spec["ingress"] == []
    dns, source = spec["egress"]
    assert {p["port"] for p in dns["ports"]} == {53} and "to" not in dns
    assert source["to"] == [{"ipBlock": {"cidr": "10.0.0.0/8"}}]
    assert [p["port"] for p in source["ports"]] == [443, 9000]  # s3: security.egressPorts
    https = manifests(CatalogConfig(source="https://data.example:8443/hats/gaia"))["policy"]["spec"]["egress"][1]
    assert [p["port"] for p in https["ports"]] == [8443]  # https: the URL's own port


def test_the_manifests_are_valid_kubernetes_objects() -> None:
    for obj in manifests().values():
        kubernetes_validate.validate(obj, "1.25.0", strict=True)


def test_checkov_passes_the_manifests(tmp_path: Path) -> None:
    require_checkov()
    from scripts.scan import checkov

    (tmp_path / "provision.yaml").write_text(yaml.safe_dump_all(list(manifests().values())))
    result = checkov(CHECKOV, {"provision": tmp_path})["provision"]
    assert result["failed"] == 0, [(c["check_id"], c["resource"]) for c in result["failed_checks"]]
    assert result["passed"] > 50


def test_the_component_registers_each_catalog_s_objects_under_itself_and_the_job_waits_for_them() -> None:
    import pulumi

    from components.catalogs import CatalogProvisioning
    from components.config import parse_stack_config
    from tools.mock_runtime import has_plaintext, run_program

    config = parse_stack_config(
        {**STACK, "storage": {"kind": "pvc", "mountPath": "/data"}, "verify": {"enabled": False}}
    )
    catalogs = {"gaia": S3, "ztf": CatalogConfig(source="https://data.example/hats/ztf")}
    assert config.catalogs == catalogs and config.storage == PVC and config.namespace == "lsdb"

    def program() -> None:
        creds = pulumi.Output.secret({"accessKeyId": "AKIAEXAMPLE", "secretAccessKey": "very-secret"})
        CatalogProvisioning("catalogs", config, IMAGE, None, {"gaia": creds})

    run = run_program({}, program=program)
    [component] = run.of_type("lsdb-k8s:catalogs:CatalogProvisioning")
    children = [r for r in run.resources if r.parent == component.urn]
    kinds = sorted((r.type.split(":")[-1], r.inputs["metadata"]["labels"][CATALOG_LABEL]) for r in children)
    assert kinds == [
        ("ConfigMap", "gaia"), ("ConfigMap", "ztf"), ("Job", "gaia"), ("Job", "ztf"),
        ("NetworkPolicy", "gaia"), ("NetworkPolicy", "ztf"), ("Secret", "gaia"),
    ]  # fmt: skip
    [secret] = run.of_type("kubernetes:core/v1:Secret")
    assert "aws_secret_access_key = very-secret" in secret.inputs["stringData"]["credentials"]
    assert not has_plaintext(secret.raw_inputs, "very-secret")  # a Pulumi secret end to end
    for job in run.of_type("kubernetes:batch/v1:Job"):
        name = job.inputs["metadata"]["labels"][CATALOG_LABEL]
        mine = {r.urn for r in children if r.inputs["metadata"]["labels"][CATALOG_LABEL] == name and r is not job}
        assert mine <= set(job.dependencies)  # the copy starts once its code, credentials and egress exist
        assert job.inputs["spec"] == provision_job_manifest(name, catalogs[name], config, None,
                                                            engine_source(), IMAGE)["spec"]  # fmt: skip


def test_a_gcs_key_is_mounted_as_the_file_gcsfs_reads() -> None:
    gcs = CatalogConfig(source="gs://survey/gaia", credentials={"serviceAccountJson": SECURE})
    job = provision_job_manifest("gaia", gcs, CONFIG, None, engine_source(), IMAGE)
    [container] = job["spec"]["template"]["spec"]["containers"]
    [env] = container["env"]
    mount = next(m for m in container["volumeMounts"] if env["value"].startswith(m["mountPath"] + "/"))
    assert env["name"] == "GOOGLE_APPLICATION_CREDENTIALS" and mount["readOnly"] is True
    volume = next(v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    secret = credentials_secret_manifest("gaia", gcs, "lsdb", {"serviceAccountJson": "{}"})
    assert secret is not None and volume["secret"]["secretName"] == secret["metadata"]["name"]
    assert secret["stringData"] == {env["value"].rsplit("/", 1)[1]: "{}"}
    assert "checkov.io/skip1" not in job["metadata"]["annotations"]  # a file, not an environment variable


# --- in the stack config and the program ---------------------------------------------------------------------

STACK = {
    "namespace": "lsdb",
    "storage": {"kind": "pvc"},
    "image": {"repository": "ghcr.io/acme/lsdb-dask"},
    "catalogs": {
        "gaia": {"source": "s3://survey/gaia", "credentials": {"accessKeyId": SECURE, "secretAccessKey": SECURE}},
        "ztf": {"source": "https://data.example/hats/ztf"},
    },
}


def test_the_first_catalog_is_what_the_verification_reads_unless_verify_catalog_path_is_set() -> None:
    from components.config import parse_stack_config

    config = parse_stack_config({**STACK, "verify": {"enabled": True}})
    assert config.verify.catalog_path == "/data/catalogs/gaia" and list(config.catalogs) == ["gaia", "ztf"]
    given = parse_stack_config({**STACK, "verify": {"enabled": True, "catalogPath": "/data/catalogs/ztf"}})
    assert given.verify.catalog_path == "/data/catalogs/ztf"
    assert parse_stack_config({**STACK, "verify": {"enabled": False}}).verify.catalog_path is None


def test_the_stack_reports_every_provisioning_refusal_at_its_key_with_the_other_problems() -> None:
    from components.config import ConfigError, parse_stack_config

    with pytest.raises(ConfigError) as exc:
        parse_stack_config({
            **STACK,
            "storage": {"kind": "hostPath", "hostPath": {"path": "/cats"}, "accessMode": "ReadOnlyMany"},
            "catalogs": {**STACK["catalogs"], "Bad_Name": {"source": "https://x.example/c"}},
        })  # fmt: skip
    assert [p.split(" = ")[0] for p in exc.value.problems] == ["catalogs.Bad_Name"]  # a section problem first
    with pytest.raises(ConfigError) as exc:
        parse_stack_config({
            **STACK, "storage": {"kind": "hostPath", "hostPath": {"path": "/cats"}, "accessMode": "ReadOnlyMany"}
        })  # fmt: skip
    keys = sorted(p.split(" = ")[0] for p in exc.value.problems)
    assert keys == ["storage.accessMode", "storage.kind"], exc.value.problems
    pinned = {"workers": {"placement": {"nodeSelector": {"kubernetes.io/hostname": "node-1"}}}}
    host = {"kind": "hostPath", "hostPath": {"path": "/cats"}}
    assert parse_stack_config({**STACK, "storage": host, "cluster": pinned}).catalogs
    with pytest.raises(ConfigError, match=r"storage.kind objectStore has none"):
        parse_stack_config({**STACK, "storage": {"kind": "objectStore", "objectStore": {"url": "s3://b/c"}}})


def test_the_program_provisions_before_it_verifies_and_exports_the_paths() -> None:
    from tests.program_helpers import manifest, run_with
    from tools.mock_runtime import has_plaintext

    catalogs = {
        "gaia": {
            "source": "s3://survey/gaia",
            "credentials": {"accessKeyId": "AKIA1", "secretAccessKey": "s3cr3t"},
        },
        "ztf": {"source": "https://data.example/hats/ztf"},
    }
    run = run_with(secret_keys=("catalogs",), catalogs=catalogs, verify={"enabled": True})
    jobs = {r.inputs["metadata"]["labels"][CATALOG_LABEL]: r for r in run.of_type("kubernetes:batch/v1:Job")}
    assert set(jobs) == {"gaia", "ztf"}
    verification = run.one("pulumi-python:dynamic/lsdb:Verification")
    assert verification.inputs["catalogPath"] == "/data/catalogs/gaia"
    assert {j.urn for j in jobs.values()} <= set(verification.dependencies)  # the check reads a complete copy
    assert run.outputs["catalogPaths"] == {"gaia": "/data/catalogs/gaia", "ztf": "/data/catalogs/ztf"}
    pod = manifest(jobs["gaia"])["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == run.outputs["imageRef"]
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "hats-catalog-pvc"
    [secret] = [r for r in run.of_type("kubernetes:core/v1:Secret") if "gaia" in r.inputs["metadata"]["name"]]
    assert "aws_secret_access_key = s3cr3t" in secret.inputs["stringData"]["credentials"]
    assert not has_plaintext(secret.raw_inputs, "s3cr3t")
    policies = [r for r in run.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy") if CATALOG_LABEL in
                r.inputs["metadata"]["labels"]]  # fmt: skip
    assert len(policies) == 2
    assert "catalogPaths" not in run_with().outputs and not run_with().of_type("kubernetes:batch/v1:Job")


SOURCE_BLOCK = "52.216.0.0/15"  # security.egressCidrs: the source bucket's addresses


def stack_with_catalogs() -> tuple[list[dict[str, Any]], Any]:
    """Every object a stack with two catalogs registers (as the API server holds them), and the operator-built ones."""
    from tests.program_helpers import kubernetes_objects, live_objects, run_with
    from tools.operator_objects import operator_objects

    catalogs = {
        "gaia": {"source": "s3://survey/gaia", "credentials": {"accessKeyId": "AKIA1", "secretAccessKey": "s3cr3t"}},
        "ztf": {"source": "https://data.example/hats/ztf"},
    }
    security = {"egressCidrs": [SOURCE_BLOCK], "tls": True}
    run = run_with(secret_keys=("catalogs",), catalogs=catalogs, verify={"enabled": True}, security=security)
    objects = kubernetes_objects(run)
    objects += [o for o in live_objects(run) if o not in objects]
    [dask_cluster] = [o for o in objects if o["kind"] == "DaskCluster"]
    built = operator_objects(dask_cluster, uuids=[f"{i:010x}" for i in range(100)], worker_groups=[])
    for obj in [*built.deployments, built.scheduler_service]:
        obj["metadata"]["namespace"] = dask_cluster["metadata"]["namespace"]
        obj["metadata"].pop("ownerReferences", None)  # uids of objects that exist only in the API server
    return objects, built


def test_the_job_reaches_dns_and_its_source_only_and_nothing_reaches_it() -> None:
    from tests.support.netpol import Cluster, External, Pod, pod_from_template

    objects, built = stack_with_catalogs()
    ns = built.scheduler_deployment["metadata"]["namespace"]
    jobs = {o["metadata"]["labels"][CATALOG_LABEL]: o for o in objects if o["kind"] == "Job"}
    gaia = pod_from_template("gaia-job", ns, jobs["gaia"]["spec"]["template"], "10.0.3.1")
    ztf = pod_from_template("ztf-job", ns, jobs["ztf"]["spec"]["template"], "10.0.3.2")
    scheduler = pod_from_template("scheduler", ns, built.scheduler_deployment["spec"]["template"], "10.0.1.1")
    worker = pod_from_template("worker", ns, built.worker_deployments[0]["spec"]["template"], "10.0.2.1")
    dns = Pod("kube-dns", "kube-system", {"k8s-app": "kube-dns"}, "10.0.9.7")
    bucket, elsewhere = External("s3", "52.217.1.2"), External("internet", "203.0.113.9")
    policies = Cluster([o for o in objects if o["kind"] == "NetworkPolicy"])
    allowed = [(gaia, bucket, 443), (ztf, bucket, 443), (gaia, dns, 53), (ztf, dns, 53)]
    denied = [
        (gaia, elsewhere, 443), (gaia, bucket, 22), (gaia, scheduler, 8786), (gaia, worker, 8788),
        (scheduler, gaia, 8080), (worker, ztf, 8080), (worker, bucket, 443),  # the cluster gains no egress
    ]  # fmt: skip
    assert [(a.name, b.name, p) for a, b, p in allowed if not policies.allowed(a, b, p)] == []
    assert [(a.name, b.name, p) for a, b, p in denied if policies.allowed(a, b, p)] == []


def test_checkov_passes_a_whole_stack_with_catalogs(tmp_path: Path) -> None:
    """As scripts/scan.py scans a stack: every object it registers and those the operator builds, in one run."""
    require_checkov()
    from scripts.scan import checkov

    objects, built = stack_with_catalogs()
    objects += [*built.deployments, built.scheduler_service]
    assert sum(o["kind"] == "Job" for o in objects) == 2
    for i, obj in enumerate(objects):
        (tmp_path / f"{i:02d}-{obj['kind'].lower()}.yaml").write_text(yaml.safe_dump(obj))
    result = checkov(CHECKOV, {"stack": tmp_path})["stack"]
    assert [(c["check_id"], c["resource"]) for c in result["failed_checks"]] == []
    assert result["passed"] > 100  # skips: each annotated with its reason


def test_a_stack_with_catalogs_passes_the_policy_pack(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every guardrail of policy/ (as tests/test_policy.py runs them on the committed stacks) on a stack with
    catalogs: the Jobs, their ConfigMaps, Secrets and NetworkPolicies included."""
    from tests.program_helpers import run_with
    from tests.test_policy import RESOURCE_POLICIES, STACK_POLICIES, stack_violations, violations

    catalogs = {"gaia": {"source": "s3://b/gaia", "credentials": {"accessKeyId": "a", "secretAccessKey": "k"}}}
    run = run_with(secret_keys=("catalogs",), catalogs=catalogs, verify={"enabled": True})
    assert run.of_type("kubernetes:batch/v1:Job")
    monkeypatch.setenv("PULUMI_STACK", "test")
    found = {
        (p.name, r.name): messages
        for r in run.resources
        for p in RESOURCE_POLICIES
        if (messages := violations(p.name, r.type, r.inputs))
    }
    assert found == {}
    everything = [(r.type, r.inputs) for r in run.resources]
    assert [m for p in STACK_POLICIES for m in stack_violations(p.name, everything)] == []
