"""The verification on a first deploy: it waits for the candidate Service and a Ready scheduler, and fails early,
naming the reason, when a pod of the cluster is stuck. Pods are kr8s' own objects built from dicts (no server);
the seams are `SchedulerPortForward(service_getter=...)` and `StuckPods(reader, clock=)`. The waits run on a fake
clock (`FakeTime`, in place of kube.py's `time`): the retries' pauses and the stuck timers are the code's own, only
no real second passes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kr8s.asyncio.objects import Pod

from components.verification import kube
from components.verification.check import VerificationError
from components.verification.kube import POD_LOG_LINES, SchedulerPortForward, StuckPods
from components.verification.query import ClusterRef

LIVE = "lsdb-cluster-0123abcd"
WHERE = ClusterRef("lsdb-test", LIVE, "kind-dev")
IMAGE = "ghcr.io/acme/lsdb-dask@sha256:" + "a" * 64


def pod(name: str, phase: str = "Pending", **status: Any) -> Pod:
    spec: dict[str, Any] = {
        "containers": [{"name": "scheduler", "image": IMAGE}],
        "imagePullSecrets": [{"name": "lsdb-cluster-registry"}],
        "volumes": [{"name": "catalog-data", "persistentVolumeClaim": {"claimName": "hats-catalog-pvc"}}],
    }
    raw = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "lsdb-test", "labels": {"dask.org/cluster-name": LIVE}},
        "spec": spec,
        "status": {"phase": phase, **status},
    }
    return Pod(raw)  # kr8s' asyncio object: built without an API server


def waiting(reason: str, message: str = "") -> dict[str, Any]:
    state = {"waiting": {"reason": reason, "message": message}}
    return {"containerStatuses": [{"name": "scheduler", "image": IMAGE, "state": state, "restartCount": 0}]}


class FakeTime:
    """`time.monotonic` and `time.sleep` on a clock that moves only when slept: a module's waits, instantly (as
    tests/test_verification_check_waits.py's `Clock`). A loop that would never end fails after `NEVER_ENDS` pauses."""

    NEVER_ENDS = 300

    def __init__(self) -> None:
        self.now = 1000.0  # a deadline is counted from now, not from 0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("sleep length must be non-negative")  # as time.sleep
        self.slept.append(seconds)
        if len(self.slept) > self.NEVER_ENDS:
            raise AssertionError("the loop never ends")
        self.now += seconds


