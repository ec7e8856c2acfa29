"""The offline render (`python -m tools.render`): what it writes for each stack file, and how it fails.

Focused on the render's output: files, order, redaction, errors, and that the written YAML is valid
Kubernetes (kubernetes-validate strict, 1.25 and the newest it knows) and valid for the pinned operator's
CRDs (openAPIV3Schema, with the fields the API server would silently prune reported as errors).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from components.config import ConfigError, parse_stack_config
from components.dask_operator import operator_version
from components.lock import PROJECT_DIR
from components.operator_chart import crd_manifests
from tests.support import schema_check
from tools.render import (
    KIND_ORDER,
    OTHER_KIND,
    PATCH_RANK,
    REDACTED,
    RenderError,
    _redact_secret_object,
    apply_patches,
    dump_yaml,
    load_live_objects,
    load_yaml,
    render_stack,
    write_render,
)
from tools.render import main as render_main

STACKS = ("dev", "staging", "prod")
K8S_VERSIONS = ("1.25", latest_version())
FILE_NAME = re.compile(r"^(\d\d)-([a-z0-9]+)-([a-z0-9.-]+)\.yaml$")
DASK_GROUP = "kubernetes.dask.org/v1"
POLICIES = ["NetworkPolicy"] * 4  # default-deny, egress, scheduler, workers
EXPECTED_KINDS = {
    "dev": ["Namespace", "Namespace", *["CustomResourceDefinition"] * 4, "PersistentVolume", "PersistentVolumeClaim",
            *POLICIES, "PodDisruptionBudget", "Service", "DaskCluster", "DaskAutoscaler", "Service"],
    "staging": ["Namespace", "PersistentVolumeClaim", "Secret", *POLICIES, "PodDisruptionBudget", "Service",
                "DaskCluster", "DaskAutoscaler", "Service"],
    "prod": ["Namespace", "PersistentVolume", "PersistentVolumeClaim", "Secret", *POLICIES, "PodDisruptionBudget",
             "Service", "DaskCluster", "DaskAutoscaler", "Service"],
}  # fmt: skip
# The last "Service" is the stable Service's selector patch (`NN-servicepatch-<name>.yaml`), applied after the rest.
# Values the program itself makes secret (TLS keys and the certificate bundle): redacted even in stacks without
# secure config.
PROGRAM_SECRET_KEYS = {"ca.crt", "tls.crt", "tls.key", "privateKeyPem", "caPrivateKeyPem", "clientTls"}
# The stacks that take the operator from the platform stack (`operator.fromStack: platform`).
FROM_PLATFORM = ("staging", "prod")

SECURE_STACK = """\
config:
  lsdb-k8s:namespace: lsdb-sec
  lsdb-k8s:operator:
    install: false
  lsdb-k8s:storage:
    kind: objectStore
    objectStore:
      url: s3://bucket/catalogs
      credentials:
        accessKeyId:
          secure: v1:AAAAAAAAAAAAAAAAAAAAAAccessKeyCiphertext==
        secretAccessKey:
          secure: v1:AAAAAAAAAAAAAAAAAAAAAASecretKeyCiphertext==
  lsdb-k8s:image:
    repository: ghcr.io/astro-platform/lsdb-dask
    registry:
      server: ghcr.io
      username: deploy-bot
      password:
        secure: v1:AAAAAAAAAAAAAAAAAAAAAAPasswordCiphertext==
  lsdb-k8s:verify:
    catalogPath: s3://bucket/catalogs/gaia_dr3
"""
CIPHERTEXTS = ("AccessKeyCiphertext", "SecretKeyCiphertext", "PasswordCiphertext")

BAD_STACK = """\
config:
  lsdb-k8s:namespace: Bad_Namespace
  lsdb-k8s:cluster:
    workers:
      replicas: -1
  lsdb-k8s:image:
    repository: ghcr.io/astro-platform/lsdb-dask
  lsdb-k8s:verify:
    catalogPath: /data/x
