"""End to end against real object storage: a catalog in an S3 bucket (moto's server) and one served over HTTP.

The dev stack with `storage.kind: objectStore` is run through the real program under Pulumi's mocks with the
credentials as Pulumi secrets (as `pulumi up` hands them over once decrypted). Its DaskCluster and Secret are what
the pods get: the emulator (tools/pod_emulator.py) writes the rendered Secret's keys as files where its volume is
mounted and maps the paths of the rendered env (`AWS_SHARED_CREDENTIALS_FILE`, `AWS_CONFIG_FILE`) to them, so the
scheduler and worker processes read exactly those files (botocore's own credential and config chain) and nothing
of this process's environment. The verification dynamic provider's `create` (what `pulumi up` runs) then opens
`s3://…` (or `http://…`) on a worker, with the storage options the stack exports, and must find exactly the rows a
direct computation finds. A wrong secret key must fail at stage `open` with a message naming the storage and the fix.

Servers: tools/object_servers.py (moto in its own virtualenv, `.build/moto-venv`; authentication enforced).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.program_helpers import dask_cluster
from tests.test_e2e import N_ROWS, SEED, VERIFICATION_TYPE, expected_rows
from tools.mock_runtime import SECRET_SIG, ProgramRun, run_program
from tools.object_servers import S3Server, http_file_server, s3_server
from tools.pod_emulator import EmulatedCluster
from tools.render import stack_config

pytestmark = pytest.mark.e2e

STACK = "dev"
PREFIX = "catalogs/sample"
SECRET_TYPE = "kubernetes:core/v1:Secret"


# --- the dev stack with object storage, run by the real program ------------------------------------------------


def run_dev_stack(storage: dict[str, Any], catalog_path: str) -> ProgramRun:
    """The dev stack with `storage` and `verify.catalogPath` replaced; `storage` is a secret key (its credentials)."""
    config, secret_keys = stack_config(STACK)
    config["lsdb-k8s:storage"] = json.dumps(storage)
    verify = json.loads(config["lsdb-k8s:verify"])
    config["lsdb-k8s:verify"] = json.dumps({**verify, "catalogPath": catalog_path})
    return run_program(config, [*secret_keys, "lsdb-k8s:storage"], stack=STACK)


def rendered_secrets(run: ProgramRun) -> dict[str, dict[str, str]]:
    """Secret name -> data, as the API server would store it; each value must have reached it as a Pulumi secret."""
    secrets = {}
    for reg in run.of_type(SECRET_TYPE):
        raw = reg.raw_inputs["stringData"]
        assert raw.get(SECRET_SIG), f"Secret {reg.name}: stringData is not a Pulumi secret"
        secrets[reg.inputs["metadata"]["name"]] = dict(reg.inputs["stringData"])
    return secrets


def verification_props(run: ProgramRun, cluster: EmulatedCluster) -> dict[str, Any]:
    (reg,) = run.of_type(VERIFICATION_TYPE)
    props = {k: v for k, v in reg.inputs.items() if not k.startswith("__")}
    # The verification goes through the new cluster's own (candidate) Service, as `pulumi up` runs it.
    return {**props, "connect": "direct", "schedulerAddress": cluster.map_address(props["schedulerAddress"])}


def pod_env(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Every env item of every container of the scheduler and the default workers."""
    return [
        item
        for role in ("scheduler", "worker")
        for container in manifest["spec"][role]["spec"]["containers"]
        for item in container.get("env", [])
    ]


