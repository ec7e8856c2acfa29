"""Where pods find the catalogs (components/storage.py, components/storage_config.py), called directly: the
volumes and claims each `storage.kind` creates, the mounts and environment the fsspec drivers read, the
ServiceAccount a workload identity needs, the storage options hats receives, and the config rules with their
messages. Fast enough for mutation testing (docs/mutation.md); tests/test_storage_access.py, tests/test_config.py
and tests/test_program.py check the same through the whole program."""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pytest
from google.protobuf import empty_pb2, json_format

from components import storage_config
from components.config import ConfigError, StorageConfig, parse_stack_config
from components.constants import PART_OF
from components.object_store_keys import PodStorage
from components.storage import (
    KEY_DIR,
    KEY_VOLUME,
    CatalogStorage,
    object_store_secret_manifest,
    persistent_volume_claim_manifest,
    persistent_volume_manifest,
    pod_storage,
    service_account_manifest,
)
from components.storage_config import url_scheme
from tools.mock_runtime import (
    SECRET_SIG,
    SECRET_VALUE,
    ProgramRun,
    RecordingMonitor,
    has_plaintext,
    run_program,
    unwrap_secrets,
)

ROLE_ARN = "arn:aws:iam::123456789012:role/lsdb-reader"
GSA = "lsdb-reader@my-project.iam.gserviceaccount.com"
CLIENT_ID = "1b2c3d4e-0000-4000-8000-123456789abc"
# provider -> (URL it serves, its key, a valid value, the ServiceAccount annotation its webhook reads, pod labels)
IDENTITIES: dict[str, tuple[str, str, str, str, dict[str, str]]] = {
    "aws": ("s3://bucket/cat", "roleArn", ROLE_ARN, "eks.amazonaws.com/role-arn", {}),
    "gcp": ("gs://bucket/cat", "serviceAccount", GSA, "iam.gke.io/gcp-service-account", {}),
    "azure": ("abfs://c@a.dfs.core.windows.net/x", "clientId", CLIENT_ID, "azure.workload.identity/client-id",
              {"azure.workload.identity/use": "true"}),
}  # fmt: skip
S3_KEYS = {
    "accessKeyId": "AWS_ACCESS_KEY_ID", "secretAccessKey": "AWS_SECRET_ACCESS_KEY", "sessionToken": "AWS_SESSION_TOKEN",
    "region": "AWS_DEFAULT_REGION", "endpointUrl": "AWS_ENDPOINT_URL",
}  # fmt: skip
ABFS_KEYS = {
    "accountName": "AZURE_STORAGE_ACCOUNT_NAME", "accountKey": "AZURE_STORAGE_ACCOUNT_KEY",
    "connectionString": "AZURE_STORAGE_CONNECTION_STRING", "sasToken": "AZURE_STORAGE_SAS_TOKEN",
}  # fmt: skip
PROGRAM_LABELS = {"app.kubernetes.io/part-of": PART_OF, "app.kubernetes.io/component": "catalog-storage"}


def storage(raw: dict[str, Any] | str | None = None) -> StorageConfig:
    """`storage` as the program parses it (secret keys are held by Pulumi: the values are markers)."""
    stack: dict[str, Any] = {"verify": {"enabled": False}, "image": {"repository": "r/x"}}
    if raw is not None:
        stack["storage"] = raw
    return parse_stack_config(stack, frozenset({"storage"})).storage


def object_store(url: str, **keys: Any) -> StorageConfig:
    return storage({"kind": "objectStore", "objectStore": {"url": url, **keys}})


def secrets(*keys: str) -> dict[str, Any]:
    return {k: {"secure": "v1:x"} for k in keys}


def problems(raw: Any) -> list[str]:
    with pytest.raises(ConfigError) as err:
        storage(raw)
    return err.value.problems


def the_problem(raw: Any, key: str) -> str:
    found = [p for p in problems(raw) if p.startswith(key + " = ")]
    assert len(found) == 1, problems(raw)
    return found[0]


def env_by_name(pod: PodStorage) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in pod.env}