"""


def read_render(out: Path) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, Any]]:
    files = sorted(p for p in out.iterdir() if FILE_NAME.match(p.name))
    objects = []
    for p in files:
        docs = list(yaml.load_all(p.read_text(), Loader=yaml.CSafeLoader))  # safe_load_all, on libyaml's parser
        assert len(docs) == 1, f"{p.name} must hold exactly one object"
        objects.append((p.name, docs[0]))
    return objects, load_yaml((out / "summary.yaml").read_text())


def stack_dir(tmp_path: Path, name: str, text: str) -> Path:
    shutil.copy(PROJECT_DIR / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    (tmp_path / f"Pulumi.{name}.yaml").write_text(text)
    return tmp_path


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.render", *args],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module", params=STACKS)
def render(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    stack = request.param
    out = tmp_path_factory.mktemp(f"render-{stack}")
    rendered = render_stack(stack)
    write_render(rendered, out)
    objects, summary = read_render(out)
    return {"stack": stack, "out": out, "objects": objects, "summary": summary}


@pytest.fixture(scope="module")
def secure_render(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory = stack_dir(tmp_path_factory.mktemp("secure-stack"), "sec", SECURE_STACK)
    out = tmp_path_factory.mktemp("secure-render")
    write_render(render_stack("sec", directory), out)
    objects, summary = read_render(out)
    return {"out": out, "objects": objects, "summary": summary}


# --- files, order, counts ------------------------------------------------------------------------------------


def test_every_file_is_one_object_named_by_position_kind_and_name(render: dict[str, Any]) -> None:
    objects = render["objects"]
    assert objects, "nothing rendered"
    patches = {e["file"] for e in render["summary"]["objects"] if e.get("patch")}
    for i, (file_name, obj) in enumerate(objects, start=1):
        number, kind, name = FILE_NAME.match(file_name).groups()
        assert int(number) == i
        assert kind == obj["kind"].lower() + ("patch" if file_name in patches else "")
        assert name == obj["metadata"]["name"]
        assert list(obj)[:3] == ["apiVersion", "kind", "metadata"]
    rendered = {p.name for p in render["out"].iterdir()}
    assert rendered == {f for f, _ in objects} | {"summary.yaml"}


def test_counts_and_apply_order(render: dict[str, Any]) -> None:
    kinds = [obj["kind"] for _, obj in render["objects"]]
    assert kinds == EXPECTED_KINDS[render["stack"]]
    patches = {e["file"] for e in render["summary"]["objects"] if e.get("patch")}
    assert [f for f, _ in render["objects"]][-1:] == sorted(patches), "one patch, the last file"
    ranks = [PATCH_RANK if f in patches else KIND_ORDER.get(o["kind"], OTHER_KIND) for f, o in render["objects"]]
    assert ranks == sorted(ranks), (
        "namespaces and CRDs, then volumes and secrets, then DaskCluster, then autoscaler, then the patch"
    )
    # The summary's object index lists the same files in the same order.
    assert [e["file"] for e in render["summary"]["objects"]] == [f for f, _ in render["objects"]]


def test_rendered_cluster_matches_the_stack_config(render: dict[str, Any]) -> None:
    stack, summary = render["stack"], render["summary"]
    (cluster,) = [obj for _, obj in render["objects"] if obj["kind"] == "DaskCluster"]
    (scaler,) = [obj for _, obj in render["objects"] if obj["kind"] == "DaskAutoscaler"]
    raw = yaml.safe_load((PROJECT_DIR / f"Pulumi.{stack}.yaml").read_text())["config"]
    config = parse_stack_config({k.split(":", 1)[1]: v for k, v in raw.items()})
    assert {k: v for k, v in cluster["metadata"].items() if k != "annotations"} == {
        "name": summary["exports"]["clusterName"],
        "namespace": config.namespace,
        "labels": cluster["metadata"]["labels"],
    }
    # A checkov skip with its reason exactly when no CPU limit is configured.
    assert ("annotations" in cluster["metadata"]) == (config.cluster.workers.cpu_limit is None)
    assert cluster["metadata"]["name"].startswith(config.cluster.name + "-")
    assert cluster["metadata"]["labels"]["app.kubernetes.io/name"] == config.cluster.name
    assert cluster["spec"]["worker"]["replicas"] == config.cluster.workers.replicas
    assert isinstance(cluster["spec"]["worker"]["replicas"], int), "numbers must not come out as floats"
    assert scaler["spec"] == {
        "cluster": cluster["metadata"]["name"],
        "minimum": config.cluster.autoscaler.minimum,
        "maximum": config.cluster.autoscaler.maximum,
    }
    image = cluster["spec"]["worker"]["spec"]["containers"][0]["image"]
    assert re.fullmatch(r"[^@\s]+@sha256:[0-9a-f]{64}", image)
    assert summary["exports"]["imageRef"] == image
    (stable,) = [obj for obj in load_live_objects(render["out"]) if obj["kind"] == "Service"]
    assert stable["metadata"]["name"] == f"{config.cluster.name}-scheduler"
    assert stable["spec"]["selector"]["dask.org/cluster-name"] == cluster["metadata"]["name"]
    scheme = "tls" if config.security.tls else "tcp"
    assert summary["exports"]["schedulerAddress"].startswith(f"{scheme}://{config.cluster.name}-scheduler.")


def test_summary_lists_every_other_resource_with_its_inputs(render: dict[str, Any]) -> None:
    stack, summary = render["stack"], render["summary"]
    resources = {(r["type"], r["name"]): r for r in summary["resources"]}
    for r in summary["resources"]:
        assert not any(k.startswith("__") for k in r.get("inputs", {})), "no internal inputs (pickled providers)"
    types = {t for t, _ in resources}
    assert {"lsdb-k8s:image:LsdbImage", "lsdb-k8s:cluster:LsdbDaskCluster", "lsdb-k8s:storage:CatalogStorage"} <= types
    (build,) = [r for (t, _), r in resources.items() if t == "docker:index/image:Image"]
    assert build["inputs"]["imageName"].split(":", 1)[0] in summary["exports"]["imageRef"]
    assert "args" not in build["inputs"]["build"]  # the Dockerfile alone (its pinned base image) decides the image
    releases = [r for (t, _), r in resources.items() if t == "kubernetes:helm.sh/v3:Release"]
    if stack in FROM_PLATFORM:
        assert not releases, f"{stack} uses the operator that the platform stack installs"
        (platform,) = summary["stackReferences"].values()  # rendered from Pulumi.platform.yaml
        assert list(summary["stackReferences"]) == ["organization/lsdb-k8s/platform"]
        assert platform["operatorNamespace"] == "dask-operator" and platform["operatorVersion"] == operator_version()
        assert any("organization/lsdb-k8s/platform" in a for a in summary["assumptions"])
        assert summary["exports"]["operatorNamespace"] == "dask-operator"
        assert "operatorVersion" not in summary["exports"], "the platform's exports must not leak into this stack's"
    else:
        (release,) = releases
        assert release["inputs"]["chart"] == "dask-kubernetes-operator"
        assert release["inputs"]["version"] == operator_version()
        assert release["inputs"]["values"]["image"]["tag"] == operator_version()
        assert summary["exports"]["operatorVersion"] == operator_version()
        assert summary["stackReferences"] == {}
    stacks = {r["parent"].split("::")[1] for r in summary["resources"] if r["parent"].startswith("pulumi:pulumi:Stack")}
    assert stacks == {f"lsdb-k8s-{stack}"}
    (verification,) = [r for (t, _), r in resources.items() if t == "pulumi-python:dynamic/lsdb:Verification"]
    raw = yaml.safe_load((PROJECT_DIR / f"Pulumi.{stack}.yaml").read_text())["config"]["lsdb-k8s:verify"]
    assert verification["inputs"]["catalogPath"] == raw["catalogPath"]
    # The verification reaches the new cluster through its own Service, not the stable one.
    live = summary["exports"]["clusterName"]
    scheme = "tcp" if stack == "dev" else "tls"  # TLS everywhere but dev
    assert verification["inputs"]["schedulerAddress"].startswith(f"{scheme}://{live}-scheduler.")
    assert verification["inputs"]["imageRef"] == summary["exports"]["imageRef"]
    assert any("dynamic providers run only during `pulumi up`" in a for a in summary["assumptions"])
    for key in ("namespace", "clusterName", "imageRef", "schedulerAddress", "dashboardUrl", "portForwardScheduler"):
        assert summary["exports"][key], key
    assert summary["stack"] == stack and summary["stackFile"] == f"Pulumi.{stack}.yaml"


# --- secrets -----------------------------------------------------------------------------------------------


def test_secure_values_render_redacted(secure_render: dict[str, Any]) -> None:
    text = "\n".join(p.read_text() for p in secure_render["out"].iterdir())
    for ciphertext in CIPHERTEXTS:
        assert ciphertext not in text
    summary = secure_render["summary"]
    assert summary["secretConfigKeys"] == ["lsdb-k8s:image", "lsdb-k8s:storage"]
    secrets = {obj["metadata"]["name"]: obj for _, obj in secure_render["objects"] if obj["kind"] == "Secret"}
    (tls,) = [name for name in secrets if name.startswith("lsdb-cluster-tls-g0-ca")]  # the TLS epoch's (today's)
    assert set(secrets) == {"lsdb-cluster-object-store", "lsdb-cluster-registry", tls}
    # The s3 keys are one file, the AWS shared-credentials file (components/object_store_keys.py).
    assert secrets["lsdb-cluster-object-store"]["stringData"] == {"credentials": REDACTED}
    assert secrets["lsdb-cluster-registry"]["stringData"] == {".dockerconfigjson": REDACTED}
    assert secrets["lsdb-cluster-registry"]["type"] == "kubernetes.io/dockerconfigjson"
    (build,) = [r for r in summary["resources"] if r["type"] == "docker:index/image:Image"]
    assert build["inputs"]["registry"] == {"server": "ghcr.io", "username": "deploy-bot", "password": REDACTED}
    # Pods still say where the credentials come from: the Secret's files, mounted.
    (cluster,) = [obj for _, obj in secure_render["objects"] if obj["kind"] == "DaskCluster"]
    volumes = cluster["spec"]["worker"]["spec"]["volumes"]
    assert "lsdb-cluster-object-store" in [v["secret"]["secretName"] for v in volumes if "secret" in v]
    assert "secretKeyRef" not in json.dumps(cluster["spec"]["worker"]["spec"]["containers"][0]["env"])
    assert cluster["spec"]["worker"]["spec"]["imagePullSecrets"] == [{"name": "lsdb-cluster-registry"}]


def test_decrypted_secrets_never_reach_the_files(
    secure_render: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As if the secure values could be decrypted: the plaintext the program receives is still never written."""
    import tools.render as render_module

    (tmp_path / "stack").mkdir()
    directory = stack_dir(tmp_path / "stack", "sec", SECURE_STACK)
    config, secret_keys = render_module.stack_config("sec", directory)
    plaintexts = iter(f"PLAINTEXT-{i}-value" for i in range(10))
    decrypted = {k: re.sub(re.escape(REDACTED), lambda _m: next(plaintexts), v) for k, v in config.items()}
    assert decrypted != config
    monkeypatch.setattr(render_module, "stack_config", lambda *_a, **_k: (decrypted, secret_keys))
    write_render(render_stack("sec", directory), tmp_path / "out")
    text = "\n".join(p.read_text() for p in (tmp_path / "out").iterdir())
    assert "PLAINTEXT-" not in text
    assert text.count(REDACTED) == "\n".join(p.read_text() for p in secure_render["out"].iterdir()).count(REDACTED)


