"""A workstation port-forward that follows the stable scheduler Service across upgrades.

`kubectl port-forward svc/<name>-scheduler` resolves the Service to one pod when it starts and exits when that
pod goes: every blue/green upgrade kills it. This forwarder listens on 127.0.0.1:8786 (Dask) and :8787
(dashboard) and, for EACH new client connection, reads the Service's selector again, picks a Ready scheduler pod
it selects, and forwards the connection to that pod's port. After the upgrade switches the selector, new
connections reach the new scheduler; connections to the old one end with its pod, and the client's reconnect
reaches the new one. The forwarder itself never exits on a pod change.

    python -m tools.forward --stack dev          # namespace, Service and kube context from the stack
    python -m tools.forward --context kind-lsdb-dev --namespace lsdb-dev --service lsdb-dev-scheduler 8786:8786

Ports as kubectl takes them (`PORT` or `LOCAL:REMOTE`, REMOTE a port of the Service); none: 8786 and 8787.

Per connection, a kr8s port-forward to the chosen pod (kr8s' public `PortForward`, the websocket `portforward`
subresource, what the verification already uses) on an ephemeral loopback port, and a relay to it: one more
loopback hop than kr8s does alone, but kr8s' own Service forward picks its pod (and reads the selector) once.
The seams are `resolve` (which pod, which port) and `connect` (a stream to a pod's port): tests pass local echo
servers. kr8s is imported only by the real ones.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from components.constants import DASHBOARD_PORT, SCHEDULER_PORT

LOCAL_HOST = "127.0.0.1"
CONNECT_ATTEMPTS = 3  # a pod going between the lookup and the connect: look again
RETRY_PAUSE = 0.5
CHUNK = 64 * 1024

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass(frozen=True)
class Endpoint:
    """The pod a Service selects now: `pod` is what `connect` takes, `ports` maps Service port -> pod port."""

    name: str
    pod: Any
    ports: Mapping[int, int] = field(default_factory=dict)


Resolve = Callable[[], Awaitable[Endpoint | None]]  # None: the Service selects no Ready pod
Connect = Callable[[Any, int], AbstractAsyncContextManager[Streams]]


class ServiceForwarder:
    """Listens on `host`:<local port> for each (local port -> Service port) in `ports`; forwards every new
    connection to the pod `resolve()` names at that moment."""

    def __init__(
        self,
        resolve: Resolve,
        connect: Connect,
        ports: Mapping[int, int],
        *,
        host: str = LOCAL_HOST,
        log: Callable[[str], None] = print,
        retry_pause: float = RETRY_PAUSE,
    ) -> None:
        self.resolve, self.connect, self.ports, self.host = resolve, connect, dict(ports), host
        self.log, self.retry_pause = log, retry_pause
        self.servers: list[asyncio.Server] = []
        self.bound: dict[int, int] = {}  # Service port -> the local port listening for it (0 asks for a free one)
        self.current: str | None = None  # the pod the last connection went to

    async def start(self) -> dict[int, int]:
        for local, remote in self.ports.items():
            server = await asyncio.start_server(functools.partial(self._handle, service_port=remote), self.host, local)
            self.servers.append(server)
            self.bound[remote] = server.sockets[0].getsockname()[1]
        return self.bound

    async def serve_forever(self) -> None:
        await self.start()
        for remote, local in self.bound.items():
            self.log(f"forwarding {self.host}:{local} -> the Service's port {remote} (Ctrl-C to stop)")
        await asyncio.gather(*(s.serve_forever() for s in self.servers))

    async def close(self) -> None:
        for server in self.servers:
            server.close()
        for server in self.servers:
            await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, service_port: int) -> None:
        try:
            async with AsyncExitStack() as stack:
                upstream = await self._open(stack, service_port)
                if upstream is not None:
                    await relay((reader, writer), upstream)
        except Exception as exc:  # one connection's failure never stops the forwarder
            self.log(f"connection to port {service_port} ended: {type(exc).__name__}: {exc}")
        finally:
            writer.close()

    async def _open(self, stack: AsyncExitStack, service_port: int) -> Streams | None:
        """A stream to the selected pod's port, looking the pod up again after a failed connect."""
        for attempt in range(1, CONNECT_ATTEMPTS + 1):
            endpoint = await self.resolve()
            if endpoint is None:
                self.log("the Service selects no Ready scheduler pod (no cluster verified yet, or it is restarting)")
                return None
            if endpoint.name != self.current:
                self.log(f"now forwarding to pod {endpoint.name}")
                self.current = endpoint.name
            try:
                return await stack.enter_async_context(
                    self.connect(endpoint.pod, endpoint.ports.get(service_port, service_port))
                )
            except OSError as exc:
                self.log(f"pod {endpoint.name} refused port {service_port} ({exc}); attempt {attempt}")
                await asyncio.sleep(self.retry_pause)
        return None


