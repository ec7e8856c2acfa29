"""`make up` / `make down` (scripts/dev.sh): real runs with a controlled PATH and environment.

Each test copies the Makefile and scripts/ into a temporary checkout and runs them with PATH set to a
folder holding only the tools that test grants: links to the real bash, make and (where a test says so)
the real docker and kubectl clients, plus `uname` pinned to one platform so the install instructions
are deterministic. Where a test needs a tool to *answer* (pulumi, kind) it gets a two-line executable
that stands in for that tool's presence; the script's own logic always runs for real. HOME, KUBECONFIG
and DOCKER_HOST point into the temporary folder, so no test reads your Pulumi login, kube config or
Docker daemon, and every test asserts the checkout was left untouched when the script stopped.
"""

from __future__ import annotations

import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.checkov import REQUIRE_CHECKOV

ROOT = Path(__file__).resolve().parent.parent
BASH = shutil.which("bash")
MAKE = shutil.which("make")
DOCKER = shutil.which("docker")
KUBECTL = shutil.which("kubectl")

pytestmark = pytest.mark.skipif(BASH is None, reason="bash is not installed: scripts/dev.sh is a bash script")

PULUMI_FIX = (
    "pulumi not found: install with `curl -fsSL https://get.pulumi.com | sh` (it goes to ~/.pulumi/bin: open a "
    'new shell or run `export PATH="$HOME/.pulumi/bin:$PATH"`)'
)
DOCKER_FIX_LINUX = (
    "docker not found: install Docker Engine with `curl -fsSL https://get.docker.com | sh` "
    "(or see https://docs.docker.com/engine/install/), then `sudo systemctl start docker`"
)
KUBECTL_FIX_LINUX = (
    'kubectl not found: install with `curl -LO "https://dl.k8s.io/release/$(curl -Ls '
    'https://dl.k8s.io/release/stable.txt)/bin/linux/amd64/kubectl" && sudo install -m 0755 kubectl '
    "/usr/local/bin/kubectl`"
)
KIND_HOW_LINUX = (
    "install it with `curl -Lo ./kind https://kind.sigs.k8s.io/dl/v0.27.0/kind-linux-amd64 && chmod +x ./kind "
    "&& sudo mv ./kind /usr/local/bin/kind` (or `go install sigs.k8s.io/kind@v0.27.0`) so `make up` can create "
    "the lsdb-dev cluster"
)
DAEMON_FIX_LINUX = (
    "start it with `sudo systemctl start docker`; if it is running, let your user use it with "
    "`sudo usermod -aG docker $USER` and log in again"
)


