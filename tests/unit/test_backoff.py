"""Crash-loop backoff: the arithmetic, the streak over tasks, and the gate, as tables."""

from __future__ import annotations

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from berth.v1 import resources_pb2 as pb
from controlplane import backoff, settling
from controlplane.controllers.housekeeping import surplus_failures
from controlplane.controllers.services import decide

POLICY = backoff.Policy(first_delay=5.0, max_delay=300.0, reset_after=600.0)
T0 = 1_700_000_000.0


def stamp(value: float) -> Timestamp:
    return backoff.timestamp(value)


def task(
    task_id: str,
    created: float,
    stopped: float | None = None,
    started: float | None = None,
    code: int = pb.ESSENTIAL_CONTAINER_EXITED,
    exit_code: int | None = 1,
    reason: str = "",
    service: str = "web",
) -> pb.Task:
    t = pb.Task(id=task_id, cluster="c", service=service, node_id="n1")
    t.created_at.CopyFrom(stamp(T0 + created))
    if started is not None:
        t.started_at.CopyFrom(stamp(T0 + started))
    if stopped is None:
        t.desired_status = pb.DESIRED_RUNNING
        t.last_status = pb.RUNNING if started is not None else pb.PENDING
        return t
    t.desired_status = pb.DESIRED_STOPPED
    t.last_status = pb.STOPPED
    t.stopped_at.CopyFrom(stamp(T0 + stopped))
    t.stop_code = code  # type: ignore[assignment]
    t.stopped_reason = reason
    if exit_code is not None:
        t.has_exit_code = True
        t.exit_code = exit_code
    return t


@pytest.mark.parametrize(
    ("attempts", "seconds"),
    [(0, 0), (1, 0), (2, 5), (3, 10), (4, 20), (5, 40), (6, 80), (7, 160), (8, 300), (9, 300), (1000, 300)],
)
def test_delay_doubles_from_the_second_attempt_to_the_cap(attempts: int, seconds: float) -> None:
    assert backoff.delay(attempts, POLICY) == seconds


@pytest.mark.parametrize(
    ("code", "failure"),
    [
        (pb.ESSENTIAL_CONTAINER_EXITED, True),
        (pb.TASK_FAILED_TO_START, True),
        (pb.USER_INITIATED, False),
        (pb.SERVICE_SCHEDULER_INITIATED, False),
        (pb.NODE_LOST, False),
    ],
)
def test_only_stops_of_the_task_itself_are_failures(code: int, failure: bool) -> None:
    assert backoff.is_failure(task("a", 0, stopped=1, code=code)) is failure
    assert not backoff.is_failure(task("a", 0, started=1))


def run(tasks: list[pb.Task], now: float, state: pb.ServiceBackoff | None = None) -> pb.ServiceBackoff:
    return backoff.advance(state or pb.ServiceBackoff(), tasks, T0 + now, POLICY)


def test_no_tasks_no_failures_change_nothing() -> None:
    assert run([], 10) == pb.ServiceBackoff()
    assert run([task("a", 0, started=1)], 10) == pb.ServiceBackoff()
    assert run([task("a", 0, stopped=5, code=pb.SERVICE_SCHEDULER_INITIATED)], 10) == pb.ServiceBackoff()


def test_one_failure_is_replaced_at_once() -> None:
    state = run([task("a", 0, started=0.5, stopped=1)], 2)
    assert (state.attempts, state.failed_tasks, state.last_failure) == (1, 1, "exit 1")
    assert backoff.seconds(state.next_attempt_at) == pytest.approx(T0 + 1)
    assert backoff.gate(state, T0 + 2) == backoff.Gate(hold=False, failing=True)


@pytest.mark.parametrize(
    ("failures", "attempts", "wait"),
    [
        # One replacement after another, each created after the previous failure.
        (2, 2, 5),
        (3, 3, 10),
        (5, 5, 40),
        (9, 9, 300),
    ],
)
def test_failures_in_a_row_double_the_wait(failures: int, attempts: int, wait: float) -> None:
    tasks = [task(f"t{i}", created=10 * i, stopped=10 * i + 1) for i in range(failures)]
    state = run(tasks, 10 * failures)
    assert (state.attempts, state.failed_tasks) == (attempts, failures)
    last = T0 + 10 * (failures - 1) + 1
    assert backoff.seconds(state.next_attempt_at) == pytest.approx(last + wait)


def test_tasks_failing_together_are_one_attempt() -> None:
    # Three copies ran together and crashed within a second: one attempt.
    tasks = [task(f"t{i}", created=0, stopped=1 + i / 10) for i in range(3)]
    state = run(tasks, 2)
    assert (state.attempts, state.failed_tasks) == (1, 3)
    # Their replacements (created after the first crash) crash too: attempt 2.
    tasks += [task(f"r{i}", created=1.5, stopped=2 + i / 10) for i in range(3)]
    state = run(tasks, 3, state)
    assert (state.attempts, state.failed_tasks) == (2, 6)
    assert backoff.gate(state, T0 + 3).hold
    assert not backoff.gate(state, T0 + 2.2 + 5.1).hold


def test_advance_is_idempotent_and_counts_each_failure_once() -> None:
    tasks = [task("a", 0, stopped=1), task("b", 1.5, stopped=2)]
    state = run(tasks, 3)
    assert run(tasks, 4, state) == state
    assert run(tasks, 1000, state) == state  # time alone changes nothing without a healthy task