def test_secret_exports_are_redacted(tmp_path: Path) -> None:
    program = tmp_path / "__main__.py"
    program.write_text(
        "import pulumi\n"
        "pulumi.export('plain', 'visible')\n"
        "pulumi.export('token', pulumi.Output.secret('PLAINTEXT-export'))\n"
        "pulumi.export('nested', {'a': pulumi.Output.secret('PLAINTEXT-nested')})\n"
    )
    directory = stack_dir(tmp_path, "tiny", "config: {}\n")
    rendered = render_stack("tiny", directory, program=program)
    assert rendered.summary["exports"] == {"plain": "visible", "token": REDACTED, "nested": REDACTED}


def test_secret_values_are_redacted_even_when_not_marked_secret() -> None:
    obj = {"kind": "Secret", "data": {"a": "cGxhaW4="}, "stringData": {"b": "plain"}}
    inputs = {"data": {"a": "cGxhaW4="}, "stringData": {"b": "plain"}}
    assert _redact_secret_object(obj, inputs) == {
        "kind": "Secret",
        "data": {"a": REDACTED},
        "stringData": {"b": REDACTED},
    }


def test_the_selector_patch_file_says_how_to_apply_it_and_merges_into_the_service(render: dict[str, Any]) -> None:
    (patch_file,) = [e["file"] for e in render["summary"]["objects"] if e.get("patch")]
    text = (render["out"] / patch_file).read_text()
    assert "kubectl apply --server-side --field-manager=lsdb-k8s-stable-endpoint --force-conflicts" in text
    patch = yaml.safe_load(text)
    (service,) = [o for f, o in render["objects"] if o["kind"] == "Service" and f != patch_file]
    assert "selector" not in service["spec"] and set(patch["spec"]) == {"selector"}
    (live,) = [o for o in load_live_objects(render["out"]) if o["kind"] == "Service"]
    assert live == {**service, "spec": {**service["spec"], "selector": patch["spec"]["selector"]}}


