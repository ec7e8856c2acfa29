"""Run the notebook's rendered pod (components/notebook.py) as local processes, as tools/pod_emulator.py runs Dask's.

`EmulatedNotebook(deployment, workdir, cluster=..., claims=..., secrets=...)` takes the Deployment `pulumi up` would
create and runs its init container, then its container, each with the kubelet's `$(VAR)` expansion, a clean
environment (the image's ENV, PATH, HOME, then the container's env), its volumes as local directories (a PVC: the
directory given in `claims`; a Secret: its keys as files from `secrets`; an emptyDir: a fresh one; the image's own
`/opt/lsdb-notebook`, which the notebook target COPYs from docker/notebook/), and the Service addresses of the
emulated Dask cluster mapped to its local ports (`EmulatedCluster.address_table`), in each whole value. The image's
PATH is this venv restricted to the console scripts of docker/requirements.lock plus
docker/notebook-requirements.lock: a command the notebook target does not install fails as in the container.
Jupyter's port (`--ServerApp.port`) becomes a free local port, and its `--ServerApp.ip` loopback (the pod's
interfaces are not this machine's); run as root (a CI container), `--allow-root` is added: the pod runs as 10001.

`run_cells(url, token, cells)` executes code through the Jupyter server's own API: a kernel started with
`POST /api/kernels`, each cell sent as an `execute_request` on the kernel's websocket (`/api/kernels/<id>/channels`,
the protocol JupyterLab speaks), outputs gathered from iopub until the kernel is idle.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import importlib.metadata
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.lock import PROJECT_DIR, canonical, read_lock
from tools.emulated_image import VENV_BIN, expand, image_dirs, image_env
from tools.local_dask import free_port, stop_process_groups
from tools.pod_emulator import LOOPBACK, EmulatedCluster, EmulationError, local_volume, map_path, replace_names

NOTEBOOK_LOCK = PROJECT_DIR / "docker" / "notebook-requirements.lock"
# What the notebook target COPYs into the image (docker/Dockerfile): image path -> build-context directory.
IMAGE_FILES = {"/opt/lsdb-notebook": PROJECT_DIR / "docker" / "notebook"}
PORT_FLAG = "--ServerApp.port"
IP_FLAG = "--ServerApp.ip"


@functools.cache
def notebook_executables() -> dict[str, Path]:
    """Programs on the notebook image's PATH: console scripts of both locks' distributions, as installed here."""
    locked = {**read_lock(), **read_lock(NOTEBOOK_LOCK)}
    names = {"python", "python3", "pip"}
    for dist in importlib.metadata.distributions():
        if canonical(dist.metadata["Name"] or "") in locked:
            names.update(ep.name for ep in dist.entry_points if ep.group == "console_scripts")
    return {n: VENV_BIN / n for n in names if (VENV_BIN / n).is_file()}


def resolve(name: str) -> Path:
    path = notebook_executables().get(name) if "/" not in name else None
    if path is None:
        raise FileNotFoundError(errno.ENOENT, f'exec: "{name}": executable file not found in $PATH', name)
    return path


@dataclass
class Container:
    spec: dict[str, Any]
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None


class EmulatedNotebook:
    """The notebook Deployment's pod as local processes (see the module docstring). A context manager."""

    def __init__(
        self,
        deployment: Mapping[str, Any],
        workdir: Path,
        cluster: EmulatedCluster | None = None,
        claims: Mapping[str, Path] | None = None,
        secrets: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.deployment = json.loads(json.dumps(deployment))
        self.namespace: str = self.deployment["metadata"]["namespace"]
        self.root = Path(workdir)
        self.claims = {k: Path(v) for k, v in (claims or {}).items()}
        self.secrets = {k: dict(v) for k, v in (secrets or {}).items()}
        self.port = free_port()
        self.table = cluster.address_table(self.namespace) if cluster is not None else {}
        pod = self.deployment["spec"]["template"]["spec"]
        self.volumes = self._volumes(pod.get("volumes", []))
        self.init = [self._build(c) for c in pod.get("initContainers", [])]
        self.containers = [self._build(c) for c in pod["containers"]]
        self.log = self.root / "notebook.log"

    def _volumes(self, volumes: Sequence[Mapping[str, Any]]) -> dict[str, Path]:
        root = self.root / "volumes"
        return {v["name"]: local_volume(v, root / v["name"], self.claims, self.secrets) for v in volumes}

    def _build(self, spec: Mapping[str, Any]) -> Container:
        mounts = {m["mountPath"]: self.volumes[m["name"]] for m in spec.get("volumeMounts", [])}
        workdir, made = image_dirs()
        home = mounts.setdefault(workdir, self.root / "image-home")
        for directory in made:
            mounts.setdefault(directory, self.root / "image" / directory.lstrip("/"))
        for path in mounts.values():
            path.mkdir(parents=True, exist_ok=True)
        mounts |= {k: v for k, v in IMAGE_FILES.items() if k not in mounts}
        tmp = mounts.get("/tmp", self.root / "tmp")
        emulator = {"PATH": f"{VENV_BIN}:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(home), "TMPDIR": str(tmp)}
        env = image_env() | emulator
        for item in spec.get("env", []):
            env[item["name"]] = self._env_value(item, env)

        def mapped(value: str) -> str:
            return map_path(replace_names(value, self.table), mounts)

        argv = [mapped(expand(str(a), env)) for a in [*spec.get("command", []), *spec.get("args", [])]]
        argv = [
            f"{PORT_FLAG}={self.port}" if a.startswith(f"{PORT_FLAG}=") else f"{IP_FLAG}={LOOPBACK}"
            if a.startswith(f"{IP_FLAG}=") else a
            for a in argv
        ]  # fmt: skip
        if os.geteuid() == 0 and argv[:1] == ["jupyter-lab"]:
            argv.append("--allow-root")
        return Container(dict(spec), argv, {k: v if k in emulator else mapped(v) for k, v in env.items()})

    def _env_value(self, item: Mapping[str, Any], env: Mapping[str, str]) -> str:
        if "value" in item:
            return expand(str(item["value"]), env)
        ref = (item.get("valueFrom") or {}).get("secretKeyRef") or {}
        if ref.get("key") in self.secrets.get(str(ref.get("name")), {}):
            return self.secrets[ref["name"]][ref["key"]]
        raise EmulationError(f"env {item['name']} from {item.get('valueFrom')} is not available to the emulator")

    def _popen(self, c: Container, log: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            c.argv, executable=str(resolve(c.argv[0])), env=c.env, cwd=c.env["HOME"], stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
        )  # fmt: skip

    def start(self, timeout: float = 60.0) -> EmulatedNotebook:
        """`launch`, then `wait_ready`."""
        self.launch(timeout)
        return self.wait_ready(timeout)

    def launch(self, timeout: float = 60.0) -> None:
        """Run the init containers to completion, then start the container (without waiting for it)."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            for c in self.init:
                code = self._popen(c, log).wait(timeout)
                if code != 0:
                    raise EmulationError(f"init container {c.spec['name']} exited {code}:\n{self.logs()}")
            for c in self.containers:
                c.process = self._popen(c, log)

    def wait_ready(self, timeout: float = 60.0) -> EmulatedNotebook:
        """Wait for the container's readinessProbe; raise if it exits first."""
        deadline = time.monotonic() + timeout
        while not self.ready():
            if any(c.process is not None and c.process.poll() is not None for c in self.containers):
                raise EmulationError(f"the notebook exited before it was ready:\n{self.logs()}")
            if time.monotonic() > deadline:
                raise EmulationError(f"the notebook was not ready after {timeout}s:\n{self.logs()}")
            time.sleep(0.2)
        return self

    def ready(self) -> bool:
        probe = self.containers[0].spec["readinessProbe"]["httpGet"]
        try:
            with urllib.request.urlopen(f"{self.url}{probe['path']}", timeout=2) as resp:
                return bool(200 <= resp.status < 400)
        except (urllib.error.URLError, OSError):
            return False

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-6000:] if self.log.exists() else ""

    def stop(self) -> None:
        stop_process_groups([c.process for c in self.containers if c.process is not None], grace=5.0)

    def __enter__(self) -> EmulatedNotebook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def api(url: str, token: str, path: str, method: str = "GET", body: Any = None) -> Any:
    """One call of the Jupyter server's REST API with the token (a 403 without it)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}{path}", data=data, method=method)
    request.add_header("Authorization", f"token {token}")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.loads(resp.read() or b"null")


def _message(code: str, session: str) -> dict[str, Any]:
    msg_id = uuid.uuid4().hex
    header = {"msg_id": msg_id, "msg_type": "execute_request", "session": session, "username": "", "version": "5.3",
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
    content = {"code": code, "silent": False, "store_history": True, "user_expressions": {}, "allow_stdin": False,
               "stop_on_error": True}  # fmt: skip
    return {"header": header, "parent_header": {}, "metadata": {}, "content": content, "channel": "shell",
            "buffers": []}  # fmt: skip


def run_cells(url: str, token: str, cells: Sequence[str], timeout: float = 120.0) -> list[list[dict[str, Any]]]:
    """Execute each cell in one new kernel of the server, in order; each cell's outputs (iopub `stream`,
    `execute_result`, `display_data`, `error` contents, with their `msg_type`). Stops at the first error."""
    import websocket  # websocket-client

    kernel = api(url, token, "/api/kernels", "POST", {"name": "python3"})
    ws_url = f"{url.replace('http://', 'ws://')}/api/kernels/{kernel['id']}/channels"
    ws = websocket.create_connection(ws_url, header=[f"Authorization: token {token}"], timeout=timeout)
    session, results = uuid.uuid4().hex, []
    try:
        for code in cells:
            message = _message(code, session)
            ws.send(json.dumps(message))
            outputs: list[dict[str, Any]] = []
            idle = replied = False
            deadline = time.monotonic() + timeout
            while not (idle and replied):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"cell did not finish within {timeout}s: {code[:80]!r}")
                reply = json.loads(ws.recv())
                if reply.get("parent_header", {}).get("msg_id") != message["header"]["msg_id"]:
                    continue
                kind = reply["msg_type"]
                if kind == "status" and reply["content"]["execution_state"] == "idle":
                    idle = True
                elif kind == "execute_reply":
                    replied = True
                elif kind in ("stream", "execute_result", "display_data", "error"):
                    outputs.append({"msg_type": kind, **reply["content"]})
            results.append(outputs)
            if any(o["msg_type"] == "error" for o in outputs):
                break
    finally:
        ws.close()
        with contextlib.suppress(urllib.error.URLError):
            api(url, token, f"/api/kernels/{kernel['id']}", "DELETE")
    return results