class Sandbox:
    """A throwaway checkout (Makefile + scripts/) and a PATH folder that holds only granted tools."""

    def __init__(self, base: Path, system: str = "Linux", machine: str = "x86_64") -> None:
        self.repo = base / "repo"
        self.bin = base / "bin"
        self.home = base / "home"
        for d in (self.repo / "scripts", self.repo / "docker", self.bin, self.home):
            d.mkdir(parents=True)
        shutil.copy2(ROOT / "Makefile", self.repo / "Makefile")
        for name in ("dev.sh", "kind-config.yaml"):
            shutil.copy2(ROOT / "scripts" / name, self.repo / "scripts" / name)
        for name in ("requirements.txt", "requirements-dev.txt", "pyproject.toml"):
            shutil.copy2(ROOT / name, self.repo / name)
        shutil.copy2(ROOT / "docker" / "requirements.lock", self.repo / "docker" / "requirements.lock")
        self.link("bash", BASH)
        self.stub("uname", f'case "$1" in -m) echo {machine} ;; *) echo {system} ;; esac')
        self.env = {
            "PATH": str(self.bin),
            "HOME": str(self.home),
            "KUBECONFIG": str(base / "kubeconfig"),  # does not exist: no context is reachable
            "DOCKER_HOST": f"unix://{base / 'no-docker.sock'}",  # nothing listens there
            "DOCKER_CONFIG": str(self.home / ".docker"),
            "LANG": "C",
        }
        self.before = self.snapshot()

    def link(self, name: str, target: str | None) -> None:
        assert target is not None, name
        (self.bin / name).symlink_to(target)

    def stub(self, name: str, body: str) -> None:
        path = self.bin / name
        path.write_text(f"#!{BASH}\n{body}\n")
        path.chmod(0o755)

    def grant_python(self) -> None:
        # The interpreter behind this venv (a pyenv shim in PATH would need pyenv itself).
        self.link("python3", os.path.realpath(sys.executable))

    def run(self, *argv: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv,
            cwd=self.repo,
            env={**self.env, **(extra_env or {})},
            capture_output=True,
            text=True,
            timeout=120,
        )

    def dev(self, *args: str, **kw: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return self.run(BASH, "scripts/dev.sh", *args, **kw)  # type: ignore[arg-type]

    def snapshot(self) -> list[str]:
        return sorted(str(p.relative_to(self.repo)) for p in self.repo.rglob("*"))

    def assert_untouched(self) -> None:
        assert self.snapshot() == self.before, "the script changed the checkout before stopping"


@pytest.fixture
def box(tmp_path: Path) -> Sandbox:
    return Sandbox(tmp_path)


def missing_lines(stderr: str) -> list[str]:
    return [line.split("MISSING  ", 1)[1] for line in stderr.splitlines() if "MISSING  " in line]


def assert_clean_failure(result: subprocess.CompletedProcess[str], count: int, what: str = "make up") -> None:
    assert result.returncode == 2, result
    assert f"{what} stopped before changing anything: {count} prerequisite(s) missing" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


# --- make up on a machine like this one: no pulumi, no docker daemon, no kind ----------------------


@pytest.mark.skipif(MAKE is None, reason="make is not installed")
@pytest.mark.skipif(DOCKER is None, reason="the docker CLI is not installed: this test needs the real client")
@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed: this test needs the real client")
def test_make_up_without_pulumi_docker_daemon_or_kind(box: Sandbox, tmp_path: Path) -> None:
    box.link("make", MAKE)
    box.link("docker", DOCKER)
    box.link("kubectl", KUBECTL)
    box.grant_python()
    result = box.run("make", "up")
    assert_clean_failure(result, 3)
    socket = f"unix://{tmp_path / 'no-docker.sock'}"
    assert missing_lines(result.stderr) == [
        PULUMI_FIX,
        f"docker daemon not reachable (Cannot connect to the Docker daemon at {socket}. Is the docker daemon "
        f"running?): {DAEMON_FIX_LINUX}",
        f"kind not found and kube context kind-lsdb-dev is not reachable: {KIND_HOW_LINUX}",
    ]
    assert "ok       kubectl" in result.stdout
    assert "Fix them and run `make up` again" in result.stderr
    assert "make: *** [Makefile" in result.stderr  # make reports the failed recipe and stops: no venv is built
    box.assert_untouched()


@pytest.mark.skipif(MAKE is None, reason="make is not installed")
def test_make_check_prereqs_reports_every_missing_tool_with_its_install_command(box: Sandbox) -> None:
    box.link("make", MAKE)
    result = box.run("make", "check-prereqs")
    assert_clean_failure(result, 5)
    assert missing_lines(result.stderr) == [
        PULUMI_FIX,
        DOCKER_FIX_LINUX,
        KUBECTL_FIX_LINUX,
        f"kind not found: {KIND_HOW_LINUX}",
        "python3 not found: install Python 3.11 (Debian/Ubuntu: `sudo apt-get install python3 python3-venv`; "
        "macOS: `brew install python@3.11`), or run make with PY=/path/to/python3.11",
    ]
    box.assert_untouched()


def test_macos_instructions(tmp_path: Path) -> None:
    box = Sandbox(tmp_path, system="Darwin", machine="arm64")
    box.grant_python()
    result = box.dev("up")
    assert_clean_failure(result, 4)
    assert missing_lines(result.stderr) == [
        PULUMI_FIX + ", or `brew install pulumi/tap/pulumi`",
        "docker not found: install Docker Desktop with `brew install --cask docker` (or from "
        "https://docs.docker.com/desktop/) and start it",
        "kubectl not found: install with `brew install kubectl`",
        "kind not found: install it with `brew install kind` so `make up` can create the lsdb-dev cluster",
    ]
    box.assert_untouched()


def test_arm64_linux_gets_arm64_downloads(tmp_path: Path) -> None:
    box = Sandbox(tmp_path, machine="aarch64")
    box.grant_python()
    lines = missing_lines(box.dev("check").stderr)
    assert "/bin/linux/arm64/kubectl" in lines[2]
    assert "kind-linux-arm64" in lines[3]


def test_python_without_venv_support_is_reported(box: Sandbox) -> None:
    # Python 3.11 whose `import venv, ensurepip` fails, as on Debian without python3-venv.
    box.stub("python3", 'case "$2" in *version_info*) echo 3.11 ;; *) exit 1 ;; esac')
    lines = missing_lines(box.dev("check").stderr)
    assert (
        lines[-1]
        == "python3 cannot create virtualenvs (no ensurepip): install it with `sudo apt-get install python3-venv`"
    )


def test_python_of_another_minor_is_reported_before_anything_is_created(box: Sandbox) -> None:
    # The locks are for Python 3.11: a 3.12 would create the registry and cluster, then fail `pulumi up`.
    box.stub("python3", 'case "$2" in *version_info*) echo 3.12 ;; *) exit 0 ;; esac')
    lines = missing_lines(box.dev("check").stderr)
    assert lines[-1].startswith("python3 is Python 3.12, but the locks are for Python 3.11: install Python 3.11")
    box.assert_untouched()


@pytest.mark.skipif(MAKE is None, reason="make is not installed")
def test_make_test_with_python_of_another_minor_stops_before_creating_the_venv(box: Sandbox) -> None:
    box.stub("python3", 'case "$2" in *version_info*) echo 3.12 ;; *) exit 0 ;; esac')
    box.link("make", MAKE)
    result = box.run("make", "test")
    assert result.returncode != 0
    lines = missing_lines(result.stderr)
    assert lines == [
        "python3 is Python 3.12, but the locks are for Python 3.11: install Python 3.11 and run make with "
        "PY=/path/to/python3.11 (or `rm -rf .venv` if the virtualenv was made with another Python)"
    ]
    assert "stopped before creating the virtualenv" in result.stderr
    box.assert_untouched()


def test_the_python_minor_the_check_wants_is_the_images() -> None:
    from components.config import ImageConfig

    pyproject = (ROOT / "pyproject.toml").read_text()
    image_minor = ".".join(ImageConfig.model_fields["python_version"].default.split(".")[:2])
    assert f'requires-python = ">={image_minor},' in pyproject


# --- what passes the checks ----------------------------------------------------------------------


def test_check_passes_when_every_tool_is_there(box: Sandbox) -> None:
    """pulumi, docker, kubectl and kind stand in as executables that succeed; the script's checks run for real."""
    for tool in ("docker", "kubectl"):
        box.stub(tool, "exit 0")
    box.stub("pulumi", "echo v3.140.0")
    box.stub("kind", "echo kind v0.27.0 go1.23.6 linux/amd64")
    box.grant_python()
    result = box.dev("check")
    assert result.returncode == 0, result.stderr
    assert "all prerequisites found" in result.stdout
    assert "ok       pulumi v3.140.0" in result.stdout
    assert result.stderr == ""
    box.assert_untouched()


def test_pulumi_other_than_3_x_is_reported(box: Sandbox) -> None:
    box.stub("pulumi", "echo v2.25.2")
    box.grant_python()
    lines = missing_lines(box.dev("check").stderr)
    assert lines[0] == "pulumi v2.25.2 is not Pulumi 3.x: install 3.x with `curl -fsSL https://get.pulumi.com | sh`"
    box.assert_untouched()


def test_kind_node_image_older_than_1_25_is_reported(box: Sandbox) -> None:
    box.stub("kind", "echo kind v0.27.0 go1.23.6 linux/amd64")
    box.grant_python()
    result = box.dev("check", extra_env={"KIND_NODE_IMAGE": "kindest/node:v1.24.7"})
    assert (
        "KIND_NODE_IMAGE kindest/node:v1.24.7 is Kubernetes v1.24; the program needs v1.25 or later: `make down`, "
        "then `make up` with kind's default node image (or KIND_NODE_IMAGE=kindest/node:v1.25.0 or later)"
    ) in missing_lines(result.stderr)
    ok = box.dev("check", extra_env={"KIND_NODE_IMAGE": "kindest/node:v1.32.2"})
    assert "ok       Kubernetes v1.32 (KIND_NODE_IMAGE kindest/node:v1.32.2)" in ok.stdout


def test_kind_whose_default_node_is_older_than_1_25_is_reported(box: Sandbox) -> None:
    box.stub("kind", "echo kind v0.16.0 go1.19.1 linux/amd64")
    box.grant_python()
    lines = missing_lines(box.dev("check").stderr)
    assert any(
        line.startswith("kind v0.16.0 creates clusters older than Kubernetes v1.25 by default") for line in lines
    )


class _ReadyzHandler(http.server.BaseHTTPRequestHandler):
    minor = "32"  # the Kubernetes version /version reports, v1.<minor>

    def do_GET(self) -> None:
        version = f'{{\n  "major": "1",\n  "minor": "{self.minor}",\n  "gitVersion": "v1.{self.minor}.2"\n}}'
        answers = {"/readyz": b"ok", "/version": version.encode()}
        body = answers.get(self.path.split("?")[0], b"not found")
        self.send_response(200 if self.path.split("?")[0] in answers else 404)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def api_server(request: pytest.FixtureRequest) -> Iterator[str]:
    """A loopback HTTP endpoint answering /readyz and /version, the API calls the kube-context checks make."""
    handler = type("Handler", (_ReadyzHandler,), {"minor": getattr(request, "param", "32")})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed: this test runs the real client")
def test_without_kind_a_reachable_kind_lsdb_dev_context_is_enough(
    box: Sandbox, tmp_path: Path, api_server: str
) -> None:
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kind-lsdb-dev", "cluster": {"server": api_server}}],
        "users": [{"name": "kind-lsdb-dev", "user": {}}],
        "contexts": [{"name": "kind-lsdb-dev", "context": {"cluster": "kind-lsdb-dev", "user": "kind-lsdb-dev"}}],
    }
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(kubeconfig))
    box.link("kubectl", KUBECTL)
    box.stub("pulumi", "echo v3.140.0")
    box.stub("docker", "exit 0")
    box.grant_python()
    result = box.dev("check")
    assert result.returncode == 0, result.stderr
    assert "ok       kube context kind-lsdb-dev reachable (kind not installed: using that cluster as it is)" in (
        result.stdout
    )
    assert "ok       Kubernetes v1.32 (kube context kind-lsdb-dev)" in result.stdout


