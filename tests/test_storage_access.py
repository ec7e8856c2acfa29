"""How pods reach the catalog storage: credentials, keyless workload identity, anonymous access, storage options.

Config rules (one way in, the identity's cloud serves the URL, catalog URLs match the object store), the objects
the program emits for each identity provider (ServiceAccount annotation, pods under it, Azure's pod label, as the
operator copies them onto the pods), and the storage options handed to the verification and exported.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema
import pytest

from components.config import ConfigError, parse_stack_config
from components.lock import PROJECT_DIR
from components.verification.query import parse_storage_options
from components.verification.resource import child_argv
from tests.program_helpers import dask_cluster, run_with
from tools.operator_objects import operator_objects

SERVICE_ACCOUNT = "kubernetes:core/v1:ServiceAccount"
SECRET = "kubernetes:core/v1:Secret"
VERIFICATION = "pulumi-python:dynamic/lsdb:Verification"
ROLE_ARN = "arn:aws:iam::123456789012:role/lsdb-reader"
GSA = "lsdb-reader@my-project.iam.gserviceaccount.com"
CLIENT_ID = "1b2c3d4e-0000-4000-8000-123456789abc"
IDENTITIES = {
    "aws": ("s3://bucket/catalogs", {"roleArn": ROLE_ARN}, "eks.amazonaws.com/role-arn", ROLE_ARN),
    "gcp": ("gs://bucket/catalogs", {"serviceAccount": GSA}, "iam.gke.io/gcp-service-account", GSA),
    "azure": ("abfs://c@a.dfs.core.windows.net/x", {"clientId": CLIENT_ID}, "azure.workload.identity/client-id",
              CLIENT_ID),
}  # fmt: skip

BASE: dict[str, Any] = {
    "namespace": "lsdb-test",
    "cluster": {"name": "lsdb-cluster"},
    "image": {"repository": "ghcr.io/acme/lsdb-dask"},
    "storage": {"kind": "objectStore", "objectStore": {"url": "s3://bucket/catalogs"}},
    "verify": {"catalogPath": "s3://bucket/catalogs/sample"},
}


def config(**sections: Any) -> dict[str, Any]:
    return {**copy.deepcopy(BASE), **sections}


def object_store(url: str, **keys: Any) -> dict[str, Any]:
    return {"kind": "objectStore", "objectStore": {"url": url, **keys}}


def problems(raw: dict[str, Any], secret_keys: frozenset[str] = frozenset({"storage"})) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_stack_config(raw, secret_keys)
    return err.value.problems


SECRET_KEYS = {"accessKeyId": {"secure": "v1:x"}, "secretAccessKey": {"secure": "v1:y"}}


# --- config --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", list(IDENTITIES))
def test_each_identity_parses(provider: str) -> None:
    url, given, _annotation, value = IDENTITIES[provider]
    cfg = parse_stack_config(config(storage=object_store(url, identity={provider: given}), verify={"enabled": False}))
    assert cfg.storage.identity == (provider, value)


REJECTIONS = [
    (
        "identity and credentials together",
        object_store("s3://b/c", identity={"aws": {"roleArn": ROLE_ARN}}, credentials=SECRET_KEYS),
        "storage.objectStore.identity",
        "is set together with objectStore.credentials",
    ),
    (
        "two clouds",
        object_store("s3://b/c", identity={"aws": {"roleArn": ROLE_ARN}, "gcp": {"serviceAccount": GSA}}),
        "storage.objectStore.identity",
        "names more than one cloud",
    ),
    (
        "identity of another cloud than the URL",
        object_store("s3://b/c", identity={"gcp": {"serviceAccount": GSA}}),
        "storage.objectStore.identity.gcp.serviceAccount",
        "is a gcp identity, but storage.objectStore.url is s3://",
    ),
    (
        "anonymous with credentials",
        object_store("s3://b/c", anonymous=True, credentials=SECRET_KEYS),
        "storage.objectStore.anonymous",
        "is set together with credentials or an identity",
    ),
    (
        "role ARN malformed",
        object_store("s3://b/c", identity={"aws": {"roleArn": "lsdb-reader"}}),
        "storage.objectStore.identity.aws.roleArn",
        "is not an IAM role ARN",
    ),
    (
        "client id not a GUID",
        object_store("abfs://c@a.dfs.core.windows.net/x", identity={"azure": {"clientId": "me"}}),
        "storage.objectStore.identity.azure.clientId",
        "is not a client ID",
    ),
    (
        "unknown identity key",
        object_store("s3://b/c", identity={"aws": {"role": ROLE_ARN}}),
        "storage.objectStore.identity.aws.role",
        "is not a known key",
    ),
    (
        "identity without object store",
        {"kind": "pvc", "objectStore": {"identity": {"aws": {"roleArn": ROLE_ARN}}}},
        "storage.objectStore.identity",
        "is set but storage.kind is pvc",
    ),
]


@pytest.mark.parametrize(("storage", "key", "what"), [r[1:] for r in REJECTIONS], ids=[r[0] for r in REJECTIONS])
def test_storage_access_rejections_name_key_and_fix(storage: dict[str, Any], key: str, what: str) -> None:
    found = [p for p in problems(config(storage=storage, verify={"enabled": False})) if p.startswith(f"{key} = ")]
    assert found, f"no problem reported for {key}"
    assert what in found[0] and ". Fix: " in found[0], found[0]


@pytest.mark.parametrize(
    ("storage", "catalog", "what"),
    [
        (object_store("s3://b/c"), "gs://b/c/sample", "is a gs:// URL but storage.objectStore.url is s3://"),
        ({"kind": "pvc"}, "s3://b/c/sample", "is a s3:// URL but storage.kind is pvc"),
        (object_store("s3://b/c"), "/data/sample", "is a local path, but storage.kind objectStore mounts no volume"),
    ],
)
def test_catalog_url_must_match_the_object_store(storage: dict[str, Any], catalog: str, what: str) -> None:
    (problem,) = [p for p in problems(config(storage=storage, verify={"catalogPath": catalog}))]
    assert problem.startswith(f"verify.catalogPath = {catalog!r}: {what}. Fix: "), problem


@pytest.mark.parametrize(
    ("url", "catalog"),
    [("s3a://b/c", "s3://b/c/x"), ("https://data.lsdb.io/hats", "http://localhost:8000/x"), ("gs://b", "gcs://b/x")],
)
def test_catalog_url_scheme_aliases_agree(url: str, catalog: str) -> None:
    cfg = parse_stack_config(config(storage=object_store(url), verify={"catalogPath": catalog}))
    assert cfg.verify.catalog_path == catalog


def test_identity_keys_are_in_the_stack_file_schema() -> None:
    schema = json.loads((PROJECT_DIR / "schema" / "pulumi-stack.schema.json").read_text())
    ok = {"config": {"lsdb-k8s:storage": object_store("s3://b/c", identity={"aws": {"roleArn": ROLE_ARN}})}}
    jsonschema.validate(ok, schema)
    typo = {"config": {"lsdb-k8s:storage": object_store("s3://b/c", identity={"aws": {"arn": ROLE_ARN}})}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(typo, schema)


# --- objects: the ServiceAccount and the pods under it ------------------------------------------------------------


@pytest.mark.parametrize("provider", list(IDENTITIES))
def test_identity_creates_the_annotated_service_account_and_runs_the_pods_under_it(provider: str) -> None:
    url, given, annotation, value = IDENTITIES[provider]
    run = run_with(storage=object_store(url, identity={provider: given}))
    account = run.one(SERVICE_ACCOUNT).inputs
    assert account["metadata"]["annotations"] == {annotation: value}
    assert account["metadata"]["namespace"] == "lsdb-test"
    assert account["automountServiceAccountToken"] is False  # the identity brings its own token (see storage.py)
    # No object-store key Secret (the TLS Secret of security.tls is another matter).
    assert [r for r in run.of_type(SECRET) if "CatalogStorage" in r.urn] == [], "no static keys with an identity"
    manifest = dask_cluster(run)
    objects = operator_objects(manifest, namespace="lsdb-test")
    for deployment in objects.deployments:  # what the operator creates: scheduler and every worker
        pod = deployment["spec"]["template"]
        assert pod["spec"]["serviceAccountName"] == account["metadata"]["name"]
        if provider == "azure":  # the webhook mutates only pods labelled so
            assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true"
        else:
            assert "azure.workload.identity/use" not in pod["metadata"]["labels"]
    # The DaskCluster waits for the ServiceAccount (pods of a missing one are refused) and goes before it on destroy.
    assert run.one(SERVICE_ACCOUNT).urn in run.one("kubernetes:kubernetes.dask.org/v1:DaskCluster").dependencies
    assert run.one(SERVICE_ACCOUNT).parent.endswith("CatalogStorage::catalog-storage")


def test_a_changed_identity_changes_the_cluster_spec() -> None:
    """Webhooks inject the identity at pod creation: a new role must give new pods, i.e. a new cluster spec hash."""

    def spec_for(role: str) -> Any:
        run = run_with(storage=object_store("s3://b/c", identity={"aws": {"roleArn": role}}))
        return dask_cluster(run)["spec"]

    assert spec_for(ROLE_ARN) != spec_for(ROLE_ARN.replace("lsdb-reader", "lsdb-reader-2"))


def test_no_identity_no_service_account() -> None:
    run = run_with(storage={"kind": "pvc"}, verify={"catalogPath": "/data/x"})
    assert run.of_type(SERVICE_ACCOUNT) == []
    assert "serviceAccountName" not in dask_cluster(run)["spec"]["worker"]["spec"]


# --- storage options: exported, and handed to the verification ------------------------------------------------


@pytest.mark.parametrize(
    ("storage", "secret_keys", "options"),
    [
        (object_store("s3://b/c", credentials={"accessKeyId": "a"}), ("storage",), {"anon": False}),
        (object_store("s3://b/c", identity={"aws": {"roleArn": ROLE_ARN}}), (), {"anon": False}),
        (object_store("s3://b/c", anonymous=True), (), {"anon": True}),
        (object_store("s3://b/c"), (), {"anon": False}),  # the node's own role: never hats' anonymous default
        (object_store("gs://b/c", anonymous=True), (), {"token": "anon"}),
        (object_store("gs://b/c", identity={"gcp": {"serviceAccount": GSA}}), (), {"token": "google_default"}),
        (object_store("https://data.example.org/hats"), (), {}),
        ({"kind": "pvc"}, (), {}),
    ],
)  # fmt: skip
def test_storage_options_are_exported_and_given_to_the_verification(
    storage: dict[str, Any], secret_keys: tuple[str, ...], options: dict[str, Any]
) -> None:
    url = storage.get("objectStore", {}).get("url")
    catalog = f"{url.replace('s3a', 's3')}/sample" if url else "/data/sample"
    run = run_with(secret_keys, storage=storage, verify={"catalogPath": catalog})
    assert run.outputs["catalogStorageOptions"] == options
    assert run.one(VERIFICATION).inputs["storageOptions"] == options


def test_storage_options_reach_the_command_line_and_back() -> None:
    inputs = {
        "catalogPath": "s3://b/c", "ra": 1, "dec": 2, "radiusArcsec": 3, "connect": "direct",
        "schedulerAddress": "tcp://s:8786", "storageOptions": {"anon": False, "client_kwargs": {"region_name": "x"}},
    }  # fmt: skip
    argv = child_argv(inputs)
    query = json.loads(argv[argv.index("--query") + 1])  # the child gets the query as one JSON document
    assert query["storageOptions"] == inputs["storageOptions"]
    flags = ["anon=false", 'client_kwargs={"region_name": "x"}']  # what a user types: the same options
    assert parse_storage_options(flags) == inputs["storageOptions"]


def test_storage_option_values_are_json_where_they_parse() -> None:
    assert parse_storage_options(["anon=false", "n=3", "endpoint_url=http://h:9000", "s=", "k=a=b"]) == {
        "anon": False,
        "n": 3,
        "endpoint_url": "http://h:9000",
        "s": "",
        "k": "a=b",
    }
    with pytest.raises(ValueError, match="not KEY=VALUE"):
        parse_storage_options(["anon"])


def test_verification_cli_takes_storage_options() -> None:
    from components.verification.cli import parser

    args = parser().parse_args(
        ["--catalog", "s3://b/c", "--ra", "1", "--dec", "2", "--radius-arcsec", "3", "--storage-option", "anon=false"]
    )
    assert parse_storage_options(args.storage_option) == {"anon": False}