def test_history_purged_does_not_reset_the_streak() -> None:
    state = run([task(f"t{i}", created=10 * i, stopped=10 * i + 1) for i in range(4)], 40)
    assert run([], 41, state) == state
    newer = run([task("t9", created=45, stopped=46)], 47, state)
    assert (newer.attempts, newer.failed_tasks) == (5, 5)


def test_a_task_up_for_reset_after_ends_the_streak() -> None:
    failed = [task(f"t{i}", created=10 * i, stopped=10 * i + 1) for i in range(4)]
    state = run(failed, 40)
    survivor = task("ok", created=50, started=51)
    # Up 599 s: still failing, no steady state.
    assert run([*failed, survivor], 51 + 599, state) == state
    after = run([*failed, survivor], 51 + 601, state)
    assert after.attempts == 0 and after.failed_tasks == 0
    assert backoff.gate(after, T0 + 700) == backoff.OPEN
    # A crash after that starts a new streak at attempt 1, replaced at once.
    crashed = task("ok", created=50, started=51, stopped=1000)
    again = run([*failed, crashed], 1001, after)
    assert (again.attempts, again.failed_tasks) == (1, 1)
    assert not backoff.gate(again, T0 + 1001).hold


def test_a_long_running_task_from_before_the_streak_does_not_end_it() -> None:
    # One copy has run for hours; the other keeps crashing: still a loop.
    stable = task("stable", created=-10_000, started=-10_000)
    failed = [task(f"t{i}", created=10 * i, stopped=10 * i + 1) for i in range(3)]
    state = run([stable, *failed], 30)
    assert state.attempts == 3
    assert run([stable, *failed], 60, state) == state


def test_failed_to_start_says_why() -> None:
    reason = "CannotPullContainerError: nope:latest: not found"
    tasks = [
        task(
            f"t{i}",
            created=10 * i,
            stopped=10 * i + 1,
            code=pb.TASK_FAILED_TO_START,
            exit_code=None,
            reason=reason,
        )
        for i in range(3)
    ]
    state = run(tasks, 30)
    assert state.failed_to_start and state.last_failure == reason
    assert backoff.failing_message("web", state, POLICY) == (
        f"service web is failing: 3 tasks failed to start in a row ({reason}); next attempt in 10 s"
    )


def test_messages() -> None:
    one = run([task("a", 0, stopped=1)], 2)
    assert (
        backoff.failing_message("web", one, POLICY)
        == "service web: 1 task exited (exit 1); replacing at once"
    )
    four = run([task(f"t{i}", created=10 * i, stopped=10 * i + 1, exit_code=3) for i in range(4)], 40)
    assert backoff.failing_message("web", four, POLICY) == (
        "service web is failing: 4 tasks exited in a row (exit 3); next attempt in 20 s"
    )


def service(desired: int) -> pb.Service:
    return pb.Service(name="web", desired_count=desired, status=pb.SERVICE_ACTIVE)


@pytest.mark.parametrize(
    ("gate", "tasks", "start", "held", "steady"),
    [
        (backoff.OPEN, [], 1, 0, False),
        (backoff.Gate(hold=True, failing=True), [], 0, 1, False),
        # The gate is open again: the next attempt starts.
        (backoff.Gate(hold=False, failing=True), [], 1, 0, False),
        # Running as desired, but still in a streak: not a steady state.
        (backoff.Gate(hold=False, failing=True), [task("a", 0, started=1)], 0, 0, False),
        (backoff.OPEN, [task("a", 0, started=1)], 0, 0, True),
        # Up half a second without a health check: it may be exiting at once, so not yet
        # steady (`settling`); up SETTLE_SECONDS, it is.
        (backoff.OPEN, [task("a", 59, started=59.5)], 0, 0, False),
        (backoff.OPEN, [task("a", 50, started=60 - settling.SETTLE_SECONDS)], 0, 0, True),
        # A hold never stops what runs.
        (backoff.Gate(hold=True, failing=True), [task("a", 0, started=1)], 0, 0, False),
    ],
)
def test_decide_follows_the_gate(
    gate: backoff.Gate, tasks: list[pb.Task], start: int, held: int, steady: bool
) -> None:
    # A minute on: the running task has long settled (`settling`), so only the gate decides.
    decision = decide(service(1), tasks, gate=gate, now=T0 + 60)
    assert (decision.start, decision.held, decision.steady, decision.stop) == (start, held, steady, [])


def test_housekeeping_keeps_the_newest_failures_of_each_service() -> None:
    web = [task(f"w{i}", created=i, stopped=i + 0.5) for i in range(15)]
    api = [task(f"a{i}", created=i, stopped=i + 0.5, service="api") for i in range(3)]
    scaled_in = [
        task(f"s{i}", created=i, stopped=i + 0.5, code=pb.SERVICE_SCHEDULER_INITIATED) for i in range(20)
    ]
    running = [task("r", created=0, started=1)]
    surplus = surplus_failures([*web, *api, *scaled_in, *running], keep=10)
    assert surplus == {f"w{i}" for i in range(5)}
    assert surplus_failures([*web], keep=100) == set()