# --- volumes and claims -----------------------------------------------------------------------------------------


def test_nfs_is_a_retained_static_volume_only_our_claim_binds() -> None:
    cfg = storage({"kind": "nfs", "nfs": {"server": "nfs.local", "path": "/exports/hats"}, "size": "5Ti",
                   "accessMode": "ReadOnlyMany", "claimName": "hats"})  # fmt: skip
    pv = persistent_volume_manifest(cfg, "astro")
    assert pv is not None
    assert (pv["apiVersion"], pv["kind"]) == ("v1", "PersistentVolume")
    # Cluster-scoped: the namespace is in the name, so two stacks on one cluster do not collide.
    assert pv["metadata"] == {"name": "astro-hats", "labels": pv["metadata"]["labels"]}
    assert pv["metadata"]["labels"].items() >= PROGRAM_LABELS.items()
    assert pv["spec"] == {
        "capacity": {"storage": "5Ti"},
        "accessModes": ["ReadOnlyMany"],
        "persistentVolumeReclaimPolicy": "Retain",  # deleting the stack never deletes the export's data
        "storageClassName": "",
        "claimRef": {"namespace": "astro", "name": "hats"},
        "nfs": {"server": "nfs.local", "path": "/exports/hats"},
        "mountOptions": ["nfsvers=4.1"],
    }
    pvc = persistent_volume_claim_manifest(cfg, "astro")
    assert pvc is not None
    assert (pvc["apiVersion"], pvc["kind"]) == ("v1", "PersistentVolumeClaim")
    assert pvc["metadata"]["name"] == "hats" and pvc["metadata"]["namespace"] == "astro"
    assert pvc["metadata"]["labels"] == pv["metadata"]["labels"]
    # Bound by name to the PV above, never to a dynamically provisioned volume.
    assert pvc["spec"] == {
        "accessModes": ["ReadOnlyMany"],
        "resources": {"requests": {"storage": "5Ti"}},
        "storageClassName": "",
        "volumeName": "astro-hats",
    }


def test_host_path_is_a_static_volume_on_the_nodes_folder() -> None:
    cfg = storage({"kind": "hostPath", "hostPath": {"path": "/lsdb-catalogs"}})
    pv = persistent_volume_manifest(cfg, "lsdb")
    assert pv is not None
    assert pv["spec"]["hostPath"] == {"path": "/lsdb-catalogs", "type": "DirectoryOrCreate"}
    assert "nfs" not in pv["spec"] and "mountOptions" not in pv["spec"]
    assert pv["spec"]["claimRef"] == {"namespace": "lsdb", "name": "hats-catalog-pvc"}
    assert pv["spec"]["capacity"] == {"storage": "100Gi"} and pv["spec"]["accessModes"] == ["ReadWriteMany"]
    pvc = persistent_volume_claim_manifest(cfg, "lsdb")
    assert pvc is not None and pvc["spec"]["volumeName"] == pv["metadata"]["name"] == "lsdb-hats-catalog-pvc"
    assert pvc["spec"]["storageClassName"] == ""


def test_a_pvc_uses_the_named_class_or_the_clusters_default() -> None:
    named = persistent_volume_claim_manifest(storage({"kind": "pvc", "storageClassName": "efs", "size": "1Gi"}), "n")
    assert named is not None
    assert named["spec"] == {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": "1Gi"}},
        "storageClassName": "efs",
    }
    # No key at all: `storageClassName: ""` would turn dynamic provisioning off.
    default = persistent_volume_claim_manifest(storage({"kind": "pvc"}), "n")
    assert default is not None and "storageClassName" not in default["spec"] and "volumeName" not in default["spec"]
    assert persistent_volume_manifest(storage({"kind": "pvc"}), "n") is None


@pytest.mark.parametrize("kind", ["existingClaim", "objectStore", "none"])
def test_kinds_that_create_no_volume_and_no_claim(kind: str) -> None:
    raw: dict[str, Any] = {"kind": kind}
    if kind == "objectStore":
        raw["objectStore"] = {"url": "s3://b/c"}
    cfg = storage(raw)
    assert persistent_volume_manifest(cfg, "n") is None
    assert persistent_volume_claim_manifest(cfg, "n") is None  # existingClaim: the claim is the user's