@pytest.mark.skipif(KUBECTL is None, reason="this test runs the real client")
@pytest.mark.parametrize("api_server", ["24"], indirect=True)
def test_a_reachable_context_older_than_1_25_is_reported(box: Sandbox, tmp_path: Path, api_server: str) -> None:
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kind-lsdb-dev", "cluster": {"server": api_server}}],
        "users": [{"name": "kind-lsdb-dev", "user": {}}],
        "contexts": [{"name": "kind-lsdb-dev", "context": {"cluster": "kind-lsdb-dev", "user": "kind-lsdb-dev"}}],
    }
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(kubeconfig))
    box.link("kubectl", KUBECTL)
    box.grant_python()
    lines = missing_lines(box.dev("check").stderr)
    assert any(
        line.startswith("kube context kind-lsdb-dev is Kubernetes v1.24; the program needs v1.25") for line in lines
    )
    box.assert_untouched()


def test_cluster_subcommand_does_not_need_pulumi(box: Sandbox) -> None:
    box.grant_python()
    lines = missing_lines(box.dev("cluster").stderr)
    assert not any(line.startswith("pulumi not found") for line in lines)
    assert lines[0] == DOCKER_FIX_LINUX


# --- make down -----------------------------------------------------------------------------------


@pytest.mark.skipif(MAKE is None, reason="make is not installed")
@pytest.mark.skipif(DOCKER is None, reason="the docker CLI is not installed: this test needs the real client")
def test_make_down_without_docker_daemon(box: Sandbox, tmp_path: Path) -> None:
    box.link("make", MAKE)
    box.link("docker", DOCKER)
    result = box.run("make", "down")
    assert_clean_failure(result, 1, what="make down")
    assert f"no dev stack recorded in file://{box.repo}/.pulumi-state" in result.stdout
    socket = f"unix://{tmp_path / 'no-docker.sock'}"
    assert missing_lines(result.stderr) == [
        f"docker daemon not reachable (Cannot connect to the Docker daemon at {socket}. Is the docker daemon "
        f"running?): {DAEMON_FIX_LINUX} (needed to remove the lsdb-dev kind cluster and the kind-registry registry)"
    ]
    box.assert_untouched()


