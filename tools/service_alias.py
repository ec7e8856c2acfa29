"""A Kubernetes Service's ClusterIP as local TCP ports that follow the Service's selector, as kube-proxy does.

For the upgrade tests and bench/upgrade.py: `EmulatedCluster.map_address` resolves a Service name once, which is
not enough for the stable `<cluster.name>-scheduler`, whose selector changes while clients use it.
* Each Service port gets one local port (`local_port(8786)`), fixed for the alias' lifetime, as the ClusterIP is.
* Each NEW connection goes to a Ready endpoint the selector matches at that moment (labels match, the pod runs, its
  readinessProbes pass), among the pods of `alias.clusters` (a list you may append to), on the `targetPort`;
  established ones stay where they were opened (conntrack) and close with their pod; no endpoint: reset (kube-proxy
  REJECTs).
* `apply(service)` replaces the Service (new selector, same name and ports); `start()` after creation is a Service
  that appears later (connecting is refused before). `map_address(text)` rewrites its addresses to the alias ports.
Counters: `reset_no_endpoint`, and `routed` (pod name -> connections).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import itertools
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from typing import Any

from tools.forward import relay
from tools.local_dask import free_port
from tools.pod_emulator import (
    LOOPBACK,
    EmulatedCluster,
    EmulatedPod,
    EmulationError,
    replace_names,
    service_address_table,
    service_endpoints,
)

READY_CACHE_SECONDS = 0.25  # a readiness result is reused this long (Kubernetes' probes run every periodSeconds)


class ServiceAlias:
    """Local ports standing for one Service's ClusterIP; see the module docstring. A context manager."""

    def __init__(self, service: Mapping[str, Any], clusters: Iterable[EmulatedCluster] = (), *, start: bool = True):
        self.service = copy.deepcopy(dict(service))
        self.name: str = self.service["metadata"]["name"]
        self.namespace: str = self.service["metadata"].get("namespace", "default")
        self.clusters: list[EmulatedCluster] = list(clusters)
        self.ports: dict[int, int] = {int(p["port"]): free_port() for p in self.service["spec"]["ports"]}
        self.reset_no_endpoint = 0
        self.routed: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._ready: dict[str, tuple[float, bool]] = {}
        self._round_robin = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._servers: list[asyncio.base_events.Server] = []
        self._writers: set[asyncio.StreamWriter] = set()
        if start:
            self.start()

    # -- the Service object --

    def apply(self, service: Mapping[str, Any]) -> None:
        """Replace the Service (e.g. its selector), as an update of the object does; new connections follow it."""
        new = copy.deepcopy(dict(service))
        if new["metadata"]["name"] != self.name or new["metadata"].get("namespace", "default") != self.namespace:
            raise EmulationError(f"apply: {new['metadata']} is not the Service {self.namespace}/{self.name}")
        if {int(p["port"]) for p in new["spec"]["ports"]} != set(self.ports):
            raise EmulationError("apply: changing a Service's ports is not emulated")
        with self._lock:
            self.service = new

    def local_port(self, port: int) -> int:
        return self.ports[int(port)]

    def map_address(self, text: str) -> str:
        """`<svc>.<ns>.svc.cluster.local[:port]` (and `<svc>[.<ns>[.svc]]:port`) -> the alias' local address."""
        return replace_names(text, service_address_table(self.name, self.namespace, self.ports, short=True))

    # -- endpoints --

    def _is_ready(self, pod: EmulatedPod) -> bool:
        now = time.monotonic()
        cached = self._ready.get(pod.name)
        if cached and now - cached[0] < READY_CACHE_SECONDS:
            return cached[1]
        ready = pod.ready()
        self._ready[pod.name] = (now, ready)
        return ready

    def endpoints(self, port: int) -> list[tuple[EmulatedPod, int]]:
        """(pod, local port) of every Ready pod the selector matches now, for the Service port `port`."""
        with self._lock:
            spec = copy.deepcopy(self.service["spec"])
        pods = [pod for cluster in list(self.clusters) for pod in cluster.pods]
        return [(pod, n) for pod, n in service_endpoints(spec, port, pods, self.namespace) if self._is_ready(pod)]

    # -- the proxy --

    def start(self) -> ServiceAlias:
        """Listen on the alias ports (the Service exists from now on)."""
        if self._loop is not None:
            return self
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"alias-{self.name}", daemon=True)
        self._thread.start()
        future: Future[None] = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        future.result(10)
        return self

    async def _listen(self) -> None:
        for port, local in self.ports.items():
            server = await asyncio.start_server(
                functools.partial(self._serve, port=port), LOOPBACK, local, reuse_address=True
            )
            self._servers.append(server)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int) -> None:
        endpoints = await asyncio.to_thread(self.endpoints, port)
        if not endpoints:
            self.reset_no_endpoint += 1
            _reset(writer)
            return
        pod, local = endpoints[next(self._round_robin) % len(endpoints)]
        try:
            up_reader, up_writer = await asyncio.open_connection(LOOPBACK, local)
        except OSError:
            _reset(writer)
            return
        self.routed[pod.name] += 1
        self._writers.update((writer, up_writer))
        try:
            await relay((reader, writer), (up_reader, up_writer))  # until either side closes (a pod's stop included)
        finally:
            self._writers -= {writer, up_writer}

    def close(self) -> None:
        """Stop listening and close every proxied connection."""
        loop, self._loop = self._loop, None
        if loop is None:
            return

        async def shutdown() -> None:
            for server in self._servers:
                server.close()
            for w in list(self._writers):
                w.close()
            self._servers.clear()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        loop.close()

    def __enter__(self) -> ServiceAlias:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0): what a client of a Service without endpoints sees."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()