@pytest.mark.parametrize("kind", ["pvc", "nfs", "hostPath", "existingClaim"])
def test_volume_kinds_mount_the_claim_on_the_workers(kind: str) -> None:
    raw: dict[str, Any] = {"kind": kind, "claimName": "hats", "mountPath": "/catalogs"}
    raw |= {"nfs": {"server": "s", "path": "/e"}} if kind == "nfs" else {}
    raw |= {"hostPath": {"path": "/h"}} if kind == "hostPath" else {}
    pod = pod_storage(storage(raw), "lsdb-x")
    (volume,) = pod.volumes
    assert volume["persistentVolumeClaim"] == {"claimName": "hats"}
    assert pod.mounts == [{"name": volume["name"], "mountPath": "/catalogs"}]
    assert pod.env == [] and pod.service_account is None and pod.pod_labels == {} and pod.pod_annotations == {}


@pytest.mark.parametrize(
    "raw", [None, {"kind": "objectStore", "objectStore": {"url": "s3://b/c"}},
            {"kind": "objectStore", "objectStore": {"url": "https://h/c"}}]
)  # fmt: skip
def test_no_volume_no_credentials_no_identity_changes_nothing_on_the_pods(raw: dict[str, Any] | None) -> None:
    cfg = storage(raw)
    assert pod_storage(cfg, "lsdb-x") == PodStorage()
    assert object_store_secret_manifest(cfg, "n", "lsdb-x", {}) is None
    assert service_account_manifest(cfg, "n", "lsdb-x") is None


# --- object store credentials ----------------------------------------------------------------------------------


def test_s3_credentials_reach_the_pods_as_the_files_botocore_reads() -> None:
    cfg = object_store("s3://b/c", credentials=secrets(*S3_KEYS))
    values = {k: f"value-of-{k}" for k in S3_KEYS}
    secret = object_store_secret_manifest(cfg, "astro", "lsdb-x", values)
    assert secret is not None
    assert (secret["apiVersion"], secret["kind"], secret["type"]) == ("v1", "Secret", "Opaque")
    assert secret["metadata"]["name"] == "lsdb-x-object-store" and secret["metadata"]["namespace"] == "astro"
    assert secret["metadata"]["labels"].items() >= PROGRAM_LABELS.items()
    # botocore's shared credentials and config files (tests/test_object_store_keys.py has botocore read them).
    assert secret["stringData"] == {
        "credentials": "[default]\naws_access_key_id = value-of-accessKeyId\n"
        "aws_secret_access_key = value-of-secretAccessKey\naws_session_token = value-of-sessionToken\n",
        "config": "[default]\nregion = value-of-region\nendpoint_url = value-of-endpointUrl\n",
    }
    pod = pod_storage(cfg, "lsdb-x")
    assert pod.volumes == [{"name": KEY_VOLUME, "secret": {"secretName": "lsdb-x-object-store"}}]
    assert pod.mounts == [{"name": KEY_VOLUME, "mountPath": KEY_DIR, "readOnly": True}]
    assert pod.service_account is None and pod.scanner_skips == ()
    assert env_by_name(pod) == {  # paths only: no secret is an environment variable (CKV_K8S_35)
        "AWS_SHARED_CREDENTIALS_FILE": {"name": "AWS_SHARED_CREDENTIALS_FILE", "value": f"{KEY_DIR}/credentials"},
        "AWS_CONFIG_FILE": {"name": "AWS_CONFIG_FILE", "value": f"{KEY_DIR}/config"},
    }


def test_a_line_break_in_an_s3_key_names_the_key_of_storage() -> None:
    cfg = object_store("s3://b/c", credentials=secrets(*S3_KEYS))
    values = {k: f"value-of-{k}" for k in S3_KEYS} | {"secretAccessKey": "abc\ndef"}
    with pytest.raises(ValueError, match=r"^storage\.objectStore\.credentials\.secretAccessKey holds a line break"):
        object_store_secret_manifest(cfg, "astro", "lsdb-x", values)


