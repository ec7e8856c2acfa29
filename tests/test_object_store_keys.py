"""Object-store credentials as files (components/object_store_keys.py): what the drivers themselves read from them.

botocore (s3fs's credential and config chain, the lock's version) is asked for the credentials, region and
endpoint it resolves from the rendered files alone; tests/test_e2e_object_store.py and tests/test_provision.py run
the rendered pods and Job against moto with signatures checked.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.object_store_keys import ENV_SKIP, PodStorage, key_wiring, secret_data
from components.storage_config import OBJECT_STORES
from tests.support.checkov import CHECKOV, require_checkov

KEY_DIR = "/var/run/secrets/test-keys"
S3_KEYS = {
    "accessKeyId": "AKIAEXAMPLE",
    "secretAccessKey": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    "sessionToken": "FwoGZXIvYXdzEJr//////////wEaDEXAMPLE=",
    "region": "eu-west-3",
    "endpointUrl": "http://127.0.0.1:9000",
}


def env_of(keys: Mapping[str, str], scheme: str) -> dict[str, str]:
    """Credential key -> the driver's variable, as the config model gives it (`credential_env`)."""
    return {k: OBJECT_STORES[scheme][1][k] for k in keys}


def as_pod(wiring: PodStorage, data: Mapping[str, str], root: Path) -> dict[str, str]:
    """The Secret's keys as files at the mount (as the kubelet projects them) and the container's plain env,
    with the mount path mapped to `root`."""
    [mount] = wiring.mounts
    assert mount["readOnly"] is True and mount["mountPath"] == KEY_DIR
    assert [v["secret"]["secretName"] for v in wiring.volumes] == ["keys"]
    root.mkdir()
    for name, text in data.items():
        (root / name).write_text(text)
    return {e["name"]: e["value"].replace(KEY_DIR, str(root)) for e in wiring.env}


@pytest.fixture
def clean_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    import os

    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.aws of this machine
    yield monkeypatch


