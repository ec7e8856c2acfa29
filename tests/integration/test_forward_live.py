"""tools.forward against a real cluster, with its real kr8s seams: a Service whose selector the test switches from
an "old" to a "new" pod (each answers its own name on the named port tcp-comm, like a scheduler on 8786), as the
upgrade's selector patch does. Needs kubectl and the dev kind cluster's context (`make up`), and the nodes must
be able to pull python:3.11-slim; skips otherwise."""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tools.forward import Kr8sService, ServiceForwarder

CONTEXT = "kind-lsdb-dev"
PORT = 8786
SERVER = (
    "import os, socketserver\n"
    "class H(socketserver.BaseRequestHandler):\n"
    "    def handle(self): self.request.sendall(os.environ['NAME'].encode())\n"
    f"socketserver.ThreadingTCPServer(('', {PORT}), H).serve_forever()\n"
)


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", "--context", CONTEXT, *args], input=stdin, capture_output=True, text=True, timeout=300, check=check
    )


def missing() -> str | None:
    if shutil.which("kubectl") is None:
        return "kubectl not found"
    probe = kubectl("version", check=False)
    if probe.returncode != 0:
        return f"kube context {CONTEXT} not reachable (make up): {probe.stderr.strip()[:200]}"
    return None


REASON = missing()
pytestmark = [pytest.mark.integration, pytest.mark.skipif(REASON is not None, reason=str(REASON))]


def pod(name: str, namespace: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"test/pod": name}},
        "spec": {
            "containers": [
                {
                    "name": "server",
                    "image": "python:3.11-slim",
                    "command": ["python", "-c", SERVER],
                    "env": [{"name": "NAME", "value": name}],
                    "ports": [{"name": "tcp-comm", "containerPort": PORT}],
                }
            ]
        },
    }


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"forward-it-{secrets.token_hex(3)}"
    kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        kubectl("delete", "namespace", name, "--ignore-not-found", "--wait=false", check=False)


def select(namespace: str, name: str) -> None:
    patch = {"spec": {"selector": {"test/pod": name}}}
    kubectl("patch", "service", "scheduler", "-n", namespace, "--type=merge", "-p", json.dumps(patch))


async def answer(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        return await asyncio.wait_for(reader.read(100), 30)
    finally:
        writer.close()


def test_new_connections_follow_the_selector_and_survive_the_old_pod_going(namespace: str) -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "scheduler", "namespace": namespace},
        "spec": {"ports": [{"name": "tcp-comm", "port": PORT, "targetPort": "tcp-comm"}]},
    }
    for obj in (service, pod("old", namespace), pod("new", namespace)):
        kubectl("apply", "-f", "-", stdin=json.dumps(obj))
    kubectl("wait", "-n", namespace, "--for=condition=Ready", "pod/old", "pod/new", "--timeout=240s")

    async def scenario() -> None:
        kube = Kr8sService(namespace, "scheduler", CONTEXT)
        forwarder = ServiceForwarder(kube.resolve, kube.connect, {0: PORT})
        port = (await forwarder.start())[PORT]
        try:
            select(namespace, "old")
            assert await answer(port) == b"old"
            select(namespace, "new")
            assert await answer(port) == b"new"
            kubectl("delete", "pod", "old", "-n", namespace, "--wait=true")
            assert await answer(port) == b"new"
        finally:
            await forwarder.close()

    asyncio.run(scenario())
