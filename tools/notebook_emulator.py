"""Run the notebook's rendered pod (components/notebook.py) as local processes, as tools/pod_emulator.py runs Dask's.

`EmulatedNotebook(deployment, workdir, cluster=..., claims=..., secrets=...)` is the Deployment `pulumi up` would
create as an `EmulatedPod` of the image's notebook target: its init container, then its container, with the emulated
Dask cluster's Service addresses (`EmulatedCluster.address_table`); the target's PATH adds the console scripts of
docker/notebook-requirements.lock, and its `/opt/lsdb-notebook` is docker/notebook/. Jupyter's port
(`--ServerApp.port`) is a free local port, and its `--ServerApp.ip` loopback (the pod's interfaces are not this
machine's); run as root (a CI container), `--allow-root` is added: the pod runs as 10001.

`run_cells(url, token, cells)` executes code through the Jupyter server's own API: a kernel started with
`POST /api/kernels`, each cell sent as an `execute_request` on the kernel's websocket (`/api/kernels/<id>/channels`,
the protocol JupyterLab speaks), outputs gathered from iopub until the kernel is idle.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tools.emulated_image import resolve_executable
from tools.pod_emulator import LOOPBACK, EmulatedCluster, EmulatedPod

IP_FLAG = "--ServerApp.ip"


def resolve(name: str) -> Path:
    """Where the notebook image would find `name` (FileNotFoundError when it has none)."""
    return resolve_executable(name, "notebook")


class EmulatedNotebook(EmulatedPod):
    """The notebook Deployment's pod as local processes (see the module docstring). A context manager."""

    def __init__(
        self,
        deployment: Mapping[str, Any],
        workdir: Path,
        cluster: EmulatedCluster | None = None,
        claims: Mapping[str, Path] | None = None,
        secrets: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        super().__init__(deployment, workdir, cluster, claims, secrets, target="notebook")
        self.build(cluster.address_table(self.namespace) if cluster is not None else {})
        for c in self.containers:
            c.argv = [f"{IP_FLAG}={LOOPBACK}" if a.startswith(f"{IP_FLAG}=") else a for a in c.argv]
            if os.geteuid() == 0 and c.argv[:1] == ["jupyter-lab"]:
                c.argv.append("--allow-root")
        probe = self.containers[0].spec["readinessProbe"]["httpGet"]
        self.url = f"http://{LOOPBACK}:{self.local_port(probe['port'])}"

    launch = EmulatedPod.start  # the init containers to completion, then the container (without waiting for it)

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
