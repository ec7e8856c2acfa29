"""tools.forward follows the stable Service across an upgrade (issue 20, defect 9), without a cluster: two local TCP
servers stand for the old and the new scheduler pod, `resolve` reads a selector the test switches, and `connect`
opens a plain TCP stream to the chosen "pod"."""

from __future__ import annotations

import asyncio
import json
import shlex
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from tools.forward import Endpoint, ServiceForwarder, parse_args, pod_ports, ready_pod, stack_target

SERVICE_PORT = 8786


class Scheduler:
    """A TCP server answering each read with `<name>:<data>`; `stop()` is its pod going (connections cut)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> Scheduler:
        self.server = await asyncio.start_server(self._echo, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _echo(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        while data := await reader.read(1024):
            writer.write(self.name.encode() + b":" + data)
            await writer.drain()
        writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()


class Cluster:
    """The stable Service: `selected` names the scheduler its selector points at (None: nothing selected)."""

    def __init__(self, *schedulers: Scheduler) -> None:
        self.pods = {s.name: s for s in schedulers}
        self.selected: str | None = None
        self.refuse_next: int = 0  # connects that fail as if the pod went between lookup and connect
        self.log: list[str] = []

    async def resolve(self) -> Endpoint | None:
        if self.selected is None:
            return None
        pod = self.pods[self.selected]
        return Endpoint(pod.name, pod, {SERVICE_PORT: pod.port})

    @asynccontextmanager
    async def connect(self, pod: Scheduler, port: int) -> AsyncIterator[tuple[Any, Any]]:
        assert port == pod.port  # the Service port was mapped to the pod's
        if self.refuse_next:
            self.refuse_next -= 1
            raise ConnectionRefusedError(f"pod {pod.name} is gone")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            yield reader, writer
        finally:
            writer.close()

    def forwarder(self) -> ServiceForwarder:
        return ServiceForwarder(self.resolve, self.connect, {0: SERVICE_PORT}, log=self.log.append, retry_pause=0.01)


async def ask(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], text: bytes) -> bytes:
    conn[1].write(text)
    await conn[1].drain()
    return await asyncio.wait_for(conn[0].read(1024), 5)


async def dial(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


def test_new_connections_follow_the_selector_switch_and_survive_the_old_pod_going() -> None:
    async def scenario() -> None:
        old, new = await Scheduler("old").start(), await Scheduler("new").start()
        cluster = Cluster(old, new)
        cluster.selected = "old"
        forwarder = cluster.forwarder()
        port = (await forwarder.start())[SERVICE_PORT]
        try:
            before = await dial(port)
            assert await ask(before, b"ping") == b"old:ping"

            cluster.selected = "new"  # the upgrade's selector patch
            after = await dial(port)
            assert await ask(after, b"ping") == b"new:ping"
            assert await ask(before, b"again") == b"old:again"  # an open connection stays where it was

            await old.stop()  # the old cluster is deleted
            assert await asyncio.wait_for(before[0].read(1024), 5) == b""  # its connections end with it
            again = await dial(port)  # the client reconnects: the forwarder is still there
            assert await ask(again, b"ping") == b"new:ping"
            assert await ask(after, b"still") == b"new:still"
            assert "now forwarding to pod new" in cluster.log
        finally:
            await forwarder.close()
            await new.stop()

    asyncio.run(scenario())


def test_no_selected_pod_closes_the_connection_and_the_forwarder_goes_on() -> None:
    async def scenario() -> None:
        first = await Scheduler("first").start()
        cluster = Cluster(first)  # the Service selects nothing yet: no cluster verified
        forwarder = cluster.forwarder()
        port = (await forwarder.start())[SERVICE_PORT]
        try:
            early = await dial(port)
            assert await asyncio.wait_for(early[0].read(1024), 5) == b""
            assert any("selects no Ready scheduler pod" in line for line in cluster.log)
            cluster.selected = "first"
            assert await ask(await dial(port), b"ping") == b"first:ping"
        finally:
            await forwarder.close()
            await first.stop()

    asyncio.run(scenario())


def test_a_failed_connect_looks_the_pod_up_again() -> None:
    async def scenario() -> None:
        old, new = await Scheduler("old").start(), await Scheduler("new").start()
        cluster = Cluster(old, new)
        cluster.selected = "old"
        forwarder = cluster.forwarder()
        port = (await forwarder.start())[SERVICE_PORT]

        real_resolve = cluster.resolve

        async def switching_resolve() -> Endpoint | None:
            endpoint = await real_resolve()
            cluster.selected = "new"  # the switch lands between this lookup and the connect
            return endpoint

        forwarder.resolve = switching_resolve
        cluster.refuse_next = 1
        try:
            assert await ask(await dial(port), b"ping") == b"new:ping"
            assert any("pod old refused port 8786" in line for line in cluster.log)
        finally:
            await forwarder.close()
            await old.stop()
            await new.stop()

    asyncio.run(scenario())


def pod(name: str, created: str, ready: bool = True, deleting: bool = False) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "creationTimestamp": created}
    if deleting:
        metadata["deletionTimestamp"] = "2026-01-01T00:10:00Z"
    status = {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    spec = {"containers": [{"ports": [{"name": "tcp-comm", "containerPort": 9786}, {"containerPort": 1}]}]}
    return {"metadata": metadata, "status": status, "spec": spec}


def test_ready_pod_is_the_newest_ready_one_not_being_deleted() -> None:
    pods = [
        pod("a", "2026-01-01T00:00:00Z"),
        pod("b", "2026-01-01T00:05:00Z"),
        pod("c", "2026-01-01T00:06:00Z", ready=False),
        pod("d", "2026-01-01T00:07:00Z", deleting=True),
    ]
    assert ready_pod(pods)["metadata"]["name"] == "b"  # type: ignore[index]
    assert ready_pod([pods[2], pods[3]]) is None


def test_service_ports_map_to_the_pod_ports_they_target() -> None:
    service = {
        "spec": {
            "ports": [
                {"name": "tcp-comm", "port": 8786, "targetPort": "tcp-comm"},
                {"name": "http-dashboard", "port": 8787, "targetPort": 8788},
                {"name": "plain", "port": 8000},
            ]
        }
    }
    assert pod_ports(service, pod("a", "t")) == {8786: 9786, 8787: 8788, 8000: 8000}


def test_stack_target_reads_the_deployed_stack() -> None:
    calls: list[list[str]] = []

    def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        if argv[:3] == ["pulumi", "stack", "output"]:
            out = {
                "namespace": "lsdb-dev",
                "schedulerAddress": "tcp://lsdb-dev-scheduler.lsdb-dev.svc.cluster.local:8786",
            }
            return subprocess.CompletedProcess(argv, 0, json.dumps(out), "")
        return subprocess.CompletedProcess(argv, 0, "kind-lsdb-dev\n", "")

    target = stack_target("dev", run)
    assert (target.namespace, target.service, target.kube_context) == (
        "lsdb-dev",
        "lsdb-dev-scheduler",
        "kind-lsdb-dev",
    )
    assert all("--stack" in c and "dev" in c for c in calls)


def test_the_command_line_needs_a_stack_or_a_service() -> None:
    assert parse_args(["--stack", "dev"]).ports == {8786: 8786, 8787: 8787}
    assert parse_args(["--namespace", "n", "--service", "s", "18786:8786"]).ports == {18786: 8786}
    for wrong in (["--namespace", "x"], ["--stack", "dev", "--service", "s"], ["--stack", "dev", "http"]):
        with pytest.raises(SystemExit):
            parse_args(wrong)


@pytest.mark.parametrize("context", ["kind-lsdb-dev", None])
def test_the_stack_outputs_are_forwarder_command_lines_for_the_stable_service(context: str | None) -> None:
    """`portForwardScheduler`/`portForwardDashboard` parse as this tool's arguments naming the stable Service."""
    from components.program import forward_commands

    outputs = forward_commands("lsdb-dev", "lsdb-dev-scheduler", context)
    for key, port in (("portForwardScheduler", 8786), ("portForwardDashboard", 8787)):
        python, dash_m, module, *argv = shlex.split(outputs[key])
        assert (python, dash_m, module) == (".venv/bin/python", "-m", "tools.forward")
        args = parse_args(argv)
        assert (args.namespace, args.service, args.context, args.ports) == (
            "lsdb-dev",
            "lsdb-dev-scheduler",
            context,
            {port: port},
        )