def test_load_yaml_reads_what_the_render_writes_as_safe_load_does() -> None:
    """load_yaml (libyaml's parser) reads the render's files, an operator's CRD (DaskWorkerGroup's: the pod template's
    schema), block text, quoted and unquoted scalars, as yaml.safe_load (PyYAML's own parser) does."""
    (crd,) = [c for c in crd_manifests() if c["spec"]["names"]["kind"] == "DaskWorkerGroup"]
    docs = [crd, {"a": "x\ny\n", "b": ["yes", "on", "1.0", "0o17", "2026-12-03", "é", ""], "c": [1, 1.5]}]
    for doc in docs:
        text = dump_yaml(doc)
        assert load_yaml(text) == yaml.safe_load(text) == doc


def test_apply_patches_merges_maps_and_rejects_a_patch_without_its_object() -> None:
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "n", "labels": {"a": "1"}},
               "spec": {"type": "ClusterIP", "ports": [{"port": 1}]}}  # fmt: skip
    patch = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "n", "annotations": {}},
             "spec": {"selector": {"k": "v"}, "ports": [{"port": 2}]}}  # fmt: skip
    (live,) = apply_patches([service], [patch])
    assert live["metadata"] == service["metadata"], "a patch's (Pulumi-only) annotations are not the object's"
    assert live["spec"] == {"type": "ClusterIP", "ports": [{"port": 2}], "selector": {"k": "v"}}
    assert service["spec"] == {"type": "ClusterIP", "ports": [{"port": 1}]}, "the input is not changed"
    with pytest.raises(RenderError, match="v1/Service/n/other"):
        apply_patches([service], [{**patch, "metadata": {"name": "other", "namespace": "n"}}])