def test_abfs_credentials_are_the_variables_adlfs_reads() -> None:
    cfg = object_store("abfs://c@a.dfs.core.windows.net/x", credentials=secrets("accountName", "sasToken"))
    assert set(env_by_name(pod_storage(cfg, "c"))) == {ABFS_KEYS["accountName"], ABFS_KEYS["sasToken"]}
    (skip,) = pod_storage(cfg, "c").scanner_skips  # keys as variables: the pods carry CKV_K8S_35's skip and reason
    assert skip.startswith("CKV_K8S_35=adlfs reads Azure account keys")
    secret = object_store_secret_manifest(cfg, "n", "c", {"accountName": "acct", "sasToken": "sig"})
    assert secret is not None and secret["stringData"] == {
        "AZURE_STORAGE_ACCOUNT_NAME": "acct",
        "AZURE_STORAGE_SAS_TOKEN": "sig",
    }


def test_a_gcs_key_is_a_read_only_file_where_the_variable_points() -> None:
    cfg = object_store("gcs://bucket/cat", credentials=secrets("serviceAccountJson"))
    secret = object_store_secret_manifest(cfg, "n", "lsdb-x", {"serviceAccountJson": '{"type": "service_account"}'})
    assert secret is not None and secret["stringData"] == {"service-account.json": '{"type": "service_account"}'}
    pod = pod_storage(cfg, "lsdb-x")
    (volume,) = pod.volumes
    assert volume["secret"] == {"secretName": "lsdb-x-object-store"}
    assert pod.mounts == [{"name": volume["name"], "mountPath": KEY_DIR, "readOnly": True}]
    assert pod.env == [{"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": KEY_DIR + "/service-account.json"}]
    # The variable names the mounted file the Secret's key becomes.
    path = pod.env[0]["value"]
    assert path == f"{pod.mounts[0]['mountPath']}/{next(iter(secret['stringData']))}"


# --- workload identity -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", sorted(IDENTITIES))
def test_an_identity_is_a_token_less_service_account_the_pods_run_under(provider: str) -> None:
    url, key, value, annotation, labels = IDENTITIES[provider]
    cfg = object_store(url, identity={provider: {key: value}})
    assert cfg.identity == (provider, value)
    account = service_account_manifest(cfg, "astro", "lsdb-x")
    assert account is not None
    assert (account["apiVersion"], account["kind"]) == ("v1", "ServiceAccount")
    # docs/storage.md: the cloud-side binding names `<cluster.name>-catalog-reader` in the namespace.
    assert account["metadata"]["name"] == "lsdb-x-catalog-reader" and account["metadata"]["namespace"] == "astro"
    assert account["metadata"]["annotations"] == {annotation: value}
    assert account["metadata"]["labels"].items() >= PROGRAM_LABELS.items()
    assert account["automountServiceAccountToken"] is False
    pod = pod_storage(cfg, "lsdb-x")
    assert pod.service_account == "lsdb-x-catalog-reader"
    assert pod.pod_labels == labels
    assert pod.pod_annotations == {"lsdb-k8s/workload-identity": f"{provider}:{value}"}
    assert pod.volumes == pod.mounts == pod.env == []
    assert object_store_secret_manifest(cfg, "astro", "lsdb-x", {}) is None


def test_a_new_identity_changes_the_pods() -> None:
    first = pod_storage(object_store("s3://b/c", identity={"aws": {"roleArn": ROLE_ARN}}), "c")
    other = pod_storage(object_store("s3://b/c", identity={"aws": {"roleArn": ROLE_ARN + "-2"}}), "c")
    assert first.pod_annotations != other.pod_annotations


# --- the component ----------------------------------------------------------------------------------------------


