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
observation of its containers and the read of the last lines of output, the
report's trip up the stream and the status writer's batch into etcd. On this
project's test machine (real Docker, `sh -c "exit 1"`, two busy cores) that
took 0.05-0.6 s (tests/e2e/test_crash_loop_backoff.py prints it); 3 s leaves
five times the worst seen, and costs a rollout 3 s per wave of new tasks. A
container that dies later than that is caught by the crash-loop backoff and,
while its deployment is in progress, by the circuit breaker, as before.

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
