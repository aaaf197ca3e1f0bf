"""Crash-loop backoff: a service whose tasks keep failing waits longer before each new attempt.

Like ECS's task-launch throttling and Kubernetes' CrashLoopBackOff. A failure
is a task of the service that stopped by itself: an essential container
exited (ESSENTIAL_CONTAINER_EXITED) or the task could not start
(TASK_FAILED_TO_START), or the service stopped it because it failed its
container health check. Other stops decided by the scheduler, the user or a
lost node are not failures.

    attempt:   1     2     3      4      5      6       7       8 ...
    delay:     0 s   5 s   10 s   20 s   40 s   80 s    160 s   300 s (cap)

Tasks that fail together are one attempt: a failed task created before the
attempt's first failure was already running when it happened, so ten copies
crashing at once cost one step, not ten. The first failure is replaced at
once (one crash of a long-running task is an incident to heal, not a loop).

The streak ends when a task of the service has stayed up `reset_after`
(default 10 min, twice the cap, as the kubelet does): a task that outlived the
longest delay twice over is not part of the same loop.

The state lives in the Service record (`pb.ServiceBackoff`), written by the
service controller, so a leader change or a restart continues the backoff
instead of starting from zero. Everything here is pure.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp

from berth.v1 import resources_pb2 as pb

FAILURE_CODES = (pb.ESSENTIAL_CONTAINER_EXITED, pb.TASK_FAILED_TO_START)
MAX_DETAIL = 200
HEALTH_CHECK_DETAIL = "failed its health check"


@dataclass(frozen=True)
class Policy:
    first_delay: float = 5.0
    max_delay: float = 300.0
    reset_after: float = 600.0


@dataclass(frozen=True)
class Gate:
    """What the backoff allows the service controller right now.

    hold: start no replacement yet. failing: the service is in a failure
    streak, so it is not in a steady state. A deployment's new tasks are
    paced too (as ECS throttles launches); its circuit breaker counts their
    failures, and a new deployment or a rollback starts a fresh streak.
    """

    hold: bool = False
    failing: bool = False


OPEN = Gate()


def seconds(stamp: Timestamp) -> float:
    return stamp.seconds + stamp.nanos / 1e9


def timestamp(value: float) -> Timestamp:
    whole, nanos = divmod(round(value * 1e9), 1_000_000_000)
    return Timestamp(seconds=whole, nanos=nanos)


def delay(attempts: int, policy: Policy) -> float:
    """Seconds to wait after the `attempts`-th failed attempt in a row."""
    if attempts <= 1:
        return 0.0
    return min(policy.max_delay, policy.first_delay * float(2 ** min(attempts - 2, 32)))


def is_failure(task: pb.Task) -> bool:
    return task.last_status == pb.STOPPED and (task.stop_code in FAILURE_CODES or task.failed_health_check)


def failure_detail(task: pb.Task) -> str:
    if task.failed_health_check:
        return HEALTH_CHECK_DETAIL
    if task.stop_code != pb.TASK_FAILED_TO_START and task.has_exit_code:
        return f"exit {task.exit_code}"
    reason = " ".join(task.stopped_reason.split())
    if len(reason) > MAX_DETAIL:
        reason = reason[: MAX_DETAIL - 3] + "..."
    return reason or "exited"


def _proof_of_health(tasks: list[pb.Task], now: float, policy: Policy) -> float:
    """The latest instant at which a task had been up `reset_after` (0: none)."""
    latest = 0.0
    for task in tasks:
        if not task.started_at.seconds:
            continue
        started = seconds(task.started_at)
        end = seconds(task.stopped_at) if task.last_status == pb.STOPPED else now
        if end - started >= policy.reset_after:
            latest = max(latest, started + policy.reset_after)
    return latest


def advance(state: pb.ServiceBackoff, tasks: list[pb.Task], now: float, policy: Policy) -> pb.ServiceBackoff:
    """The service's backoff after looking at its tasks; equal to `state` when nothing changed."""
    updated = pb.ServiceBackoff()
    updated.CopyFrom(state)
    accounted = seconds(state.last_failure_at)
    healthy_at = _proof_of_health(tasks, now, policy)
    if healthy_at > accounted:
        if state.attempts:
            # The streak is over; failures before this instant are forgotten.
            updated = pb.ServiceBackoff(last_failure_at=timestamp(healthy_at))
        accounted = healthy_at
    failures = sorted(
        (t for t in tasks if is_failure(t) and seconds(t.stopped_at) > accounted),
        key=lambda t: seconds(t.stopped_at),
    )
    for task in failures:
        if not updated.attempts or seconds(task.created_at) >= seconds(updated.attempt_failed_at):
            updated.attempts += 1
            updated.attempt_failed_at.CopyFrom(task.stopped_at)
        updated.failed_tasks += 1
        updated.last_failure_at.CopyFrom(task.stopped_at)
        updated.last_failure = failure_detail(task)
        updated.failed_to_start = task.stop_code == pb.TASK_FAILED_TO_START
    if failures:
        updated.next_attempt_at.CopyFrom(
            timestamp(seconds(updated.last_failure_at) + delay(updated.attempts, policy))
        )
    return updated


def gate(state: pb.ServiceBackoff, now: float) -> Gate:
    return Gate(hold=seconds(state.next_attempt_at) > now, failing=state.attempts > 0)


def failing_message(service: str, state: pb.ServiceBackoff, policy: Policy) -> str:
    """The event for a new failed attempt; the same state always gives the same words."""
    count = state.failed_tasks
    tasks = "task" if count == 1 else "tasks"
    verb = "failed to start" if state.failed_to_start else "exited"
    if state.last_failure == HEALTH_CHECK_DETAIL:
        verb = "failed"
    wait = delay(state.attempts, policy)
    if not wait:
        return f"service {service}: {count} {tasks} {verb} ({state.last_failure}); replacing at once"
    return (
        f"service {service} is failing: {count} {tasks} {verb} in a row ({state.last_failure}); "
        f"next attempt in {wait:g} s"
    )