def run_storage(
    cfg: StorageConfig, credentials: dict[str, str] | None = None
) -> tuple[ProgramRun, CatalogStorage, dict[str, Any]]:
    """CatalogStorage alone under the mocks, waiting for a namespace; also its registered outputs (the state's)."""
    made: list[CatalogStorage] = []
    outputs: dict[str, Any] = {}

    def program() -> None:
        wait = pulumi.CustomResource("test:index:Namespace", "ns")
        given = pulumi.Output.secret(credentials) if credentials is not None else None
        made.append(CatalogStorage("st", cfg, "astro", "lsdb-x", given, pulumi.ResourceOptions(depends_on=[wait])))

    def register_outputs(monitor: RecordingMonitor, request: Any) -> Any:
        if request.urn.endswith("::st"):
            outputs.update(json_format.MessageToDict(request.outputs))
        return empty_pb2.Empty()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RecordingMonitor, "RegisterResourceOutputs", register_outputs, raising=False)
        run = run_program({}, program=program)
    return run, made[0], outputs


def test_the_component_registers_the_pure_manifests_under_itself_after_what_it_waits_for() -> None:
    cfg = storage({"kind": "nfs", "nfs": {"server": "s", "path": "/e"}})
    run, component, outputs = run_storage(cfg)
    me, wait = run.one("lsdb-k8s:storage:CatalogStorage"), run.named("ns")
    assert wait.urn in me.dependencies  # the component's own options are kept
    assert outputs == {"claimName": "hats-catalog-pvc", "mountPath": "/data"}
    pv, pvc = run.named("st-pv"), run.named("st-pvc")
    expected_pv, expected_pvc = persistent_volume_manifest(cfg, "astro"), persistent_volume_claim_manifest(cfg, "astro")
    assert expected_pv is not None and expected_pvc is not None
    assert (pv.type, pvc.type) == ("kubernetes:core/v1:PersistentVolume", "kubernetes:core/v1:PersistentVolumeClaim")
    assert {k: pv.inputs[k] for k in ("metadata", "spec")} == {k: expected_pv[k] for k in ("metadata", "spec")}
    assert {k: pvc.inputs[k] for k in ("metadata", "spec")} == {k: expected_pvc[k] for k in ("metadata", "spec")}
    assert pv.parent == pvc.parent == me.urn
    assert wait.urn in pv.dependencies
    assert set(pvc.dependencies) >= {wait.urn, pv.urn}  # the claim binds to the volume: created after it
    assert component.pod_storage == pod_storage(cfg, "lsdb-x")
    assert component.volume is not None and component.claim is not None
    assert component.secret is None and component.service_account is None
    assert run.of_type("kubernetes:core/v1:Secret") == [] and run.of_type("kubernetes:core/v1:ServiceAccount") == []


def test_the_component_keeps_credentials_secret() -> None:
    cfg = object_store("s3://b/c", credentials=secrets("accessKeyId", "secretAccessKey"))
    run, component, outputs = run_storage(cfg, {"accessKeyId": "AKIA", "secretAccessKey": "shh"})
    assert outputs == {}  # no claim, nothing mounted (None values are left out of the state)
    secret, me = run.one("kubernetes:core/v1:Secret"), run.one("lsdb-k8s:storage:CatalogStorage")
    assert secret.name == "st-object-store" and secret.parent == me.urn and run.named("ns").urn in secret.dependencies
    assert secret.inputs["metadata"] == {
        "name": "lsdb-x-object-store", "namespace": "astro", "labels": secret.inputs["metadata"]["labels"]
    }  # fmt: skip
    assert secret.inputs["type"] == "Opaque"
    assert secret.raw_inputs["stringData"][SECRET_SIG] == SECRET_VALUE  # the whole map is a Pulumi secret
    assert not has_plaintext(secret.raw_inputs, "AKIA") and not has_plaintext(secret.raw_inputs, "shh")
    data = unwrap_secrets(secret.raw_inputs["stringData"])
    assert data == {"credentials": "[default]\naws_access_key_id = AKIA\naws_secret_access_key = shh\n"}
    assert component.secret is not None and component.claim is None and component.volume is None
    assert run.of_type("kubernetes:core/v1:PersistentVolumeClaim") == []