@pytest.fixture
def fake_time(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    """kube.py's `time` on the fake clock (its port-forward retries and their pauses)."""
    fake = FakeTime()
    monkeypatch.setattr(kube, "time", fake)
    return fake


CRASH_LOG = "\n".join(f"line {i}" for i in range(1, 31))


class Reader:
    """A ClusterReader over fixed kr8s objects; records what was asked."""

    def __init__(self, pods: list[Pod], claim_phase: str | None = "Bound") -> None:
        self._pods, self._claim_phase = pods, claim_phase
        self.asked: list[tuple[str, ...]] = []

    async def pods(self, namespace: str, selector: str) -> list[Any]:
        self.asked.append(("pods", namespace, selector))
        return self._pods

    async def logs(self, namespace: str, pod: str, container: str, tail: int, previous: bool) -> str:
        self.asked.append(("logs", pod, container, str(tail), str(previous)))
        return "\n".join(CRASH_LOG.splitlines()[-tail:])

    async def claim_phase(self, namespace: str, name: str) -> str | None:
        return self._claim_phase


STUCK = {
    "image pull": (
        Reader([pod("s-1", **waiting("ImagePullBackOff", "Back-off pulling image"))]),
        ["cannot pull the image", IMAGE, "pull secret lsdb-cluster-registry", "ImagePullBackOff"],
        "get secret lsdb-cluster-registry",
    ),
    "crash loop": (
        Reader(
            [
                pod(
                    "s-1",
                    phase="Running",
                    containerStatuses=[
                        {
                            "name": "scheduler",
                            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                            "lastState": {"terminated": {"exitCode": 1}},
                            "restartCount": 4,
                        }
                    ],
                )
            ]
        ),
        ["crashes (CrashLoopBackOff, exit code 1, 4 restart(s))", f"last {POD_LOG_LINES} log lines", "line 30"],
        "logs s-1 -c scheduler --previous",
    ),
    "terminated": (
        Reader(
            [
                pod(
                    "s-1",
                    phase="Failed",
                    containerStatuses=[{"name": "scheduler", "state": {"terminated": {"exitCode": 2}}}],
                )
            ]
        ),
        ["crashes (terminated, exit code 2", "line 30"],
        "describe pod s-1",
    ),
    "unschedulable": (
        Reader(
            [
                pod(
                    "w-1",
                    conditions=[
                        {
                            "type": "PodScheduled",
                            "status": "False",
                            "reason": "Unschedulable",
                            "message": "0/1 nodes are available: 1 Insufficient memory.",
                        }
                    ],
                )
            ]
        ),
        ["cannot be scheduled: 0/1 nodes are available: 1 Insufficient memory."],
        "cluster.workers.cpu/memory",
    ),
    "pending claim": (
        Reader([pod("w-1")], claim_phase="Pending"),
        ["waits for the PersistentVolumeClaim hats-catalog-pvc, which is Pending"],
        "describe pvc hats-catalog-pvc",
    ),
}


@pytest.mark.parametrize("state", list(STUCK))
def test_a_stuck_pod_fails_once_it_stayed_stuck(state: str) -> None:
    reader, problem_parts, fix_part = STUCK[state]
    now = [100.0]
    stuck = StuckPods(reader, WHERE, stuck_seconds=10.0, clock=lambda: now[0])
    stuck()  # first seen: waiting may still cure it
    now[0] += 9.0
    stuck()
    now[0] += 1.0
    with pytest.raises(VerificationError) as info:
        stuck()
    err = info.value
    assert err.stage == "connect"
    for part in problem_parts:
        assert part in err.problem, (part, err.problem)
    assert fix_part in err.fix and "kubectl --context kind-dev -n lsdb-test" in err.fix
    assert ("pods", "lsdb-test", f"dask.org/cluster-name={LIVE}") in reader.asked
    if "log lines" in " ".join(problem_parts):
        assert "line 10" not in err.problem and "line 11" in err.problem  # the last 20 of 30 lines


def test_a_pod_that_recovers_is_forgotten() -> None:
    now = [0.0]
    pods = [pod("s-1", **waiting("ErrImagePull"))]
    reader = Reader(pods)
    stuck = StuckPods(reader, WHERE, stuck_seconds=10.0, clock=lambda: now[0])
    stuck()
    reader._pods = [pod("s-1", phase="Running")]
    now[0] += 6.0
    stuck()
    reader._pods = pods
    now[0] += 6.0
    stuck()  # seen again: its clock restarts, no failure yet
    assert stuck.first_seen


def test_unreadable_pods_do_not_stop_the_wait() -> None:
    class Forbidden(Reader):
        async def pods(self, namespace: str, selector: str) -> list[Any]:
            raise PermissionError("pods is forbidden")

    stuck = StuckPods(Forbidden([]), WHERE)
    stuck()
    assert stuck.read_error == "PermissionError: pods is forbidden"


class _Service:
    spec = type("Spec", (), {"ports": [{"name": "tcp-comm", "port": 8786}]})

    def portforward(self, remote: int, local_port: Any = "auto") -> Any:
        class Forward:
            async def __aenter__(self) -> int:
                return 45678

            async def __aexit__(self, *exc: object) -> None:
                pass

        return Forward()


def test_port_forward_waits_for_the_service_to_appear(fake_time: FakeTime) -> None:
    appears_at = fake_time.monotonic() + 2.0
    hooks: list[float] = []

    async def getter(name: str, namespace: str, context: str | None) -> Any:
        assert name == f"{LIVE}-scheduler"
        if fake_time.monotonic() < appears_at:
            raise LookupError(f'services "{name}" not found')
        return _Service()

    forward = SchedulerPortForward(ClusterRef("lsdb-test", LIVE, "kind-dev"), timeout=20.0, service_getter=getter,
                                   wait_hook=lambda: hooks.append(fake_time.monotonic()))  # fmt: skip
    with forward as address:
        assert address == "tcp://127.0.0.1:45678"
    assert forward.attempts >= 2 and hooks, "it retried and looked at the pods in between"


@pytest.mark.parametrize("state", ["image pull", "unschedulable"])
def test_port_forward_fails_early_with_the_reason_when_a_pod_is_stuck(state: str, fake_time: FakeTime) -> None:
    reader, problem_parts, _ = STUCK[state]

    async def getter(name: str, namespace: str, context: str | None) -> Any:
        raise LookupError(f'services "{name}" not found')

    started = fake_time.monotonic()
    forward = SchedulerPortForward(ClusterRef("lsdb-test", LIVE, "kind-dev"), timeout=600.0, service_getter=getter,
                                   wait_hook=StuckPods(reader, WHERE, stuck_seconds=3.0,
                                                       clock=fake_time.monotonic))  # fmt: skip
    with pytest.raises(VerificationError) as info, forward:
        pass
    assert fake_time.monotonic() - started < 30.0
    assert info.value.stage == "connect" and problem_parts[0] in info.value.problem


def test_port_forward_gives_up_at_its_budget_naming_the_last_error(fake_time: FakeTime) -> None:
    async def getter(name: str, namespace: str, context: str | None) -> Any:
        raise LookupError(f'services "{name}" not found')

    started = fake_time.monotonic()
    with pytest.raises(VerificationError) as info, SchedulerPortForward(ClusterRef("lsdb-test", LIVE), timeout=2.0,
                                                                        service_getter=getter):  # fmt: skip
        pass
    assert fake_time.monotonic() - started < 2.0 + 5.0
    assert "attempt(s) within 2 s" in info.value.problem and "not found" in info.value.problem


@pytest.mark.parametrize(("timeout", "attempts"), [(0.0, 1), (3.0, 3)])  # 3 s: at 0, 0.5, 1.5 s; a 2 s pause passes 3 s
def test_port_forward_tries_once_at_least_and_never_pauses_into_its_deadline(
    timeout: float, attempts: int, fake_time: FakeTime
) -> None:
    async def getter(name: str, namespace: str, context: str | None) -> Any:
        raise LookupError(f'services "{name}" not found')

    hooks: list[float] = []
    forward = SchedulerPortForward(ClusterRef("lsdb-test", LIVE), timeout=timeout, service_getter=getter,
                                   wait_hook=lambda: hooks.append(fake_time.monotonic()))  # fmt: skip
    started = fake_time.monotonic()
    with pytest.raises(VerificationError) as info, forward:
        pass
    assert (forward.attempts, len(hooks)) == (attempts, attempts)
    assert f"({attempts} attempt(s) within {timeout:g} s)" in info.value.problem
    assert fake_time.monotonic() - started < max(timeout - 0.5, 1.0)  # it gave up, not slept out the rest


# Interrupted (Ctrl-C) while an attempt is still connecting: the forward that comes up afterwards must not keep the
# process from exiting.
INTERRUPTED_FORWARD = """
import asyncio, signal, sys, time
from components.verification.kube import SchedulerPortForward
from components.verification.query import ClusterRef
sys.path.insert(0, "tests")
from test_verification_wait import _Service

async def getter(name, namespace, context):
    await asyncio.sleep(0.5)
    return _Service()

def interrupt(*_):
    raise KeyboardInterrupt
signal.signal(signal.SIGALRM, interrupt)
signal.setitimer(signal.ITIMER_REAL, 0.2)
forward = SchedulerPortForward(ClusterRef("ns", "c"), timeout=5.0, service_getter=getter)
try:
    forward.__enter__()
except KeyboardInterrupt:
    deadline = time.monotonic() + 10.0
    while forward.local_port is None and time.monotonic() < deadline:  # until the forward is up; nothing closes it
        time.sleep(0.02)
print("exiting", "with the forward up" if forward.local_port is not None else "before the forward came up")
"""


def test_an_interrupted_port_forward_does_not_keep_the_process_alive() -> None:
    child = subprocess.run([sys.executable, "-c", INTERRUPTED_FORWARD], capture_output=True, text=True, timeout=20,
                           cwd=Path(__file__).parent.parent)  # fmt: skip
    assert child.returncode == 0 and "exiting with the forward up" in child.stdout, (child.stdout, child.stderr)