def botocore_view(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    import botocore.session

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    session = botocore.session.Session()
    credentials = session.get_credentials()
    client = session.create_client("s3")
    return {
        "accessKeyId": credentials.access_key if credentials else None,
        "secretAccessKey": credentials.secret_key if credentials else None,
        "sessionToken": credentials.token if credentials else None,
        "region": client.meta.region_name,
        "endpointUrl": client.meta.endpoint_url,
    }


def test_s3_keys_are_files_botocore_reads_and_no_secret_is_an_environment_variable(
    clean_aws_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    wiring = key_wiring(env_of(S3_KEYS, "s3"), "keys", "key-volume", KEY_DIR)
    data = secret_data(env_of(S3_KEYS, "s3"), S3_KEYS, "storage.objectStore.credentials")
    assert sorted(data) == ["config", "credentials"]
    assert all("valueFrom" not in e for e in wiring.env) and wiring.scanner_skips == ()
    env = as_pod(wiring, data, tmp_path / "keys")
    assert set(env) == {"AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"}
    assert botocore_view(env, clean_aws_env) == S3_KEYS


def test_s3_endpoint_and_region_alone_are_the_config_file(clean_aws_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    keys = {"region": "us-west-2", "endpointUrl": "https://minio.example:9000"}
    wiring = key_wiring(env_of(keys, "s3"), "keys", "key-volume", KEY_DIR)
    data = secret_data(env_of(keys, "s3"), keys, "storage.objectStore.credentials")
    assert list(data) == ["config"]
    env = as_pod(wiring, data, tmp_path / "keys")
    assert list(env) == ["AWS_CONFIG_FILE"]
    view = botocore_view(env, clean_aws_env)
    assert (view["region"], view["endpointUrl"]) == (keys["region"], keys["endpointUrl"])


def test_the_pod_spec_does_not_depend_on_the_order_of_the_keys() -> None:
    # A reordered `credentials` object must not change the pods (`<h>`: a new cluster) nor the files.
    reordered = dict(reversed(S3_KEYS.items()))
    wiring = key_wiring(env_of(S3_KEYS, "s3"), "s", "v", KEY_DIR)
    assert key_wiring(env_of(reordered, "s3"), "s", "v", KEY_DIR) == wiring
    assert secret_data(env_of(reordered, "s3"), reordered, "x") == secret_data(env_of(S3_KEYS, "s3"), S3_KEYS, "x")


def test_an_s3_value_is_one_line(clean_aws_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    keys = {"accessKeyId": "AKIAEXAMPLE\n", "secretAccessKey": "  s3cr3t  "}  # a trailing newline, stray blanks
    data = secret_data(env_of(keys, "s3"), keys, "catalogs.gaia.credentials")
    env = as_pod(key_wiring(env_of(keys, "s3"), "keys", "v", KEY_DIR), data, tmp_path / "keys")
    view = botocore_view(env, clean_aws_env)
    assert (view["accessKeyId"], view["secretAccessKey"]) == ("AKIAEXAMPLE", "s3cr3t")
    injected = {"accessKeyId": "AKIA\ncredential_process = /bin/sh -c evil", "secretAccessKey": "s"}
    with pytest.raises(ValueError) as exc:
        secret_data(env_of(injected, "s3"), injected, "catalogs.gaia.credentials")
    message = str(exc.value)
    assert "catalogs.gaia.credentials.accessKeyId holds a line break" in message
    assert "pulumi config set --path --secret catalogs.gaia.credentials.accessKeyId" in message
    assert "evil" not in message  # the value is never shown
    carriage = {"accessKeyId": "AKIA\rcredential_process = evil", "secretAccessKey": "s"}  # a lone CR splits too
    with pytest.raises(ValueError, match="accessKeyId holds a line break"):
        secret_data(env_of(carriage, "s3"), carriage, "storage.objectStore.credentials")


def test_the_gcs_key_is_the_file_google_auth_reads(tmp_path: Path) -> None:
    key = json.dumps({"type": "service_account", "client_email": "reader@p.iam.gserviceaccount.com"})
    credential_env = env_of({"serviceAccountJson": key}, "gs")
    wiring = key_wiring(credential_env, "keys", "key-volume", KEY_DIR)
    data = secret_data(credential_env, {"serviceAccountJson": key}, "x")
    env = as_pod(wiring, data, tmp_path / "keys")
    assert list(env) == ["GOOGLE_APPLICATION_CREDENTIALS"] and wiring.scanner_skips == ()
    assert json.loads(Path(env["GOOGLE_APPLICATION_CREDENTIALS"]).read_text()) == json.loads(key)


def test_abfs_keys_stay_environment_variables_with_the_scanner_skip_and_its_reason() -> None:
    keys = {"accountName": "survey", "accountKey": "a2V5"}
    wiring = key_wiring(env_of(keys, "abfs"), "keys", "key-volume", KEY_DIR)
    assert wiring.volumes == [] and wiring.mounts == []
    assert wiring.env == [
        {"name": v, "valueFrom": {"secretKeyRef": {"name": "keys", "key": v}}}
        for v in ("AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_KEY")
    ]
    assert secret_data(env_of(keys, "abfs"), keys, "x") == {
        "AZURE_STORAGE_ACCOUNT_NAME": "survey",
        "AZURE_STORAGE_ACCOUNT_KEY": "a2V5",
    }
    assert wiring.scanner_skips == (ENV_SKIP,) and ENV_SKIP.startswith("CKV_K8S_35=adlfs reads")
    assert key_wiring({}, "keys", "v", KEY_DIR) == PodStorage()


def test_adlfs_reads_the_variables_the_abfs_pods_get(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reason of the skip: adlfs takes the account from these variables (and from no file)."""
    from adlfs import AzureBlobFileSystem

    keys = {"accountName": "survey", "accountKey": "a2V5"}
    for variable, key in ((v, k) for k, v in env_of(keys, "abfs").items()):
        monkeypatch.setenv(variable, keys[key])
    fs = AzureBlobFileSystem(skip_instance_cache=True)
    assert (fs.account_name, fs.account_key) == ("survey", "a2V5")


# --- checkov on an abfs stack: exactly the one skip, and it is needed ----------------------------------------------

ABFS = {"kind": "objectStore", "objectStore": {"url": "abfs://survey/catalogs", "credentials": {"accountKey": "k"}}}


def abfs_stack(without_skip: bool) -> list[dict[str, Any]]:
    """Every object of an abfs stack with keys (as the API server holds them), the operator-built ones, an abfs
    catalog's copy Job and the notebook's Deployment; `without_skip`: the CKV_K8S_35 skip annotation removed before
    the operator copies it."""
    from components.catalog_config import CatalogConfig
    from components.catalogs import engine_source, provision_job_manifest, provision_network_policy_manifest
    from tests.program_helpers import kubernetes_objects, live_objects, run_with
    from tests.test_catalogs import IMAGE, SECURE, stack
    from tools.operator_objects import operator_objects

    # The notebook too: it gets the workers' storage wiring, so the same variables and the same skip.
    run = run_with(("storage",), storage=ABFS, security={"tls": True}, notebook={"enabled": True})
    objects = kubernetes_objects(run)
    objects += [o for o in live_objects(run) if o not in objects]
    [cluster] = [o for o in objects if o["kind"] == "DaskCluster"]
    ns = cluster["metadata"]["namespace"]
    catalog = CatalogConfig(source="abfs://survey/gaia", credentials={"accountKey": SECURE})
    objects.append(provision_job_manifest("gaia", catalog, stack(namespace=ns), None, engine_source(), IMAGE))
    objects.append(provision_network_policy_manifest("gaia", catalog, ns, ["10.0.0.0/8"], [443]))
    if without_skip:
        for obj in objects:
            notes = obj["metadata"].get("annotations") or {}
            obj["metadata"]["annotations"] = {k: v for k, v in notes.items() if v != ENV_SKIP}
    built = operator_objects(cluster, uuids=[f"{i:010x}" for i in range(100)])
    for obj in [*built.deployments, built.scheduler_service]:
        obj["metadata"]["namespace"] = cluster["metadata"]["namespace"]
        obj["metadata"].pop("ownerReferences", None)  # uids of objects that exist only in the API server
    return [*objects, *built.deployments, built.scheduler_service]


def test_an_abfs_stack_carries_exactly_the_env_skip() -> None:
    objects = abfs_stack(without_skip=False)
    carrying = [o for o in objects if ENV_SKIP in (o["metadata"].get("annotations") or {}).values()]
    # The DaskCluster (the operator copies its annotations onto every Deployment and the Service it builds) and the
    # abfs catalog's Job, nothing else; the cluster's next to the CPU-limit skip (no cpuLimit in this stack).
    assert {o["kind"] for o in carrying} == {"DaskCluster", "Deployment", "Service", "Job"}
    assert all(o in carrying for o in objects if o["kind"] in ("Deployment", "Job"))
    [cluster] = [o for o in carrying if o["kind"] == "DaskCluster"]
    notes = cluster["metadata"]["annotations"]
    assert {k: v.split("=")[0] for k, v in notes.items()} == {
        "checkov.io/skip1": "CKV_K8S_11",
        "checkov.io/skip2": "CKV_K8S_35",
    }
    s3 = {"kind": "objectStore", "objectStore": {"url": "s3://b/c", "credentials": {"accessKeyId": "k"}}}
    from tests.program_helpers import kubernetes_objects, run_with

    assert ENV_SKIP not in json.dumps(kubernetes_objects(run_with(("storage",), storage=s3)))


def test_checkov_passes_an_abfs_stack_by_that_skip_alone(tmp_path: Path) -> None:
    require_checkov()
    from scripts.scan import checkov

    targets = {"skip": tmp_path / "skip", "control": tmp_path / "control"}
    for target, directory in targets.items():
        directory.mkdir()
        for i, obj in enumerate(abfs_stack(without_skip=target == "control")):
            (directory / f"{i:02d}-{obj['kind'].lower()}.yaml").write_text(yaml.safe_dump(obj))
    result = checkov(CHECKOV, targets)
    assert [(c["check_id"], c["resource"]) for c in result["skip"]["failed_checks"]] == []
    assert result["skip"]["passed"] > 100
    # Without the annotation, CKV_K8S_35 fails on exactly the pods carrying abfs variables, and nothing else does.
    failed = sorted((c["check_id"], c["resource"].split(".")[0]) for c in result["control"]["failed_checks"])
    pods = sorted(o["kind"] for o in abfs_stack(without_skip=True) if o["kind"] in ("Deployment", "Job"))
    assert failed == [("CKV_K8S_35", kind) for kind in pods], failed