def test_rendered_stacks_hold_no_secret_placeholder_outside_secrets(render: dict[str, Any]) -> None:
    """The committed stacks have no secure values: only what the program makes secret (TLS keys) is redacted."""
    assert render["summary"]["secretConfigKeys"] == []
    text = "".join(p.read_text() for p in render["out"].iterdir())
    redacted_keys = set(re.findall(rf"^\s*([\w.]+): {re.escape(REDACTED)}$", text, flags=re.M))
    assert text.count(REDACTED) == len(re.findall(rf": {re.escape(REDACTED)}$", text, flags=re.M))
    assert redacted_keys <= PROGRAM_SECRET_KEYS
    assert bool(redacted_keys) == (render["stack"] in ("staging", "prod")), "TLS is on in the clusters but dev's"


# --- validity ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_core_objects_validate_strictly(render: dict[str, Any], secure_render: dict[str, Any], version: str) -> None:
    checked = 0
    for file_name, obj in [*render["objects"], *secure_render["objects"]]:
        if obj["apiVersion"] == DASK_GROUP:
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{file_name} is not valid Kubernetes {version}: {exc.message} at {list(exc.path)}")
        checked += 1
    assert checked >= 2


def _no_pruning(schema: Any) -> Any:
    """The CRD schema, with fields the API server would silently prune (not declared) made errors."""
    if isinstance(schema, dict):
        out = {k: _no_pruning(v) for k, v in schema.items()}
        if (
            schema.get("type") == "object"
            and "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_no_pruning(v) for v in schema]
    return schema


def crd_schema(kind: str) -> dict[str, Any]:
    crd = next(c for c in crd_manifests() if c["spec"]["names"]["kind"] == kind)
    (version,) = [v for v in crd["spec"]["versions"] if v["served"] and v["storage"]]
    schema = _no_pruning(version["schema"]["openAPIV3Schema"])
    schema["properties"]["apiVersion"] = {"const": f"{crd['spec']['group']}/{version['name']}"}
    schema["properties"]["kind"] = {"const": kind}
    schema["properties"]["metadata"] = {"type": "object"}
    return schema


def test_dask_objects_validate_against_the_pinned_crds(render: dict[str, Any]) -> None:
    dask_objects = [(f, o) for f, o in render["objects"] if o["apiVersion"] == DASK_GROUP]
    assert {o["kind"] for _, o in dask_objects} == {"DaskCluster", "DaskAutoscaler"}
    for file_name, obj in dask_objects:
        errors = list(jsonschema.Draft7Validator(crd_schema(obj["kind"])).iter_errors(obj))
        assert not errors, f"{file_name}: " + "; ".join(f"{e.message} at {list(e.path)}" for e in errors)


def test_pruning_check_catches_unknown_fields(render: dict[str, Any]) -> None:
    """Control for the CRD check: a misspelt field, which the API server would drop silently, is an error."""
    (obj,) = [o for _, o in render["objects"] if o["kind"] == "DaskCluster"]
    bad = json.loads(json.dumps(obj))
    bad["spec"]["worker"]["replica"] = 3
    with pytest.raises(jsonschema.ValidationError, match="replica"):
        schema_check.validate(bad, crd_schema("DaskCluster"))  # jsonschema.validate, the schema checked once


# --- the command line --------------------------------------------------------------------------------------


def test_cli_renders_fast_without_heavy_imports(tmp_path: Path) -> None:
    code = (
        "import json, sys, time\n"
        "t = time.monotonic()\n"
        "from tools.render import main\n"
        f"rc = main(['--stack', 'dev', '--out', {str(tmp_path / 'out')!r}])\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'lsdb', 'dask', 'distributed', 'pandas', 'hats'})\n"
        "print(json.dumps({'rc': rc, 'heavy': heavy, 'seconds': time.monotonic() - t}))\n"
    )
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report == {**report, "rc": 0, "heavy": []}
    assert time.monotonic() - started < 60, "the render should take seconds, not minutes"
    objects, _ = read_render(tmp_path / "out")
    assert [o["kind"] for _, o in objects] == EXPECTED_KINDS["dev"]


def test_cli_unknown_stack_fails_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The command's `main` in this process (an exception would fail the test: no traceback for the user); the
    # `python -m tools.render` process itself is run by the tests around this one.
    assert render_main(["--stack", "qa", "--out", str(tmp_path / "out")]) != 0
    stderr = capsys.readouterr().err
    assert "no stack named 'qa' found" in stderr
    assert "dev, platform, prod, staging" in stderr
    assert "Traceback" not in stderr
    assert not (tmp_path / "out").exists()


def test_cli_bad_config_fails_with_the_config_error(tmp_path: Path) -> None:
    directory = stack_dir(tmp_path, "bad", BAD_STACK)
    proc = cli("--stack", "bad", "--stack-dir", str(directory), "--out", str(tmp_path / "out"))
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    raw = yaml.safe_load(BAD_STACK)["config"]
    with pytest.raises(ConfigError) as expected:
        parse_stack_config({k.split(":", 1)[1]: v for k, v in raw.items()})
    assert proc.stderr.strip() == f"error: {expected.value}"  # what `pulumi up` reports, every problem at once
    assert "namespace = 'Bad_Namespace'" in proc.stderr and "cluster.workers.replicas = -1" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_rerender_replaces_only_its_own_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "99-daskcluster-stale.yaml").write_text("stale: true\n")
    (out / "notes.txt").write_text("keep me\n")
    write_render(render_stack("staging"), out)
    names = sorted(p.name for p in out.iterdir())
    assert "99-daskcluster-stale.yaml" not in names and "notes.txt" in names