def test_down_needs_pulumi_when_the_local_state_holds_the_dev_stack(box: Sandbox) -> None:
    stacks = box.repo / ".pulumi-state" / ".pulumi" / "stacks" / "lsdb-k8s"
    stacks.mkdir(parents=True)
    (stacks / "dev.json").write_text("{}")
    box.before = box.snapshot()
    result = box.dev("down")
    assert_clean_failure(result, 1, what="make down")
    assert missing_lines(result.stderr) == [PULUMI_FIX + " (needed to destroy the dev stack)"]
    box.assert_untouched()


def test_down_with_nothing_to_remove_succeeds(box: Sandbox) -> None:
    result = box.dev("down")
    assert result.returncode == 0, result.stderr
    assert "docker not installed: no kind cluster or registry to remove" in result.stdout
    assert "dev environment removed" in result.stdout
    box.assert_untouched()


def test_unknown_subcommand_prints_usage(box: Sandbox) -> None:
    result = box.dev("deploy")
    assert result.returncode == 64
    assert "scripts/dev.sh up" in result.stderr


# --- the dev environment matches the dev stack ---------------------------------------------------


def script_default(name: str) -> str:
    match = re.search(rf'^{name}="\$\{{{name}:-([^}}]*)\}}"$', (ROOT / "scripts" / "dev.sh").read_text(), re.M)
    assert match, name
    return match.group(1)