def test_the_component_creates_the_identitys_service_account() -> None:
    cfg = object_store("s3://b/c", identity={"aws": {"roleArn": ROLE_ARN}})
    run, component, _ = run_storage(cfg)
    assert component.pod_storage.service_account == "lsdb-x-catalog-reader"  # the account the component creates
    account, me = run.one("kubernetes:core/v1:ServiceAccount"), run.one("lsdb-k8s:storage:CatalogStorage")
    expected = service_account_manifest(cfg, "astro", "lsdb-x")
    assert expected is not None and account.inputs["metadata"] == expected["metadata"]
    assert account.inputs["automountServiceAccountToken"] is False
    assert account.name == "st-service-account" and account.parent == me.urn
    assert run.named("ns").urn in account.dependencies
    assert component.service_account is not None and component.secret is None


def test_the_component_without_credentials_values_makes_no_secret() -> None:
    run, component, _ = run_storage(object_store("s3://b/c", credentials=secrets("accessKeyId")))
    assert run.of_type("kubernetes:core/v1:Secret") == [] and component.secret is None


# --- config rules -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "scheme"),
    [("s3://b/c", "s3"), ("S3A://b/c", "s3"), ("gcs://b", "gs"), ("gs://b", "gs"), ("abfss://c@a/x", "abfs"),
     ("az://c/x", "abfs"), ("http://h/x", "https"), ("ftp://h/x://y", "ftp"), ("/data/x", None), ("s3:/b", None)],
)  # fmt: skip
def test_url_scheme(url: str, scheme: str | None) -> None:
    assert url_scheme(url) == scheme


def test_kinds_mount_and_create_what_the_docs_say() -> None:
    table = {
        "pvc": (True, True), "nfs": (True, True), "hostPath": (True, True), "existingClaim": (True, False),
        "objectStore": (False, False), "none": (False, False),
    }  # fmt: skip
    for kind, (mounts, creates) in table.items():
        raw: dict[str, Any] = {"kind": kind, "nfs": {"server": "s", "path": "/e"}, "hostPath": {"path": "/h"},
                               "objectStore": {"url": "s3://b/c"}}  # fmt: skip
        cfg = storage({k: v for k, v in raw.items() if k == "kind" or k == kind})
        assert (cfg.mounts_volume, cfg.creates_claim) == (mounts, creates), kind
        if kind != "objectStore":
            assert cfg.object_store_scheme is None and cfg.credential_keys == () and cfg.credential_env == {}
            assert cfg.identity is None and cfg.catalog_storage_options == {}


def test_no_storage_section_and_a_json_string_both_parse() -> None:
    assert storage().kind == "none" and storage({}).kind == "none"
    assert storage({"mountPath": "/x"}).kind == "none"
    cfg = storage(json.dumps({"kind": "objectStore", "objectStore": {"url": "gs://b"}}))
    assert cfg.object_store_scheme == "gs"
    for raw in ("pvc", 5, ["pvc"]):
        assert the_problem(raw, "storage").endswith(
            ": must be an object. Fix: set its fields with `pulumi config set --path storage.<field>`"
        )


@pytest.mark.parametrize(
    ("url", "anonymous", "options"),
    [("s3://b/c", False, {"anon": False}), ("s3a://b/c", True, {"anon": True}),
     ("abfs://c@a/x", False, {"anon": False}), ("az://c/x", True, {"anon": True}),
     ("gs://b", False, {"token": "google_default"}), ("gcs://b", True, {"token": "anon"}),
     ("https://h/x", False, {}), ("http://h/x", True, {})],
)  # fmt: skip
def test_the_storage_options_hats_receives(url: str, anonymous: bool, options: dict[str, Any]) -> None:
    # hats opens s3:// anonymously unless told `anon=False`: a private bucket needs it said.
    assert object_store(url, anonymous=anonymous).catalog_storage_options == options