def secret_env(manifest: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Env name -> (Secret, key) for every secretKeyRef of every container in the DaskCluster."""
    refs = {}
    for item in pod_env(manifest):
        ref = (item.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            refs[item["name"]] = (ref["name"], ref["key"])
    return refs


KEY_FILE_VARIABLES = ("AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE")


# --- fixtures ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from scripts.sample_catalog import write_sample_catalog

    root = tmp_path_factory.mktemp("catalogs")
    write_sample_catalog(root / "sample", N_ROWS, seed=SEED)
    return root


@pytest.fixture(scope="module")
def s3(local_catalog: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with s3_server(tmp_path_factory.mktemp("moto")) as server:
        server.upload(local_catalog / "sample", PREFIX)
        yield server


@pytest.fixture(scope="module")
def s3_run(s3: S3Server) -> ProgramRun:
    """The dev stack with the bucket and its right keys, run once for the module (tests copy what they change)."""
    return run_dev_stack(s3_storage(s3, s3.secret_access_key), f"s3://{s3.bucket}/{PREFIX}")


def s3_storage(s3: S3Server, secret_access_key: str) -> dict[str, Any]:
    return {
        "kind": "objectStore",
        "objectStore": {
            "url": f"s3://{s3.bucket}/catalogs",
            "credentials": {
                "accessKeyId": s3.access_key_id,
                "secretAccessKey": secret_access_key,
                "region": s3.region,
                "endpointUrl": s3.endpoint,
            },
        },
    }


def start(run: ProgramRun, root: Path, replicas: int | None = None) -> EmulatedCluster:
    manifest = copy.deepcopy(dask_cluster(run))
    if replicas is not None:
        manifest["spec"]["worker"]["replicas"] = replicas
    cluster = EmulatedCluster(manifest, root, secrets=rendered_secrets(run))
    try:
        cluster.start(timeout=120)
        cluster.wait_for_workers(timeout=120)
    except BaseException:
        cluster.stop()
        raise
    return cluster


# --- tests --------------------------------------------------------------------------------------------------------


def test_s3_catalog_is_opened_on_a_worker_with_the_stack_credentials(
    s3: S3Server, s3_run: ProgramRun, tmp_path: Path
) -> None:
    url = f"s3://{s3.bucket}/{PREFIX}"
    run = s3_run
    manifest = dask_cluster(run)
    secrets = rendered_secrets(run)
    # Files, not variables: no secretKeyRef at all (CKV_K8S_35), the two AWS files named by plain paths.
    assert secret_env(manifest) == {}
    assert sorted({e["name"] for e in pod_env(manifest) if e["name"].startswith("AWS_")}) == sorted(KEY_FILE_VARIABLES)
    (store,) = secrets.values()
    assert s3.secret_access_key in store["credentials"] and s3.endpoint in store["config"]
    # The storage options the stack exports: credentials in the pods, so not anonymous.
    assert run.outputs["catalogStorageOptions"] == {"anon": False}

    cluster = start(run, tmp_path / "cluster")
    try:
        # Every pod reads exactly the Secret's files where its variables say (and nothing from this process).
        for pod in cluster.pods:
            env = pod.containers[0].env
            assert {n: Path(env[n]).name for n in KEY_FILE_VARIABLES} == {
                "AWS_SHARED_CREDENTIALS_FILE": "credentials",
                "AWS_CONFIG_FILE": "config",
            }
            for name in KEY_FILE_VARIABLES:
                assert Path(env[name]).read_text() == store[Path(env[name]).name], f"{pod.name}: {name}"
            assert not [n for n in env if n.startswith("AWS_") and n not in KEY_FILE_VARIABLES]
        props = verification_props(run, cluster)
        assert props["catalogPath"] == url
        assert props["storageOptions"] == {"anon": False}
        from components.verification.resource import new_provider

        outs = new_provider().create(props).outs
    finally:
        cluster.stop()
    want = expected_rows(props["ra"], props["dec"], props["radiusArcsec"])
    assert want >= 1
    assert outs["rows"] == want
    assert outs["workers"] == 2
    assert cluster.leftover_pids() == []


@pytest.mark.parametrize("variable", KEY_FILE_VARIABLES)
def test_s3_keys_and_endpoint_come_from_the_mounted_files(s3_run: ProgramRun, tmp_path: Path, variable: str) -> None:
    """Control: the same pods without one file variable of the render cannot open the catalog (no credentials:
    moto refuses an unsigned request; no config: no endpoint, so no S3 server at all), so the passing run above
    really read the keys and the endpoint from the mounted files (botocore reads both). `AWS_MAX_ATTEMPTS=1` (no
    credentials, no endpoint: neither) only stops botocore retrying the refused request, 4 times with backoff
    (about 8 s a call without an endpoint). The check runs in this process (the provider's child process is the
    subject of the passing run): only what the pods can open is controlled here."""
    from components.verification.check import VerificationError, verify_catalog_query
    from components.verification.resource import query_of

    run = s3_run
    manifest = copy.deepcopy(dask_cluster(run))
    worker = manifest["spec"]["worker"]["spec"]["containers"][0]
    assert variable in [e["name"] for e in worker["env"]]
    worker["env"] = [e for e in worker["env"] if e["name"] != variable] + [{"name": "AWS_MAX_ATTEMPTS", "value": "1"}]
    manifest["spec"]["worker"]["replicas"] = 1
    with EmulatedCluster(manifest, tmp_path / "cluster", secrets=rendered_secrets(run)) as cluster:
        cluster.start(timeout=120)
        cluster.wait_for_workers(timeout=120)
        props = {**verification_props(run, cluster), "minWorkers": 1, "timeoutSeconds": 60.0}
        with pytest.raises(VerificationError) as failure:
            verify_catalog_query(props["schedulerAddress"], query_of(props))
    assert failure.value.stage == "open", failure.value
    # The worker's own error, the one the missing file causes (not a failure on the client's side of the stage).
    bucket, key = props["catalogPath"].removeprefix("s3://").split("/", 1)
    cause = {
        "AWS_SHARED_CREDENTIALS_FILE": "NoCredentialsError: Unable to locate credentials",
        "AWS_CONFIG_FILE": f'EndpointConnectionError: Could not connect to the endpoint URL: "https://{bucket}.s3.amazonaws.com/{key}/',
    }[variable]
    cause = f"a worker could not open the catalog {props['catalogPath']}: {cause}"
    assert cause in str(failure.value), failure.value


def test_wrong_secret_key_fails_at_open_naming_the_storage_and_the_fix(s3: S3Server, tmp_path: Path) -> None:
    url = f"s3://{s3.bucket}/{PREFIX}"
    run = run_dev_stack(s3_storage(s3, "not-the-secret-key"), url)
    cluster = start(run, tmp_path / "cluster", replicas=1)
    try:
        props = {**verification_props(run, cluster), "minWorkers": 1}
        from components.verification.resource import new_provider

        with pytest.raises(RuntimeError) as failure:
            new_provider().create(props)
    finally:
        cluster.stop()
    message = str(failure.value)
    assert "failed at stage 'open'" in message
    assert url in message  # names the storage
    assert "pulumi config set --path --secret storage.objectStore.credentials.<key>" in message  # and the fix
    assert "PermissionError" in message or "Forbidden" in message, message


def test_http_catalog_is_opened_on_a_worker(local_catalog: Path, tmp_path: Path) -> None:
    with http_file_server(local_catalog) as base:
        url = f"{base}/sample"
        run = run_dev_stack({"kind": "objectStore", "objectStore": {"url": base}}, url)
        manifest = dask_cluster(run)
        assert secret_env(manifest) == {} and run.of_type(SECRET_TYPE) == []  # nothing to hide for HTTP
        assert run.outputs["catalogStorageOptions"] == {}
        cluster = start(run, tmp_path / "cluster")
        try:
            props = verification_props(run, cluster)
            from components.verification.resource import new_provider

            outs = new_provider().create(props).outs
        finally:
            cluster.stop()
    assert outs["rows"] == expected_rows(props["ra"], props["dec"], props["radiusArcsec"])
    assert outs["workers"] == 2


def test_sizing_reads_the_s3_catalog_with_the_pods_settings(
    s3: S3Server, local_catalog: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python -m tools.sizing s3://…` with the credentials in the environment and the stack's storage options:
    the same partitions as the local copy of the catalog."""
    import os
    import subprocess
    import sys

    from components.lock import PROJECT_DIR
    from tools import sizing

    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": s3.access_key_id,
        "AWS_SECRET_ACCESS_KEY": s3.secret_access_key,
        "AWS_ENDPOINT_URL": s3.endpoint,
        "AWS_DEFAULT_REGION": s3.region,
    }
    url = f"s3://{s3.bucket}/{PREFIX}"
    proc = subprocess.run(
        [sys.executable, "-m", "tools.sizing", url, "--storage-option", "anon=false"],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    local = sizing.read_sizes(str(local_catalog / "sample"))
    assert f"partitions   {len(local.partitions)}" in proc.stdout
    assert f"rows         {local.total_rows}" in proc.stdout
    big = local.largest
    assert f"Norder={big.order} Npix={big.pixel}: " in proc.stdout and f"{big.rows} rows" in proc.stdout
    # Without anon=false hats would go anonymous, which this bucket refuses (the same CLI, run in this process: with
    # anon=false it reads the catalog here too, so only the option differs). `AWS_MAX_ATTEMPTS=1` for both: botocore
    # would retry each refused anonymous request (moto answers 500) 4 times with backoff, 6-13 s of sleeping.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(name, env[name])
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    assert sizing.main([url, "--storage-option", "anon=false"]) == 0
    assert f"rows         {local.total_rows}" in capsys.readouterr().out
    assert sizing.main([url]) == 1
    assert "could not read the catalog metadata" in capsys.readouterr().err
