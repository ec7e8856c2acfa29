"""Reach the scheduler from a workstation: a kr8s port-forward to the operator's scheduler Service, retried until
its timeout (the operator creates the Service after the DaskCluster), with `wait_hook` (pods.StuckPods) between."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any

from components.constants import SCHEDULER_PORT, SCHEDULER_PORT_NAME, scheduler_service_name
from components.verification.check import VerificationError, WaitHook, describe, retrying
from components.verification.diagnostics import Fixes
from components.verification.query import ClusterRef

# (service name, namespace, kube context) -> an object with `.spec.ports` and `.portforward(remote, local_port=)`.
ServiceGetter = Callable[[str, str, str | None], Awaitable[Any]]


class SchedulerPortForward:
    """`with SchedulerPortForward(...) as address:` forwards `<cluster>-scheduler` to `tcp://127.0.0.1:<port>` and
    closes it on exit. The forward runs in a daemon thread with its own event loop (as dask-kubernetes' KubeCluster
    does), so it serves the Dask client while this thread blocks on the check."""

    def __init__(
        self,
        where: ClusterRef,
        *,
        timeout: float = 30.0,
        service_getter: ServiceGetter | None = None,
        wait_hook: WaitHook | None = None,
    ) -> None:
        self.where, self.timeout, self.wait_hook = where, timeout, wait_hook
        self.service_name = scheduler_service_name(str(where.cluster_name))
        self.service_getter: ServiceGetter = service_getter or _kr8s_service
        self.attempts = 0
        self.local_port: int | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> str:
        error = None
        for remaining in retrying(self.timeout, self.wait_hook):  # the hook raises when a pod of the cluster is stuck
            self.attempts += 1
            if self._start(remaining):
                return f"tcp://127.0.0.1:{self.local_port}"
            error = self._error
            self.close()
        context = f"kube context {self.where.kube_context}" if self.where.kube_context else "current kube context"
        where = f"service {self.service_name} in namespace {self.where.namespace} ({context})"
        tries = f"{self.attempts} attempt(s) within {self.timeout:g} s"
        problem = (
            f"the port-forward to {where} did not start ({tries})"
            if error is None
            else f"could not port-forward to {where} ({tries}): {describe(error)}"
        )
        raise VerificationError("connect", problem, Fixes(self.where).port_forward()) from error

    def _start(self, seconds: float) -> bool:
        """One attempt, in a fresh thread: True when the forward serves."""
        self._ready = threading.Event()
        self._error = None
        self._loop = self._stop = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), name="lsdb-verify-pf", daemon=True)
        self._thread.start()
        return self._ready.wait(max(seconds, 0.0)) and self._error is None

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the forward and wait (briefly) for its thread; safe to call twice."""
        if self._loop is not None and self._stop is not None:
            with suppress(RuntimeError):  # the loop is already closed
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            svc = await self.service_getter(self.service_name, str(self.where.namespace), self.where.kube_context)
            remote = _scheduler_port(svc)
            async with svc.portforward(remote, local_port="auto") as port:
                self.local_port = int(port)
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()


async def _kr8s_service(name: str, namespace: str, kube_context: str | None) -> Any:
    import kr8s.asyncio
    from kr8s.asyncio.objects import Service

    return await Service.get(name, namespace=namespace, api=await kr8s.asyncio.api(context=kube_context or None))


def _scheduler_port(svc: Any) -> int:
    """The port the operator names tcp-comm (kr8s' ports are dicts), else SCHEDULER_PORT."""
    ports = {port.get("name"): port["port"] for port in svc.spec.ports}
    return int(ports.get(SCHEDULER_PORT_NAME, SCHEDULER_PORT))