def test_credential_keys_and_variables_follow_the_urls_scheme() -> None:
    cfg = object_store("s3a://b/c", credentials=secrets("region", "endpointUrl"))
    assert cfg.object_store_scheme == "s3" and cfg.credential_keys == ("region", "endpointUrl")
    # s3fs (botocore) reads AWS_DEFAULT_REGION, not AWS_REGION alone.
    assert cfg.credential_env == {"region": "AWS_DEFAULT_REGION", "endpointUrl": "AWS_ENDPOINT_URL"}
    assert object_store("s3://b/c").identity is None


def test_credentials_as_text_are_never_shown() -> None:
    problem = the_problem(
        {"kind": "objectStore", "objectStore": {"url": "s3://b/c", "credentials": "AKIA-as-a-string"}},
        "storage.objectStore.credentials",
    )
    assert "AKIA" not in problem and problem.startswith("storage.objectStore.credentials = '[secret]': ")
    as_json = object_store("s3://b/c", credentials=json.dumps(secrets("accessKeyId")))
    assert as_json.credential_keys == ("accessKeyId",)


def test_a_credential_of_another_store_names_the_keys_of_this_one() -> None:
    problem = the_problem(
        {"kind": "objectStore", "objectStore": {"url": "gs://b", "credentials": secrets("accessKeyId")}},
        "storage.objectStore.credentials.accessKeyId",
    )
    assert problem == (
        "storage.objectStore.credentials.accessKeyId = '[secret]': is not a credential for gs:// storage. "
        "Fix: use: serviceAccountJson"
    )
    public = the_problem(
        {"kind": "objectStore", "objectStore": {"url": "https://h/x", "credentials": secrets("accountKey")}},
        "storage.objectStore.credentials.accountKey",
    )
    assert public.endswith(
        "is not a credential for https:// storage. Fix: use: none (public https needs no credentials)"
    )
    s3 = the_problem(
        {"kind": "objectStore", "objectStore": {"url": "s3://b", "credentials": secrets("accountKey")}},
        "storage.objectStore.credentials.accountKey",
    )
    assert s3.endswith("Fix: use: " + ", ".join(S3_KEYS))


def test_one_way_in_every_conflict_reported_at_once() -> None:
    found = problems(
        {"kind": "objectStore", "objectStore": {
            "url": "s3://b/c", "anonymous": True, "credentials": secrets("accessKeyId"),
            "identity": {"aws": {"roleArn": ROLE_ARN}, "gcp": {"serviceAccount": GSA}},
        }}
    )  # fmt: skip
    assert found == [
        'storage.objectStore.identity = ["aws", "gcp"]: names more than one cloud. '
        "Fix: keep the one that serves storage.objectStore.url",
        'storage.objectStore.identity = ["aws", "gcp"]: is set together with objectStore.credentials. '
        "Fix: use one: remove the static keys (`pulumi config rm --path storage.objectStore.credentials`) or the "
        "identity",
        "storage.objectStore.anonymous = true: is set together with credentials or an identity. "
        "Fix: remove objectStore.anonymous for a private bucket, or the credentials/identity for a public one",
        f"storage.objectStore.identity.gcp.serviceAccount = '{GSA}': is a gcp identity, but "
        "storage.objectStore.url is s3://. Fix: use the identity of the cloud serving s3:// (aws for s3://, "
        "gcp for gs://, azure for abfs://)",
    ]


@pytest.mark.parametrize(
    "way_in", [{"credentials": secrets("accessKeyId")}, {"identity": {"aws": {"roleArn": ROLE_ARN}}}, {}]
)
def test_anonymous_needs_no_other_way_in(way_in: dict[str, Any]) -> None:
    raw = {"kind": "objectStore", "objectStore": {"url": "s3://b/c", "anonymous": True, **way_in}}
    if way_in:
        assert the_problem(raw, "storage.objectStore.anonymous")
    else:
        assert storage(raw).catalog_storage_options == {"anon": True}
    # Without anonymous, each way in alone is accepted.
    assert storage({"kind": "objectStore", "objectStore": {"url": "s3://b/c", **way_in}}).kind == "objectStore"


