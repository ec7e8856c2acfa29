"""The workers stage waits in steps and reads the pods in between: a worker pod stuck for a reason waiting will not
cure (image pull, unschedulable, pending claim) fails stage `workers` early with the reason, instead of waiting out
the stage budget. Seams: a client object with distributed's `wait_for_workers` contract, and `StuckPods(reader)`
over kr8s objects built without a server (tests/test_verification_wait.py). The waits run on a fake clock in place
of check.py's `time` (the client's waits and the stuck timers on the same one): no real second passes."""

from __future__ import annotations

from typing import Any

import pytest

from components.verification import check
from components.verification.check import VerificationError
from components.verification.diagnostics import Fixes
from components.verification.kube import StuckPods
from tests.test_verification_wait import STUCK, WHERE, FakeTime, Reader, pod

CLOCK = FakeTime()  # check.py's `time` in every test (the autouse fixture below)


class NoWorkersYet:
    """distributed.Client's contract: `wait_for_workers(n, timeout)` raises TimeoutError when fewer joined."""

    def __init__(self, joins_after: float | None = None) -> None:
        self.joins_at = None if joins_after is None else CLOCK.monotonic() + joins_after
        self.waits: list[float] = []

    def wait_for_workers(self, n: int, timeout: float) -> None:
        self.waits.append(timeout)
        if self.joins_at is not None and CLOCK.monotonic() + timeout >= self.joins_at:
            CLOCK.sleep(max(self.joins_at - CLOCK.monotonic(), 0.0))
            return
        CLOCK.sleep(timeout)
        raise TimeoutError(f"Only 0/{n} workers arrived after {timeout}")

    def nthreads(self, **_sync: Any) -> dict[str, int]:
        return {} if self.joins_at is None or CLOCK.monotonic() < self.joins_at else {"tcp://w": 1}


@pytest.fixture(autouse=True)
def short_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(check, "WORKER_WAIT_STEP_SECONDS", 0.5)
    monkeypatch.setattr(check, "time", CLOCK)
    CLOCK.slept.clear()  # each test's own pauses count towards NEVER_ENDS


def stuck_pods(reader: Reader, **kwargs: Any) -> StuckPods:
    return StuckPods(reader, WHERE, clock=CLOCK.monotonic, **kwargs)


@pytest.mark.parametrize("state", ["image pull", "unschedulable", "pending claim"])
def test_a_stuck_worker_pod_fails_the_workers_stage_early(state: str) -> None:
    reader, problem_parts, fix_part = STUCK[state]
    started = CLOCK.monotonic()
    with pytest.raises(VerificationError) as info:
        check._wait_for_workers(NoWorkersYet(), "tcp://127.0.0.1:1", 1, 180.0, Fixes(WHERE),
                                stuck_pods(reader, stuck_seconds=2.0))  # fmt: skip
    assert CLOCK.monotonic() - started < 30.0, "it must not wait out the 180 s budget"
    err = info.value
    assert err.stage == "workers"
    for part in problem_parts:
        assert part in err.problem
    assert fix_part in err.fix and "kubectl --context kind-dev -n lsdb-test" in err.fix


def test_workers_that_join_while_pods_are_read_pass() -> None:
    reader = Reader([pod("w-1", phase="Running")])
    client = NoWorkersYet(joins_after=1.2)
    hook = stuck_pods(reader, stuck_seconds=2.0)
    assert check._wait_for_workers(client, "tcp://127.0.0.1:1", 1, 60.0, Fixes(WHERE), hook) == 1
    assert len(client.waits) >= 2 and all(w <= 0.5 for w in client.waits), "it waited in steps"
    assert reader.asked, "it read the pods between the steps"


def test_without_a_hook_it_waits_once_for_the_budget() -> None:
    client = NoWorkersYet()
    with pytest.raises(VerificationError) as info:
        check._wait_for_workers(client, "tcp://127.0.0.1:1", 2, 1.0, Fixes(WHERE))
    assert len(client.waits) == 1 and client.waits[0] == pytest.approx(1.0, abs=0.01)
    assert info.value.stage == "workers" and "fewer than min_workers=2, within 1 s" in info.value.problem


def test_a_budget_spent_in_steps_names_the_budget() -> None:
    reader = Reader([pod("w-1", phase="Running")])
    with pytest.raises(VerificationError) as info:
        check._wait_for_workers(NoWorkersYet(), "tcp://127.0.0.1:1", 1, 1.2, Fixes(WHERE), stuck_pods(reader))
    assert "0 worker(s) joined" in info.value.problem and "within 1.2 s" in info.value.problem
