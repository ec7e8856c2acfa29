"""The check's two waiting loops (components/verification/check.py): `_identify`, which retries the scheduler's
identity probe with a doubling pause until its budget, and `_wait_for_workers`, which waits for `min_workers` in
steps with the wait hook in between. Both run here on a stand-in clock (`check.time` replaced: `sleep` moves
`monotonic` on, and a loop that would never end fails after a few hundred pauses), so every attempt, pause, step
and message is exact and a test takes milliseconds: their mutants run only this file (tools/mutation_selection.py,
docs/mutation.md). tests/test_verification_check_rules.py runs the same loops on the real clock, against an
in-process cluster; tests/test_verification_workers_wait.py on a fake clock too, with stuck pods."""

from __future__ import annotations

from typing import Any

import pytest

from components.verification import check
from components.verification.check import VerificationError
from components.verification.diagnostics import Fixes
from components.verification.query import ClusterRef

FIXES = Fixes(ClusterRef("astro", "lsdb-x-0a1b", "kind-lsdb"), "/data/x")
START = 1000.0  # the stand-in clock's first reading: a deadline is counted from now, not from 0
NEVER_ENDS = 300  # pauses after which a loop is taken to never end


class Clock:
    """`time` as check.py uses it: `monotonic()` and `sleep(s)`, which moves the clock on instead of waiting."""

    def __init__(self, events: list[tuple[Any, ...]]) -> None:
        self.now = START
        self.events = events

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("sleep length must be non-negative")  # as time.sleep
        self.events.append(("sleep", round(self.now - START, 6), seconds))
        if sum(e[0] == "sleep" for e in self.events) > NEVER_ENDS:
            raise AssertionError("the loop never ends")
        self.now += seconds

    def at(self) -> float:
        return round(self.now - START, 6)


@pytest.fixture
def events() -> list[tuple[Any, ...]]:
    return []


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch, events: list[tuple[Any, ...]]) -> Clock:
    fake = Clock(events)
    monkeypatch.setattr(check, "time", fake)
    return fake


class Scheduler:
    """`_probe_scheduler` as the port-forward sees it: each attempt takes `cost` seconds (at most its own bound) and
    fails with the next of `errors` (refused, a silent peer's TimeoutError...); once they are used up it answers
    `then`, or raises it again and again if it is an exception."""

    def __init__(self, clock: Clock, errors: list[BaseException], then: Any = None, cost: float = 0.0) -> None:
        self.clock, self.errors, self.then, self.cost = clock, errors, then, cost

    def __call__(self, address: str, seconds: float, security: Any = None) -> Any:
        self.clock.events.append(("probe", self.clock.at(), address, seconds, security))
        self.clock.now += min(self.cost, seconds)
        if self.errors:
            raise self.errors.pop(0)
        if isinstance(self.then, BaseException):
            raise self.then
        return self.then


def hook_of(clock: Clock) -> Any:
    def hook() -> None:
        clock.events.append(("hook", clock.at()))

    return hook


def refused(clock: Clock, cost: float = 0.0) -> Scheduler:
    return Scheduler(clock, [], ConnectionRefusedError("[Errno 111] Connection refused"), cost)


# --- _identify: the scheduler's identity, retried ----------------------------------------------------------------


