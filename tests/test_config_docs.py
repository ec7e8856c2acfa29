"""Docs and schema come from the model: docs/configuration.md's tables and the JSON Schema cannot drift."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components.config import StackConfig, parse_stack_config
from components.lock import PROJECT_DIR
from tools import config_docs

STACK_FILES = sorted(PROJECT_DIR.glob("Pulumi.*.yaml"))
CHECK_JSONSCHEMA = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))


def test_reference_and_schema_match_the_model() -> None:
    # The same check `python -m tools.config_docs --check` runs; it fails the suite when someone edits a key
    # in components/config.py without regenerating, or edits the generated section by hand.
    assert config_docs.main(["--check"]) == 0, "run `python -m tools.config_docs --write`"


def test_every_key_has_a_description_and_appears_in_the_reference() -> None:
    readme = config_docs.REFERENCE_DOC.read_text()
    keys = list(config_docs.iter_fields())
    assert len(keys) > 40
    for key, info, model in keys:
        assert info.description and len(info.description) > 10, f"{model.__name__}: {key} has no description"
        assert f"| `{key}` |" in readme, key
    for name, info in StackConfig.model_fields.items():
        assert info.description, name


def test_every_shipped_stack_file_names_and_passes_the_schema() -> None:
    assert {p.name for p in STACK_FILES} >= {"Pulumi.dev.yaml", "Pulumi.staging.yaml", "Pulumi.prod.yaml"}
    for path in STACK_FILES:
        assert path.read_text().startswith("# yaml-language-server: $schema=./schema/pulumi-stack.schema.json\n")


@pytest.mark.skipif(CHECK_JSONSCHEMA is None, reason="check-jsonschema comes with requirements-dev.txt (make venv)")
def test_check_jsonschema_accepts_every_stack_file_and_rejects_typos(tmp_path: Path) -> None:
    schema = str(config_docs.SCHEMA_PATH)
    ok = subprocess.run(
        [str(CHECK_JSONSCHEMA), "--schemafile", schema, *map(str, STACK_FILES)], capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = tmp_path / "Pulumi.typo.yaml"
    doc = yaml.safe_load((PROJECT_DIR / "Pulumi.dev.yaml").read_text())
    doc["config"]["lsdb-k8s:cluster"]["workers"]["replica"] = 3
    doc["config"]["lsdb-k8s:verify"]["connect"] = "ssh"
    doc["config"]["lsdb-k8s:image"]["registry"] = {"password": "plaintext-token"}
    bad.write_text(yaml.safe_dump(doc))
    out = subprocess.run([str(CHECK_JSONSCHEMA), "--schemafile", schema, str(bad)], capture_output=True, text=True)
    assert out.returncode == 1
    for expected in ("'replica' was unexpected", "'ssh' is not one of", "is not of type 'object'"):
        assert expected in out.stdout, out.stdout


def test_secret_fields_require_a_secure_value_in_the_schema() -> None:
    schema = config_docs.stack_file_schema()
    text = str(schema)
    assert "'required': ['secure']" in text
    config = schema["properties"]["config"]
    assert set(config["properties"]) == {f"lsdb-k8s:{info.alias}" for info in StackConfig.model_fields.values()}
    # Other namespaces (kubernetes:context, pulumi:...) stay allowed.
    assert config["patternProperties"]


def test_the_schema_takes_the_strings_pulumi_config_set_stores_and_only_those() -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(config_docs.stack_file_schema())

    def accepted(config: dict[str, object]) -> bool:
        return validator.is_valid({"config": config})

    # `pulumi config set createNamespace false`, a --path value without a type, a section as one JSON string.
    assert accepted({"lsdb-k8s:createNamespace": "false"})
    assert accepted({"lsdb-k8s:cluster": {"workers": {"replicas": "3"}}, "lsdb-k8s:verify": {"cone": {"ra": "180.5"}}})
    assert accepted({"lsdb-k8s:cluster": '{"name": "lsdb"}'})
    # ... and the program parses each of them.
    parsed = parse_stack_config(
        {"createNamespace": "false", "cluster": '{"name": "lsdb", "workers": {"replicas": "3"}}',
         "image": {"repository": "ghcr.io/a/b"}, "verify": {"catalogPath": "/data/x", "cone": {"ra": "180.5"}}}
    )  # fmt: skip
    assert (parsed.create_namespace, parsed.cluster.workers.replicas, parsed.verify.cone.ra) == (False, 3, 180.5)
    # Strings that are not the value still fail, and so do typed values out of range.
    assert not accepted({"lsdb-k8s:createNamespace": "maybe"})
    assert not accepted({"lsdb-k8s:cluster": {"workers": {"replicas": "three"}}})
    assert not accepted({"lsdb-k8s:cluster": {"workers": {"replicas": -1}}})