@pytest.mark.parametrize("provider", sorted(IDENTITIES))
def test_an_identity_serves_only_its_clouds_urls(provider: str) -> None:
    url, key, value, *_ = IDENTITIES[provider]
    assert object_store(url, identity={provider: {key: value}}).identity == (provider, value)
    for other, (other_url, *_rest) in IDENTITIES.items():
        if other != provider:
            problem = the_problem(
                {"kind": "objectStore", "objectStore": {"url": other_url, "identity": {provider: {key: value}}}},
                f"storage.objectStore.identity.{provider}.{key}",
            )
            assert f"is a {provider} identity, but storage.objectStore.url is {url_scheme(other_url)}://" in problem


@pytest.mark.parametrize(
    ("provider", "bad", "what", "example"),
    [
        ("aws", "arn:aws:iam::12345678901:role/x", "an IAM role ARN", "arn:aws:iam::123456789012:role/lsdb-reader"),
        ("aws", "xarn:aws:iam::123456789012:role/x", "an IAM role ARN", "arn:aws:iam::123456789012:role/lsdb-reader"),
        ("aws", ROLE_ARN + " ", "an IAM role ARN", "arn:aws:iam::123456789012:role/lsdb-reader"),
        ("gcp", "Lsdb@p.iam.gserviceaccount.com", "a Google service account",
         "lsdb-reader@my-project.iam.gserviceaccount.com"),
        ("gcp", "lsdb-reader@my-project.iam.gserviceaccount.com.evil", "a Google service account",
         "lsdb-reader@my-project.iam.gserviceaccount.com"),
        ("azure", CLIENT_ID + "0", "a client ID (GUID)", "00000000-0000-0000-0000-000000000000"),
        ("azure", "x" + CLIENT_ID[1:], "a client ID (GUID)", "00000000-0000-0000-0000-000000000000"),
    ],
)  # fmt: skip
def test_a_malformed_identity_names_the_form_it_needs(provider: str, bad: str, what: str, example: str) -> None:
    url, key, *_ = IDENTITIES[provider]
    problem = the_problem(
        {"kind": "objectStore", "objectStore": {"url": url, "identity": {provider: {key: bad}}}},
        f"storage.objectStore.identity.{provider}.{key}",
    )
    assert problem == f"storage.objectStore.identity.{provider}.{key} = {bad!r}: is not {what}. Fix: use e.g. {example}"


@pytest.mark.parametrize(
    ("provider", "value"),
    [("aws", "arn:aws-us-gov:iam::123456789012:role/path/to/r+=,.@_-"), ("gcp", "abcdef@p-1.iam.gserviceaccount.com"),
     ("azure", CLIENT_ID.upper())],
)  # fmt: skip
def test_identity_forms_the_clouds_issue_are_accepted(provider: str, value: str) -> None:
    url, key, *_ = IDENTITIES[provider]
    assert object_store(url, identity={provider: {key: value}}).identity == (provider, value)


def test_an_object_store_url_needs_a_known_scheme() -> None:
    problem = the_problem({"kind": "objectStore", "objectStore": {"url": "ftp://h/c"}}, "storage.objectStore.url")
    assert problem == (
        "storage.objectStore.url = 'ftp://h/c': has no URL scheme with an fsspec driver in the lock. Fix: use a URL "
        "starting with one of: abfs://, abfss://, az://, gcs://, gs://, http://, https://, s3://, s3a://"
    )
    assert the_problem({"kind": "objectStore", "objectStore": {"url": "/data/c"}}, "storage.objectStore.url")


def test_an_object_store_url_needs_its_driver_in_the_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage_config, "read_lock", lambda: {"s3fs": "2024.1.0"})
    assert object_store("s3://b/c").object_store_scheme == "s3"
    problem = the_problem({"kind": "objectStore", "objectStore": {"url": "gs://b/c"}}, "storage.objectStore.url")
    assert problem == (
        "storage.objectStore.url = 'gs://b/c': needs the fsspec driver 'gcsfs', which is not in the lock. "
        "Fix: add gcsfs to docker/requirements.in and run `python -m tools.relock`"
    )
