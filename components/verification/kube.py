"""The check's Kubernetes side (kr8s, with `connect: portForward`): the port-forward to the scheduler Service, and
the cluster's pods read while the check waits, to fail early on one stuck for a reason waiting will not cure
(docs/lifecycle.md#post-deploy-verification).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from components.constants import (
    CLUSTER_NAME_LABEL,
    SCHEDULER_PORT,
    SCHEDULER_PORT_NAME,
    kubectl,
    scheduler_service_name,
)
from components.verification.check import RETRY_FIRST_PAUSE, RETRY_MAX_PAUSE, VerificationError, WaitHook, describe
from components.verification.diagnostics import Fixes
from components.verification.query import ClusterRef

POD_LOG_LINES = 20
IMAGE_REASONS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
CRASH_REASONS = ("CrashLoopBackOff", "RunContainerError", "CreateContainerError", "CreateContainerConfigError")


class ClusterReader(Protocol):
    """What the diagnosis reads (the tests' seam): kr8s objects."""

    async def pods(self, namespace: str, selector: str) -> list[Any]: ...

    async def logs(self, namespace: str, pod: str, container: str, tail: int, previous: bool) -> str: ...

    async def claim_phase(self, namespace: str, name: str) -> str | None: ...


class Kr8sReader:
    """`ClusterReader` over kr8s, with the stack's kube context (the API access the port-forward has)."""

    def __init__(self, kube_context: str | None = None) -> None:
        self.kube_context = kube_context
        self._api: Any = None

    async def _client(self) -> Any:
        import kr8s.asyncio

        if self._api is None:
            self._api = await kr8s.asyncio.api(context=self.kube_context or None)
        return self._api

    async def pods(self, namespace: str, selector: str) -> list[Any]:
        api = await self._client()
        return [pod async for pod in api.async_get("pods", namespace=namespace, label_selector=selector)]

    async def logs(self, namespace: str, pod: str, container: str, tail: int, previous: bool) -> str:
        from kr8s.asyncio.objects import Pod

        obj = await Pod.get(pod, namespace=namespace, api=await self._client())
        lines = [line async for line in obj.logs(container=container, tail_lines=tail, previous=previous)]
        return "\n".join(lines)

    async def claim_phase(self, namespace: str, name: str) -> str | None:
        from kr8s.asyncio.objects import PersistentVolumeClaim

        claim = await PersistentVolumeClaim.get(name, namespace=namespace, api=await self._client())
        raw: Mapping[str, Any] = claim.raw
        return raw.get("status", {}).get("phase") or None


def _container_states(raw: Mapping[str, Any]) -> list[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    """(status, spec) of every container, init containers first."""
    spec = raw.get("spec") or {}
    status = raw.get("status") or {}
    specs = {c.get("name"): c for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]}
    states = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
    return [(s, specs.get(s.get("name"), {})) for s in states]


# The reasons pods are stuck, each by a key that stays the same across reads: (what happened, what to do).
Problems = dict[str, tuple[str, str]]


async def pod_problems(reader: ClusterReader, where: ClusterRef) -> Problems:
    """Every stuck pod of the cluster `where.cluster_name`, read once."""
    ns, cluster = where.namespace or "default", where.cluster_name or ""
    k = f"{kubectl(where.kube_context)} -n {ns}"
    problems: Problems = {}
    for pod in await reader.pods(ns, f"{CLUSTER_NAME_LABEL}={cluster}"):
        raw = pod.raw
        name = str((raw.get("metadata") or {}).get("name"))
        spec = raw.get("spec") or {}
        secrets = [s.get("name") for s in spec.get("imagePullSecrets") or []]
        for status, container in _container_states(raw):
            state = status.get("state") or {}
            waiting, terminated = state.get("waiting") or {}, state.get("terminated") or {}
            reason = waiting.get("reason") or ""
            cname = str(status.get("name"))
            if reason in IMAGE_REASONS:
                image = container.get("image") or status.get("image")
                problems[f"{name}/{cname}/image"] = (
                    f"pod {name} cannot pull the image of container {cname}: {reason}"
                    f" ({waiting.get('message') or 'no message'}); image {image}; pull secret"
                    f" {', '.join(map(str, secrets)) if secrets else 'none (imagePullSecrets is empty)'}",
                    f"check the image exists and the pull secret holds credentials for its registry:"
                    f" `{k} describe pod {name}`"
                    + (f", `{k} get secret {secrets[0]}`" if secrets else "; set image.registry for a private one"),
                )
            elif reason in CRASH_REASONS or (terminated and terminated.get("exitCode") not in (None, 0)):
                last = (status.get("lastState") or {}).get("terminated") or terminated
                exit_text = f"exit code {last.get('exitCode')}" if last else "no exit code yet"
                previous = reason == "CrashLoopBackOff"
                try:
                    log = await reader.logs(ns, name, cname, POD_LOG_LINES, previous)
                except Exception as exc:
                    log = f"(its log could not be read: {describe(exc)})"
                problems[f"{name}/{cname}/crash"] = (
                    f"container {cname} of pod {name} crashes ({reason or 'terminated'}, {exit_text},"
                    f" {status.get('restartCount', 0)} restart(s)); its last {POD_LOG_LINES} log lines:\n"
                    + (log.strip() or "(empty log)"),
                    f"fix what the log says (args, env, a missing package in the image):"
                    f" `{k} logs {name} -c {cname} --previous`, `{k} describe pod {name}`",
                )
        problems.update(await _pending_problems(reader, raw, name, ns, k))
    return problems


async def _pending_problems(reader: ClusterReader, raw: Mapping[str, Any], name: str, ns: str, k: str) -> Problems:
    status = raw.get("status") or {}
    if status.get("phase") != "Pending":
        return {}
    problems: Problems = {}
    for claim in [
        v["persistentVolumeClaim"]["claimName"]
        for v in (raw.get("spec") or {}).get("volumes") or []
        if v.get("persistentVolumeClaim")
    ]:
        try:
            phase = await reader.claim_phase(ns, claim)
        except Exception:
            phase = None
        if phase == "Pending":
            problems[f"{name}/pvc/{claim}"] = (
                f"pod {name} waits for the PersistentVolumeClaim {claim}, which is Pending (not bound)",
                f"`{k} describe pvc {claim}` names the cause: no PersistentVolume or StorageClass matches its"
                " access mode and size (a static nfs/hostPath volume must exist; ReadWriteMany needs a class"
                " that offers it)",
            )
    for cond in status.get("conditions") or []:
        if (
            cond.get("type") == "PodScheduled"
            and cond.get("status") == "False"
            and cond.get("reason") == "Unschedulable"
        ):
            problems[f"{name}/unschedulable"] = (
                f"pod {name} cannot be scheduled: {cond.get('message') or 'no message'}",
                f"lower the pod's requests (cluster.workers.cpu/memory, cluster.scheduler.*), add nodes, or"
                f" tolerate the nodes' taints: `{k} describe pod {name}`",
            )
    return problems


class StuckPods:
    """Called between the check's retries: raises `VerificationError` (stage connect) once a pod of the cluster has
    been stuck for `stuck_seconds`; returns otherwise, also when the pods cannot be read."""

    def __init__(
        self,
        reader: ClusterReader,
        where: ClusterRef,
        *,
        stuck_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.reader, self.where = reader, where
        self.stuck_seconds, self.clock = stuck_seconds, clock
        self.first_seen: dict[str, float] = {}
        self.read_error: str | None = None  # the last read's failure (the wait goes on)
        self._loop: asyncio.AbstractEventLoop | None = None

    def __call__(self) -> None:
        if self._loop is None:  # one loop, in a daemon thread, for every read: kr8s' client stays bound to it
            self._loop = asyncio.new_event_loop()
            threading.Thread(target=self._loop.run_forever, name="lsdb-verify-pods", daemon=True).start()
        try:  # one round of reads within 10 s: a slow API server only delays the diagnosis
            problems = asyncio.run_coroutine_threadsafe(pod_problems(self.reader, self.where), self._loop).result(10.0)
        except Exception as exc:  # no API access, a timeout: diagnosis is best effort
            self.read_error = describe(exc)
            return
        now = self.clock()
        self.first_seen = {key: self.first_seen.get(key, now) for key in problems}  # forgets a pod that recovered
        for key, (text, fix) in problems.items():
            if now - self.first_seen[key] >= self.stuck_seconds:
                raise VerificationError("connect", text, fix)


# (service name, namespace, kube context) -> an object with `.spec.ports` and `.portforward(remote, local_port=)`.
ServiceGetter = Callable[[str, str, str | None], Awaitable[Any]]


class SchedulerPortForward:
    """`with SchedulerPortForward(...) as address:` forwards `<cluster>-scheduler` to `tcp://127.0.0.1:<port>`, in a
    daemon thread with its own event loop (as dask-kubernetes' KubeCluster does) that serves while the check blocks."""

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
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> str:
        # At least one attempt; the wait hook after each failure; no pause that would reach the deadline (unlike the
        # identity probe's, which sleeps up to it).
        deadline, pause = time.monotonic() + self.timeout, RETRY_FIRST_PAUSE
        while True:
            self.attempts += 1
            if self._start(deadline - time.monotonic()):
                return f"tcp://127.0.0.1:{self.local_port}"
            error = self._error
            self.close()
            if self.wait_hook is not None:
                self.wait_hook()
            if time.monotonic() + pause >= deadline:
                break
            time.sleep(pause)
            pause = min(pause * 2, RETRY_MAX_PAUSE)
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
        ready, self._stop, self._error = threading.Event(), threading.Event(), None
        serve = self._serve(ready, self._stop)
        self._thread = threading.Thread(target=asyncio.run, args=(serve,), name="lsdb-verify-pf", daemon=True)
        self._thread.start()
        return ready.wait(max(seconds, 0.0)) and self._error is None

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the forward and wait (briefly) for its thread; safe to call twice."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    async def _serve(self, ready: threading.Event, stop: threading.Event) -> None:
        try:
            svc = await self.service_getter(self.service_name, str(self.where.namespace), self.where.kube_context)
            async with svc.portforward(_scheduler_port(svc), local_port="auto") as port:
                self.local_port = int(port)
                ready.set()
                while not stop.is_set():  # polled: a thread blocked in stop.wait() would hold up the interpreter's exit
                    await asyncio.sleep(0.05)
        except BaseException as exc:
            self._error = exc
        finally:
            ready.set()


async def _kr8s_service(name: str, namespace: str, kube_context: str | None) -> Any:
    import kr8s.asyncio
    from kr8s.asyncio.objects import Service

    return await Service.get(name, namespace=namespace, api=await kr8s.asyncio.api(context=kube_context or None))


def _scheduler_port(svc: Any) -> int:
    """The port the operator names tcp-comm (kr8s' ports are dicts), else SCHEDULER_PORT."""
    ports = {port.get("name"): port["port"] for port in svc.spec.ports}
    return int(ports.get(SCHEDULER_PORT_NAME, SCHEDULER_PORT))