def test_refused_attempts_are_retried_with_a_doubling_pause_until_the_budget(
    clock: Clock, events: list[tuple[Any, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(check, "_probe_scheduler", refused(clock))
    with pytest.raises(VerificationError) as err:
        check._identify("tcp://s:1", 3.0, FIXES, hook_of(clock))
    # each attempt gets what is left (at most 10 s), then the hook, then a pause: 0.5, 1, then what is left
    assert events == [
        ("probe", 0.0, "tcp://s:1", 3.0, None), ("hook", 0.0), ("sleep", 0.0, 0.5),
        ("probe", 0.5, "tcp://s:1", 2.5, None), ("hook", 0.5), ("sleep", 0.5, 1.0),
        ("probe", 1.5, "tcp://s:1", 1.5, None), ("hook", 1.5), ("sleep", 1.5, 1.5),
    ]  # fmt: skip
    assert (err.value.stage, err.value.fix) == ("connect", FIXES("connect"))
    assert err.value.problem == (
        "could not talk to a Dask scheduler at tcp://s:1 within 3 s (3 attempt(s)): ConnectionRefusedError: [Errno"
        " 111] Connection refused"
    )
    assert isinstance(err.value.__cause__, ConnectionRefusedError)


def test_the_pause_doubles_up_to_its_ceiling_and_an_attempt_gets_at_most_its_own(
    clock: Clock, events: list[tuple[Any, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(check, "_probe_scheduler", refused(clock, cost=0.25))
    with pytest.raises(VerificationError) as err:
        check._identify("tcp://s:1", 30.0, FIXES, None)
    pauses = [e[2] for e in events if e[0] == "sleep"]
    assert pauses == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0, 0.25]  # the last one: what was left
    probes = [e[3] for e in events if e[0] == "probe"]
    assert probes[:3] == [10.0, 10.0, 10.0] and probes[-1] == 0.5  # at most PROBE_ATTEMPT_SECONDS, then what is left
    assert len(probes) == 9 and clock.at() == 30.0
    assert "within 30 s (9 attempt(s)): ConnectionRefusedError" in err.value.problem


def test_an_attempt_longer_than_the_budget_is_cut_to_what_is_left(
    clock: Clock, events: list[tuple[Any, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(check, "_probe_scheduler", Scheduler(clock, [], TimeoutError(), cost=100.0))
    with pytest.raises(VerificationError):
        check._identify("tcp://s:1", 12.0, FIXES, None)
    assert events == [
        ("probe", 0.0, "tcp://s:1", 10.0, None), ("sleep", 10.0, 0.5),
        ("probe", 10.5, "tcp://s:1", 1.5, None), ("sleep", 12.0, 0.0),
    ]  # fmt: skip


def test_the_schedulers_reply_is_returned_once_it_answers(
    clock: Clock, events: list[tuple[Any, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    security = object()
    reply = {"type": "Scheduler", "id": "Scheduler-1"}
    errors: list[BaseException] = [ConnectionResetError("reset"), TimeoutError(), ConnectionRefusedError()]
    monkeypatch.setattr(check, "_probe_scheduler", Scheduler(clock, errors, reply))  # three failures, then the reply
    assert check._identify("tls://s:8786", 60.0, FIXES, hook_of(clock), security) is reply
    assert [e for e in events if e[0] == "probe"] == [
        ("probe", 0.0, "tls://s:8786", 10.0, security), ("probe", 0.5, "tls://s:8786", 10.0, security),
        ("probe", 1.5, "tls://s:8786", 10.0, security), ("probe", 3.5, "tls://s:8786", 10.0, security),
    ]  # fmt: skip
    assert [e for e in events if e[0] == "hook"] == [("hook", 0.0), ("hook", 0.5), ("hook", 1.5)]


def test_a_peer_that_never_answers_is_named_with_the_protocol(
    clock: Clock, events: list[tuple[Any, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(check, "_probe_scheduler", Scheduler(clock, [], TimeoutError(), cost=10.0))
    with pytest.raises(VerificationError) as err:
        check._identify("tcp://s:1", 11.0, FIXES, None)
    assert (err.value.stage, err.value.fix) == ("connect", FIXES("connect"))
    assert err.value.problem == (
        "no Dask scheduler answered at tcp://s:1 within 11 s (2 attempt(s), last: TimeoutError): refused,"
        " unresolvable, a scheduler pod not Ready, or a peer that accepts TCP but does not speak the Dask protocol"
    )
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_no_budget_is_no_attempt(clock: Clock, events: list[tuple[Any, ...]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(check, "_probe_scheduler", Scheduler(clock, [], {"type": "Scheduler"}))
    with pytest.raises(VerificationError) as err:
        check._identify("tcp://s:1", 0.0, FIXES, hook_of(clock))
    assert events == []
    assert err.value.problem == (
        "no Dask scheduler answered at tcp://s:1 within 0 s (0 attempt(s)): refused, unresolvable, a scheduler pod"
        " not Ready, or a peer that accepts TCP but does not speak the Dask protocol"
    )
    assert err.value.__cause__ is None


def test_a_stuck_pod_found_between_attempts_stops_the_retries(
    clock: Clock, events: list[tuple[Any, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(check, "_probe_scheduler", refused(clock))

    def stuck() -> None:
        raise VerificationError("connect", "pod s-0 cannot pull its image", "check the image")

    with pytest.raises(VerificationError) as err:
        check._identify("tcp://s:1", 60.0, FIXES, stuck)
    assert err.value.problem == "pod s-0 cannot pull its image" and len(events) == 1


# --- _wait_for_workers: min_workers, in steps with the hook in between --------------------------------------------


class Workers:
    """distributed.Client's contract: `wait_for_workers(n, timeout)` takes `timeout` on the clock and raises
    TimeoutError while fewer than `n` joined; `nthreads` lists those that joined. `joins_at`: when (seconds from the
    start) `joined` workers are there; before, none."""

    def __init__(
        self, clock: Clock, joined: int = 0, joins_at: float = 0.0, error: BaseException | None = None,
        nthreads: BaseException | None = None,
    ) -> None:  # fmt: skip
        self.clock, self.joined, self.joins_at, self.error, self.nthreads_error = (
            clock,
            joined,
            joins_at,
            error,
            nthreads,
        )

    def present(self) -> int:
        return self.joined if self.clock.at() >= self.joins_at else 0

    def wait_for_workers(self, n: int, timeout: float) -> None:
        self.clock.events.append(("wait", self.clock.at(), n, timeout))
        if self.error is not None:
            raise self.error
        if self.joined >= n and self.clock.at() + timeout >= self.joins_at:
            self.clock.now = max(self.clock.now, START + self.joins_at)
            return
        self.clock.now += timeout
        if sum(e[0] == "wait" for e in self.clock.events) > NEVER_ENDS:
            raise AssertionError("the loop never ends")
        raise TimeoutError(f"Only {self.present()}/{n} workers arrived after {timeout}")

    def nthreads(self, callback_timeout: float) -> dict[str, int]:
        self.clock.events.append(("nthreads", self.clock.at(), callback_timeout))
        if self.nthreads_error is not None:
            raise self.nthreads_error
        return {f"tcp://w{i}": 1 for i in range(self.present())}


def test_without_a_hook_it_waits_once_for_the_whole_budget(clock: Clock, events: list[tuple[Any, ...]]) -> None:
    assert check._wait_for_workers(Workers(clock, joined=3, joins_at=7.0), "tcp://s:8786", 2, 20.0, FIXES) == 3
    assert events == [("wait", 0.0, 2, 20.0), ("nthreads", 7.0, 5.0)]


def test_too_few_workers_within_the_budget_name_how_many_joined(clock: Clock, events: list[tuple[Any, ...]]) -> None:
    with pytest.raises(VerificationError) as err:
        check._wait_for_workers(Workers(clock, joined=1), "tcp://s:8786", 2, 20.0, FIXES)
    assert events == [("wait", 0.0, 2, 20.0), ("nthreads", 20.0, 5.0)]
    assert (err.value.stage, err.value.fix) == ("workers", FIXES("workers"))
    assert err.value.problem == (
        "1 worker(s) joined the scheduler at tcp://s:8786, fewer than min_workers=2, within 20 s"
    )
    assert err.value.__cause__ is None and err.value.__suppress_context__
    with pytest.raises(VerificationError) as err:
        check._wait_for_workers(Workers(clock, joined=1, nthreads=OSError()), "tcp://s:8786", 2, 20.0, FIXES)
    assert err.value.problem == (
        "an unknown number of worker(s) joined the scheduler at tcp://s:8786, fewer than min_workers=2, within 20 s"
    )


def test_with_a_hook_it_waits_in_steps_with_the_hook_in_between(clock: Clock, events: list[tuple[Any, ...]]) -> None:
    client = Workers(clock, joined=2, joins_at=12.0)
    assert check._wait_for_workers(client, "tcp://s:8786", 2, 60.0, FIXES, hook_of(clock)) == 2
    assert events == [
        ("wait", 0.0, 2, 5.0), ("hook", 5.0), ("wait", 5.0, 2, 5.0), ("hook", 10.0), ("wait", 10.0, 2, 5.0),
        ("nthreads", 12.0, 5.0),
    ]  # fmt: skip


def test_the_last_step_is_what_is_left_and_never_under_a_tenth(clock: Clock, events: list[tuple[Any, ...]]) -> None:
    with pytest.raises(VerificationError) as err:
        check._wait_for_workers(Workers(clock), "tcp://s:8786", 1, 12.0, FIXES, hook_of(clock))
    assert events == [
        ("wait", 0.0, 1, 5.0), ("hook", 5.0), ("wait", 5.0, 1, 5.0), ("hook", 10.0), ("wait", 10.0, 1, 2.0),
        ("nthreads", 12.0, 5.0),
    ]  # fmt: skip
    assert (
        err.value.problem == "0 worker(s) joined the scheduler at tcp://s:8786, fewer than min_workers=1, within 12 s"
    )
    events.clear()
    with pytest.raises(VerificationError) as err:
        check._wait_for_workers(Workers(clock), "tcp://s:8786", 1, 5.04, FIXES, hook_of(clock))
    assert [e[:4] for e in events] == [("wait", 12.0, 1, 5.0), ("hook", 17.0), ("wait", 17.0, 1, 0.1),
                                       ("nthreads", 17.1, 5.0)]  # fmt: skip
    assert err.value.problem.endswith("within 5.04 s")


def test_a_budget_used_up_exactly_ends_the_wait(clock: Clock, events: list[tuple[Any, ...]]) -> None:
    with pytest.raises(VerificationError):
        check._wait_for_workers(Workers(clock), "tcp://s:8786", 1, 10.0, FIXES, hook_of(clock))
    assert events == [("wait", 0.0, 1, 5.0), ("hook", 5.0), ("wait", 5.0, 1, 5.0), ("nthreads", 10.0, 5.0)]


def test_no_worker_to_wait_for_is_no_wait(clock: Clock, events: list[tuple[Any, ...]]) -> None:
    assert check._wait_for_workers(Workers(clock, joined=4), "tcp://s:8786", 0, 20.0, FIXES, hook_of(clock)) == 4
    assert events == [("nthreads", 0.0, 5.0)]


def test_an_unknown_count_is_the_workers_waited_for(clock: Clock, events: list[tuple[Any, ...]]) -> None:
    client = Workers(clock, joined=3, nthreads=OSError("gone"))
    assert check._wait_for_workers(client, "tcp://s:8786", 2, 20.0, FIXES) == 2


def test_a_scheduler_that_fails_to_list_its_workers_fails_the_stage(
    clock: Clock, events: list[tuple[Any, ...]]
) -> None:
    for hook in (None, hook_of(clock)):
        with pytest.raises(VerificationError) as err:
            check._wait_for_workers(Workers(clock, error=OSError("closed")), "tcp://s:8786", 1, 20.0, FIXES, hook)
        assert (err.value.stage, err.value.fix) == ("workers", FIXES("workers"))
        assert err.value.problem == "could not list the workers of tcp://s:8786: OSError: closed"
    assert [e[0] for e in events] == ["wait", "wait"]


def test_a_stuck_pod_found_while_waiting_fails_this_stage(clock: Clock, events: list[tuple[Any, ...]]) -> None:
    def stuck() -> None:
        raise VerificationError("connect", "pod w-1 cannot pull its image", "check the image")

    with pytest.raises(VerificationError) as err:
        check._wait_for_workers(Workers(clock), "tcp://s:8786", 1, 60.0, FIXES, stuck)
    assert (err.value.stage, err.value.problem, err.value.fix) == ("workers", "pod w-1 cannot pull its image",
                                                                  "check the image")  # fmt: skip
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert events == [("wait", 0.0, 1, 5.0)]