async def relay(client: Streams, upstream: Streams) -> None:
    """Copy both ways until either side closes, then close both."""

    async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        while data := await source.read(CHUNK):
            sink.write(data)
            await sink.drain()

    tasks = [asyncio.create_task(pump(client[0], upstream[1])), asyncio.create_task(pump(upstream[0], client[1]))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for _, writer in (client, upstream):
            writer.close()
        for task in tasks:
            with suppress(asyncio.CancelledError, ConnectionError):
                await task


# --- the real seams: kr8s ---------------------------------------------------------------------------------------


def ready_pod(pods: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The newest pod that is Ready and not being deleted (a blue/green switch may leave two selected briefly)."""

    def ready(pod: Mapping[str, Any]) -> bool:
        conditions = (pod.get("status") or {}).get("conditions") or []
        return not (pod.get("metadata") or {}).get("deletionTimestamp") and any(
            c.get("type") == "Ready" and c.get("status") == "True" for c in conditions
        )

    candidates = sorted(
        (p for p in pods if ready(p)), key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp") or "")
    )
    return candidates[-1] if candidates else None


def pod_ports(service: Mapping[str, Any], pod: Mapping[str, Any]) -> dict[int, int]:
    """Service port -> the pod's port it targets (a named targetPort is the container port of that name)."""
    named = {
        p["name"]: int(p["containerPort"])
        for c in (pod.get("spec") or {}).get("containers") or []
        for p in c.get("ports") or []
        if p.get("name")
    }
    ports = {}
    for p in (service.get("spec") or {}).get("ports") or []:
        target = p.get("targetPort", p["port"])
        ports[int(p["port"])] = named[target] if isinstance(target, str) and target in named else int(target)
    return ports


class Kr8sService:
    """`resolve` and `connect` over kr8s, with `kube_context` (None: the current one)."""

    def __init__(self, namespace: str, service: str, kube_context: str | None = None) -> None:
        self.namespace, self.service, self.kube_context = namespace, service, kube_context
        self._api: Any = None

    async def _client(self) -> Any:
        import kr8s.asyncio

        if self._api is None:
            self._api = await (kr8s.asyncio.api(context=self.kube_context) if self.kube_context else kr8s.asyncio.api())
        return self._api

    async def resolve(self) -> Endpoint | None:
        from kr8s.asyncio.objects import Service

        api = await self._client()
        service: dict[str, Any] = (await Service.get(self.service, namespace=self.namespace, api=api)).raw
        selector = (service.get("spec") or {}).get("selector") or {}
        if not selector:
            return None
        label_selector = ",".join(f"{k}={v}" for k, v in selector.items())
        pods = [p async for p in api.async_get("pods", namespace=self.namespace, label_selector=label_selector)]
        chosen = ready_pod([p.raw for p in pods])
        if chosen is None:
            return None
        name = chosen["metadata"]["name"]
        pod = next(p for p in pods if p.name == name)
        return Endpoint(name, pod, pod_ports(service, chosen))

    @asynccontextmanager
    async def connect(self, pod: Any, port: int) -> AsyncIterator[Streams]:
        from kr8s.asyncio.portforward import PortForward

        async with PortForward(pod, port, local_port="auto") as local:
            reader, writer = await asyncio.open_connection(LOCAL_HOST, local)
            try:
                yield reader, writer
            finally:
                writer.close()


# --- the command line -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    namespace: str
    service: str
    kube_context: str | None


Run = Callable[[list[str]], "subprocess.CompletedProcess[str]"]


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def stack_target(stack: str, run: Run = _run) -> Target:
    """The stable Service of a deployed stack: its `namespace` and `schedulerAddress` outputs, its kubeContext."""
    outputs = run(["pulumi", "stack", "output", "--json", "--stack", stack])
    if outputs.returncode != 0:
        raise SystemExit(f"pulumi stack output --stack {stack} failed: {outputs.stderr.strip()}")
    values = json.loads(outputs.stdout)
    missing = [k for k in ("namespace", "schedulerAddress") if not values.get(k)]
    if missing:
        raise SystemExit(
            f"stack {stack} has no {', '.join(missing)} output: is it deployed (and not a platform stack)?"
        )
    host = urlparse(str(values["schedulerAddress"])).hostname or ""
    context = run(["pulumi", "config", "get", "kubeContext", "--stack", stack])
    kube_context = context.stdout.strip() if context.returncode == 0 and context.stdout.strip() else None
    return Target(str(values["namespace"]), host.split(".")[0], kube_context)


def port_pair(text: str) -> tuple[int, int]:
    """`8786` or `18786:8786` (local:Service port), as kubectl port-forward takes them."""
    local, _, remote = text.partition(":")
    try:
        pair = int(local), int(remote or local)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not PORT or LOCAL:REMOTE, e.g. 8786 or 18786:8786") from None
    return pair


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.forward", description=__doc__.split("\n\n")[0])
    p.add_argument("--stack", help="a deployed stack: its namespace, Service and kube context")
    p.add_argument("--namespace", help="the Service's namespace (instead of --stack)")
    p.add_argument("--service", help="the stable Service, <cluster.name>-scheduler (instead of --stack)")
    p.add_argument("--context", help="kube context (default: the stack's kubeContext, else the current one)")
    p.add_argument(
        "ports",
        nargs="*",
        type=port_pair,
        metavar="PORT|LOCAL:REMOTE",
        help=f"Service ports to forward (default: {SCHEDULER_PORT} and {DASHBOARD_PORT}, Dask and the dashboard)",
    )
    args = p.parse_args(argv)
    if args.stack and (args.namespace or args.service):
        p.error("give --stack, or --namespace and --service, not both")
    if not args.stack and not (args.namespace and args.service):
        p.error("give --stack, or both --namespace and --service")
    args.ports = dict(args.ports or [(SCHEDULER_PORT, SCHEDULER_PORT), (DASHBOARD_PORT, DASHBOARD_PORT)])
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.stack:
        target = stack_target(args.stack)
        target = Target(target.namespace, target.service, args.context or target.kube_context)
    else:
        target = Target(args.namespace, args.service, args.context)
    kube = Kr8sService(target.namespace, target.service, target.kube_context)
    forwarder = ServiceForwarder(kube.resolve, kube.connect, args.ports, log=lambda m: print(m, file=sys.stderr))
    print(f"service {target.service} in namespace {target.namespace}", file=sys.stderr)
    with suppress(KeyboardInterrupt):
        asyncio.run(forwarder.serve_forever())


if __name__ == "__main__":
    main()