def test_kind_cluster_enforces_the_restricted_pod_security_standard() -> None:
    text = (ROOT / "scripts" / "kind-config.yaml").read_text().replace("__POD_SECURITY_DIR__", str(ROOT / "scripts"))
    (node,) = yaml.safe_load(text.replace("__CATALOG_DIR__", "/tmp/c"))["nodes"]
    patch = yaml.safe_load(node["kubeadmConfigPatches"][0])
    config_file = patch["apiServer"]["extraArgs"]["admission-control-config-file"]
    (volume,) = patch["apiServer"]["extraVolumes"]
    (mount,) = [m for m in node["extraMounts"] if m["containerPath"] == volume["hostPath"]]
    # The file the API server reads is scripts/pod-security.yaml, through the node mount and the static pod volume.
    assert Path(mount["hostPath"], Path(config_file).name) == ROOT / "scripts" / "pod-security.yaml"
    assert config_file.startswith(volume["mountPath"] + "/")
    admission = yaml.safe_load((ROOT / "scripts" / "pod-security.yaml").read_text())
    (plugin,) = admission["plugins"]
    assert plugin["name"] == "PodSecurity"
    defaults = plugin["configuration"]["defaults"]
    assert (defaults["enforce"], defaults["audit"], defaults["warn"]) == ("restricted",) * 3
    assert set(plugin["configuration"]["exemptions"]["namespaces"]) == {"kube-system", "local-path-storage"}
    script = (ROOT / "scripts" / "dev.sh").read_text()
    assert "__POD_SECURITY_DIR__" in script and "__CATALOG_DIR__" in script


def test_make_up_refreshes_before_it_deploys() -> None:
    # idleTimeoutSeconds: the operator deletes the DaskCluster itself; --refresh lets the same `pulumi up` recreate it.
    script = (ROOT / "scripts" / "dev.sh").read_text()
    assert re.search(r'^\s*pulumi up --stack "\$STACK" --refresh --yes', script, re.M)


def test_kind_config_mounts_the_catalog_where_the_dev_stack_reads_it(tmp_path: Path) -> None:
    catalog_dir = tmp_path / "catalogs"
    text = (ROOT / "scripts" / "kind-config.yaml").read_text().replace("__CATALOG_DIR__", str(catalog_dir))
    kind = yaml.safe_load(text)
    assert kind["kind"] == "Cluster" and kind["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert 'config_path = "/etc/containerd/certs.d"' in kind["containerdConfigPatches"][0]
    (node,) = kind["nodes"]
    assert node["extraMounts"][0] == {"hostPath": str(catalog_dir), "containerPath": "/lsdb-catalogs"}

    dev = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]
    storage = dev["lsdb-k8s:storage"]
    assert storage["kind"] == "hostPath"
    assert storage["hostPath"]["path"] == "/lsdb-catalogs"
    mount_path = storage.get("mountPath", "/data")
    assert dev["lsdb-k8s:verify"]["catalogPath"] == f"{mount_path}/sample"  # make up seeds <catalog dir>/sample
    assert dev["lsdb-k8s:kubeContext"] == f"kind-{script_default('KIND_CLUSTER')}"
    assert dev["lsdb-k8s:image"]["repository"].startswith(f"localhost:{script_default('REGISTRY_PORT')}/")
    assert 'NODE_CATALOG_PATH="/lsdb-catalogs"' in (ROOT / "scripts" / "dev.sh").read_text()


