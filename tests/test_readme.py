"""What README.md and docs/ tell users to copy is true of the code (connect-and-query runs in tests/test_e2e.py)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from components.lock import PROJECT_DIR
from tests.program_helpers import shipped_stack
from tests.readme_blocks import readme_block


def test_notebook_pod_is_a_valid_pod_that_reaches_the_dev_cluster() -> None:
    import kubernetes_validate

    pod = yaml.safe_load(readme_block("notebook-pod"))
    kubernetes_validate.validate(pod, "1.37", strict=True)
    run = shipped_stack("dev")
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["DASK_SCHEDULER_ADDRESS"] == run.outputs["schedulerAddress"]  # the stable Service
    assert pod["metadata"]["namespace"] == run.outputs["namespace"]
    claims = [r.inputs["metadata"]["name"] for r in run.of_type("kubernetes:core/v1:PersistentVolumeClaim")]
    assert pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] in claims
    assert container["volumeMounts"][0]["mountPath"] == "/data"  # storage.mountPath: /data/sample is the catalog


def test_copy_pod_is_a_valid_pod_that_writes_the_staging_claim_and_keeps_its_egress() -> None:
    import kubernetes_validate

    pod = yaml.safe_load(readme_block("copy-pod"))
    kubernetes_validate.validate(pod, "1.37", strict=True)
    run = shipped_stack("staging")
    assert pod["metadata"]["namespace"] == run.outputs["namespace"]
    claims = [r.inputs["metadata"]["name"] for r in run.of_type("kubernetes:core/v1:PersistentVolumeClaim")]
    assert pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] in claims
    (container,) = pod["spec"]["containers"]
    (mount,) = container["volumeMounts"]
    assert not mount.get("readOnly") and mount["mountPath"] == "/data"
    verification = run.one("pulumi-python:dynamic/lsdb:Verification").inputs
    assert f'"{verification["catalogPath"]}"' in container["args"][0]  # it copies to what the stack verifies
    # No NetworkPolicy of the stack selects it, so its egress to the source is not restricted by them.
    labels = pod["metadata"].get("labels", {})
    for policy in run.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy"):
        selector = policy.inputs["spec"]["podSelector"].get("matchLabels", {})
        assert not selector.items() <= labels.items(), policy.inputs["metadata"]["name"]


def test_connect_and_query_uses_the_exported_local_address() -> None:
    block = readme_block("connect-and-query")
    run = shipped_stack("dev")
    assert f'Client("{run.outputs["localSchedulerAddress"]}")' in block
    verification = run.one("pulumi-python:dynamic/lsdb:Verification").inputs
    assert f'"{verification["catalogPath"]}"' in block  # the dev stack's catalog, as the workers see it


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_client_installs_the_image_lock_alone() -> None:
    dry = subprocess.run(
        ["make", "-n", "-B", "client"], cwd=PROJECT_DIR, capture_output=True, text=True, check=True
    ).stdout
    installs = [line for line in dry.splitlines() if " install " in line and "--upgrade pip" not in line]
    assert installs == [".venv-client/bin/pip install --quiet -r docker/requirements.lock"]


def test_sample_catalog_row_count_the_readme_states() -> None:
    import numpy as np

    from scripts.sample_catalog import sample_dataframe

    df = sample_dataframe(20_000)  # what `make up` seeds (SAMPLE_ROWS)
    ra, dec = np.radians(df["ra"].to_numpy()), np.radians(df["dec"].to_numpy())
    hav = np.sin(dec / 2) ** 2 + np.cos(dec) * np.sin((ra - np.pi) / 2) ** 2  # distance to ra=180, dec=0
    inside = int((np.degrees(2 * np.arcsin(np.sqrt(np.clip(hav, 0, 1)))) <= 1.0).sum())
    assert f"exactly {inside} of the 20,000 rows" in (PROJECT_DIR / "README.md").read_text()


def test_readme_lists_every_verification_output() -> None:
    from components.verification.query import OUTPUT_KEYS

    text = (PROJECT_DIR / "README.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `verification` |"))
    assert [key for key in OUTPUT_KEYS if key not in row] == []


def test_the_config_error_example_is_what_the_parser_prints() -> None:
    from components.config import ConfigError, parse_stack_config

    raw = {
        "cluster": {"name": "LSDB_Cluster"},
        "storage": {"kind": "pvc", "size": "10Gi", "accesMode": "ReadWriteMany"},
        "image": {"repository": "ghcr.io/a/b"},
        "verify": {"catalogPath": "/data/x"},
    }
    with pytest.raises(ConfigError) as error:
        parse_stack_config(raw)
    assert readme_block("config-error") == f"error: {error.value}"
