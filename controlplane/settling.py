"""When a RUNNING task without a health check has shown that it stays up (pure).

Endpoints take a RUNNING task without a health check at once
(`endpoints.serves_health`): there is nothing better to wait for, and a client
is better served by it than by nobody. Three decisions ask for more evidence,
as Kubernetes' minReadySeconds does: a deployment's COMPLETED
(`deployments.account`), a service's steady state and a rollout's retiring of
old tasks because new ones serve (`controllers/services.py`, `decide`). Such a
task counts for them only once it has been RUNNING for SETTLE_SECONDS.

Why: the agent reports RUNNING as soon as the container starts, and STOPPED
when the engine says it exited. A container that exits at once is RUNNING in
between, and a controller pass that lands there would mark the first
deployment COMPLETED (so its circuit breaker stops counting), record "has
reached a steady state" for a crash loop, and take an old task out for a new
one that is already dead. A task with a health check is unchanged: HEALTHY is
its evidence.

SETTLE_SECONDS must be longer than the time from a crashing container's
RUNNING record to its STOPPED record: the engine's exit event, the agent's
look at its containers and read of the last lines of output, the report's trip
up the stream and the status writer's batch into etcd. Measured on real Docker
(`sh -c "exit 1"` in the test image, two busy cores, ten starting at once in
one run): 0.07-0.17 s over seven such tasks (most crashing tasks are seen
exited before RUNNING is ever reported, and are never RUNNING at all;
tests/e2e/test_crash_loop_backoff.py prints what it sees). 3 s is over
fifteen times the worst seen, room for a loaded host or etcd, and costs each
wave of a rollout without health checks 3 s (a forced deployment of 6 such
tasks on hollow agents: 7.1 s before, 10.1 s after). A container that dies
later than that was up for a while: the crash-loop backoff paces it, and the
circuit breaker counts it while its deployment is in progress, as before.

`Task.started_at` is the control plane's clock when it recorded RUNNING
(`lifecycle.apply_report`), and so is `now` here: no agent's clock skews it.
"""

from __future__ import annotations

from collections.abc import Iterable

from berth.v1 import resources_pb2 as pb

SETTLE_SECONDS = 3.0


def settles_at(task: pb.Task) -> float:
    """When the task counts as serving for a rollout or a steady state (0: at once).

    A task with a health check waits for HEALTHY instead, and a record with no
    start time (written before it was kept) has nothing to wait on.
    """
    if task.health_checked or task.last_status != pb.RUNNING or not task.started_at.seconds:
        return 0.0
    return task.started_at.seconds + task.started_at.nanos / 1e9 + SETTLE_SECONDS


def has_settled(task: pb.Task, now: float) -> bool:
    """Up long enough to count (always true for a task with a health check)."""
    return now >= settles_at(task)


def next_settle(tasks: Iterable[pb.Task], now: float) -> float:
    """The earliest instant after `now` at which one of `tasks` settles (0: none is settling)."""
    pending = [at for at in (settles_at(t) for t in tasks) if at > now]
    return min(pending, default=0.0)