def test_makefile_keeps_venv_lint_test_and_adds_the_dev_targets() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in ("venv", "lint", "test", "up", "down", "check-prereqs", "policy-venv", "moto-venv"):
        assert re.search(rf"^{re.escape(target)}:", makefile, re.M), target
    # moto-venv: the object-store tests' S3 server, in its own virtualenv (tools/object_servers.py).
    test = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    # The Python check first (before any virtualenv), then lint and the suite, which holds the scan: checkov's
    # virtualenv is made before it, and LSDB_REQUIRE_CHECKOV makes a missing checkov fail the scan's tests
    # (tests/test_matrix.py runs scripts/scan.py's targets) instead of skipping them.
    assert test.splitlines()[0].split() == ["check-python", "lint", "moto-venv", "scan-venv"]
    assert test.splitlines()[1:] == [f"\t{REQUIRE_CHECKOV}=1 $(VENV)/bin/python -m pytest"]
    up = makefile.split("\nup:\n", 1)[1].split("\n\n", 1)[0]
    # The check runs first, before anything (the virtualenv included) is created.
    assert up.splitlines()[0].endswith("bash scripts/dev.sh check")
    assert "venv" in up.splitlines()[1]


@pytest.mark.skipif(MAKE is None, reason="make is not installed")
def test_make_dry_run_lists_the_steps_in_order() -> None:
    # Outside the parent make's environment (under `make test`, MAKELEVEL adds "Entering directory" lines).
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    result = subprocess.run(
        [MAKE, "--no-print-directory", "-n", "up"], cwd=ROOT, capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr
    steps = [line for line in result.stdout.splitlines() if line.strip()]
    assert "scripts/dev.sh check" in steps[0]
    assert "scripts/dev.sh up" in steps[-1]


# --- the steps of `make up` that need no Docker, run for real from the sourced script --------------


def source_and_run(snippet: str, **env: str) -> subprocess.CompletedProcess[str]:
    assert BASH is not None
    return subprocess.run(
        [BASH, "-c", f'source "{ROOT}/scripts/dev.sh" && {snippet}'],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_rendered_kind_config_mounts_the_absolute_catalog_folder(tmp_path: Path) -> None:
    catalog_dir = tmp_path / "my catalogs"
    result = source_and_run("render_kind_config", CATALOG_DIR=str(catalog_dir))
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load(result.stdout)
    assert rendered["nodes"][0]["extraMounts"] == [
        {"hostPath": str(catalog_dir), "containerPath": "/lsdb-catalogs"},
        {"hostPath": str(ROOT / "scripts"), "containerPath": "/etc/lsdb-pod-security", "readOnly": True},
    ]
    assert "__CATALOG_DIR__" not in result.stdout and "__POD_SECURITY_DIR__" not in result.stdout


@pytest.mark.skipif(not (ROOT / ".venv" / "bin" / "python").exists(), reason="needs the project virtualenv (make venv)")
def test_seed_catalog_writes_a_real_hats_catalog_once(tmp_path: Path) -> None:
    catalog_dir = tmp_path / "catalogs"
    first = source_and_run("seed_catalog", CATALOG_DIR=str(catalog_dir), SAMPLE_ROWS="3000")
    assert first.returncode == 0, first.stderr
    assert "writing a 3000-row sample HATS catalog" in first.stdout
    sample = catalog_dir / "sample"
    assert sorted(p.name for p in catalog_dir.iterdir()) == ["sample"]  # no partial write left behind
    files = {p: p.stat().st_mtime_ns for p in sample.rglob("*")}

    second = source_and_run("seed_catalog", CATALOG_DIR=str(catalog_dir), SAMPLE_ROWS="3000")
    assert second.returncode == 0, second.stderr
    assert f"sample catalog present in {sample}" in second.stdout
    assert {p: p.stat().st_mtime_ns for p in sample.rglob("*")} == files

    # What the verification opens at /data/sample: the collection, read back with lsdb.
    check = subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "python"),
            "-c",
            "import sys, lsdb; c = lsdb.open_catalog(sys.argv[1]); print(len(c.compute()))",
            str(sample),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert check.returncode == 0, check.stderr
    assert check.stdout.split()[-1] == "3000"
