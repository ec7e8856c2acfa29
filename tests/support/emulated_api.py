"""What the Kubernetes API would say about emulated pods: a `ClusterReader` (components/verification/kube.py) over
`EmulatedCluster`s, so the verification's stuck-pod diagnosis runs against real processes.

Each emulated pod becomes a kr8s `Pod` object built from its state (no server): labels and spec from its
Deployment's template; `status.phase` the pod's; per container `state.running` while its process runs,
`state.terminated` with the real exit code once it exited (the kubelet reports that until the restart; the
emulator does not restart containers, so `CrashLoopBackOff` never appears), `state.waiting: ContainerCreating`
before it started. Logs are the container's real log file. Claims the emulator maps to a directory are `Bound`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tools.pod_emulator import EmulatedCluster, EmulatedPod


def _container_status(pod: EmulatedPod, index: int) -> dict[str, Any]:
    c = pod.containers[index]
    status: dict[str, Any] = {"name": c.name, "image": c.spec.get("image"), "restartCount": pod.restarts}
    if c.process is None:
        reason = "StartError" if pod.phase == "Failed" else "ContainerCreating"
        status["state"] = {"waiting": {"reason": reason, "message": str(pod.error or "")}}
    elif c.process.poll() is None:
        status["state"] = {"running": {}}
    else:
        code = c.process.returncode
        status["state"] = {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error"}}
    return status


def pod_object(pod: EmulatedPod) -> Any:
    """The emulated pod as a kr8s asyncio `Pod` (what `api.async_get("pods", ...)` yields)."""
    from kr8s.asyncio.objects import Pod

    template = pod.deployment["spec"]["template"]
    raw = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod.name, "namespace": pod.namespace, "labels": dict(pod.labels)},
        "spec": template["spec"],
        "status": {
            "phase": pod.phase,
            "containerStatuses": [_container_status(pod, i) for i in range(len(pod.containers))],
        },
    }
    return Pod(raw)


class EmulatedReader:
    """`ClusterReader` over the pods of `clusters` (a list you may append to)."""

    def __init__(self, clusters: Iterable[EmulatedCluster]) -> None:
        self.clusters = list(clusters)
        self.asked: list[tuple[str, ...]] = []

    def _pods(self) -> list[EmulatedPod]:
        return [pod for cluster in self.clusters for pod in cluster.pods]

    async def pods(self, namespace: str, selector: str) -> list[Any]:
        self.asked.append(("pods", namespace, selector))
        wanted = dict(part.split("=", 1) for part in selector.split(",") if part)
        return [
            pod_object(p)
            for p in self._pods()
            if p.namespace == namespace and all(p.labels.get(k) == v for k, v in wanted.items())
        ]

    async def logs(self, namespace: str, pod: str, container: str, tail: int, previous: bool) -> str:
        self.asked.append(("logs", pod, container))
        for p in self._pods():
            if p.name == pod and p.namespace == namespace:
                c = next(c for c in p.containers if c.name == container)
                return "\n".join(c.logs().splitlines()[-tail:])
        raise LookupError(f'pods "{pod}" not found')

    async def claim_phase(self, namespace: str, name: str) -> str | None:
        return "Bound" if any(name in cluster.claims for cluster in self.clusters) else "Pending"
