"""Service deployments: which task definition a service is moving to, and how far it got.

A deployment is ECS's: the PRIMARY is what the service is moving to (or
stays at); ACTIVE ones are older deployments whose tasks are being replaced.
Starting one (a new task definition, or a forced new deployment) makes the
old PRIMARY ACTIVE. The service controller then rolls (`controllers/
services.py`, `decide`): new tasks start while the total stays within
`maximumPercent` of the desired count, and old tasks leave (out of the
endpoints first, stopped after the deregistration delay) only while the
healthy tasks stay at or above `minimumHealthyPercent`.

Rollout states (`account`, pure, run before every decision):

    IN_PROGRESS ──PRIMARY steady (desired count healthy, no old task left)──▶ COMPLETED
        │          (healthy: HEALTHY, or up `settling.SETTLE_SECONDS` without a check)
        │
        └──failed tasks of the deployment reach the threshold──▶ FAILED
              (circuit breaker)    rollback on: the last deployment that
                                   completed is PRIMARY again, IN_PROGRESS,
                                   with rolled_back_from set

The threshold is ECS's: half the desired count, at least 3, at most 200. A
failure is a task of the deployment that stopped by itself (an essential
container exited, or it failed to start) or was stopped for failing its
health check. A rollback is itself a failure for whoever waits on the
deployment, and it is never rolled back again: if the old revision fails too,
the crash-loop backoff paces it.

Everything lives in the Service record, so a restart or a leader change
continues a deployment where it was. Everything here is pure.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp

from berth.deployment_defaults import (
    configuration,
)
from berth.errors import InvalidArgument
from berth.v1 import operator_pb2 as api
from berth.v1 import resources_pb2 as pb
from controlplane import backoff, settling

MAX_DEREGISTRATION_DELAY = 3600
# ECS's upper bound for maximumPercent; minimumHealthyPercent is at most 100.
MAX_MAXIMUM_PERCENT = 200
MAX_REASON = 300


def configure(base: pb.DeploymentConfiguration, options: api.DeploymentOptions) -> pb.DeploymentConfiguration:
    """`base` with the options an operator gave; InvalidArgument (changing nothing) if they make no sense."""
    merged = pb.DeploymentConfiguration()
    merged.CopyFrom(base)
    if options.HasField("minimum_healthy_percent"):
        merged.minimum_healthy_percent = options.minimum_healthy_percent
    if options.HasField("maximum_percent"):
        merged.maximum_percent = options.maximum_percent
    if options.HasField("circuit_breaker"):
        merged.circuit_breaker = options.circuit_breaker
    if options.HasField("rollback"):
        merged.rollback = options.rollback
    if options.HasField("deregistration_delay"):
        merged.deregistration_delay = options.deregistration_delay
    if options.HasField("rebalance"):
        merged.rebalance = options.rebalance
    if merged.minimum_healthy_percent > 100:
        raise InvalidArgument(
            f"minimum healthy percent {merged.minimum_healthy_percent} is over 100: give 0-100"
        )
    if not 100 <= merged.maximum_percent <= MAX_MAXIMUM_PERCENT:
        raise InvalidArgument(
            f"maximum percent {merged.maximum_percent} is out of range: give 100-{MAX_MAXIMUM_PERCENT}"
        )
    if merged.minimum_healthy_percent >= merged.maximum_percent:
        # Equal percentages leave no room to start a new task before an old
        # one goes, nor to take one out: the deployment could never move.
        raise InvalidArgument(
            f"minimum healthy percent {merged.minimum_healthy_percent} must be below maximum percent "
            f"{merged.maximum_percent}, or a deployment can never replace a task"
        )
    if merged.deregistration_delay > MAX_DEREGISTRATION_DELAY:
        raise InvalidArgument(
            f"deregistration delay {merged.deregistration_delay} s is too long: "
            f"give 0-{MAX_DEREGISTRATION_DELAY} seconds"
        )
    return merged


def minimum_healthy(desired: int, config: pb.DeploymentConfiguration) -> int:
    """Healthy tasks to keep: the percentage of the desired count, rounded up (as ECS)."""
    return math.ceil(desired * config.minimum_healthy_percent / 100)


def maximum_total(desired: int, config: pb.DeploymentConfiguration) -> int:
    """Tasks allowed at once, rounded down (as ECS), but always room for one more than
    the minimum healthy count: otherwise rounding (desired 1 at 50/150) would
    leave a deployment stuck forever."""
    return max(desired * config.maximum_percent // 100, minimum_healthy(desired, config) + 1)


def failure_threshold(desired: int) -> int:
    """ECS's circuit breaker: half the desired count, at least 3, at most 200."""
    return min(200, max(3, math.ceil(desired / 2)))


def primary(service: pb.Service) -> pb.Deployment | None:
    for deployment in service.deployments:
        if deployment.status == pb.PRIMARY:
            return deployment
    return None


def owners(service: pb.Service) -> Callable[[pb.Task], int]:
    """The id of the deployment a task belongs to (0: none still listed), as a function
    built once per service, since it is asked for every task on every pass.

    Tasks started before deployments existed carry no id: they belong to the
    deployment of their task definition, the PRIMARY first.
    """
    ids = {d.id for d in service.deployments}
    by_definition: dict[str, int] = {}
    # The one written last wins: the PRIMARY, else the newest (the list is newest first).
    for deployment in sorted(reversed(service.deployments), key=lambda d: d.status == pb.PRIMARY):
        by_definition[deployment.task_definition] = deployment.id

    def owner_of(task: pb.Task) -> int:
        if task.deployment_id:
            return task.deployment_id if task.deployment_id in ids else 0
        return by_definition.get(task.task_definition, 0)

    return owner_of


def owner(task: pb.Task, service: pb.Service) -> int:
    """`owners(service)` for one task."""
    return owners(service)(task)


def new_deployment(service: pb.Service, task_definition: str, at: Timestamp) -> pb.Service:
    """The service with a new PRIMARY deployment of `task_definition`, IN_PROGRESS."""
    updated = pb.Service()
    updated.CopyFrom(service)
    for deployment in updated.deployments:
        if deployment.status == pb.PRIMARY:
            deployment.status = pb.DEPLOYMENT_ACTIVE
            deployment.updated_at.CopyFrom(at)
            if deployment.rollout_state == pb.IN_PROGRESS:
                deployment.rollout_state_reason = "replaced by a newer deployment before it completed"
    updated.deployment_count += 1
    fresh = pb.Deployment(
        id=updated.deployment_count,
        task_definition=task_definition,
        status=pb.PRIMARY,
        rollout_state=pb.IN_PROGRESS,
        created_at=at,
        updated_at=at,
        last_failure_at=at,
    )
    kept = list(updated.deployments)
    del updated.deployments[:]
    updated.deployments.extend([fresh, *kept])
    updated.task_definition = task_definition
    # A new revision starts with a clean slate: the old one's crash loop says
    # nothing about it, and its failures are the circuit breaker's to count.
    updated.backoff.CopyFrom(pb.ServiceBackoff(last_failure_at=at))
    return updated


@dataclass(frozen=True)
class Change:
    """What `account` changed, in plain words for the service's events."""

    service: pb.Service
    events: tuple[str, ...]


def _seconds(stamp: Timestamp) -> float:
    return stamp.seconds + stamp.nanos / 1e9


def _serving(task: pb.Task, now: float) -> bool:
    """RUNNING, wanted, in the endpoints and healthy enough to serve: HEALTHY, or
    without a health check and up for `settling.SETTLE_SECONDS` (a container that
    exits at once must not complete a deployment in the moment it was RUNNING)."""
    return (
        task.last_status == pb.RUNNING
        and task.desired_status == pb.DESIRED_RUNNING
        and not task.HasField("deregistered_at")
        and (not task.health_checked or task.health_status == pb.HEALTHY)
        and settling.has_settled(task, now)
    )


def _reason(text: str) -> str:
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def account(service: pb.Service, tasks: Iterable[pb.Task], at: Timestamp) -> Change | None:
    """Advance the service's deployments from what its tasks show; None when nothing changes.

    Counts new failures of the PRIMARY in progress and trips the circuit
    breaker, marks a PRIMARY that reached a steady state COMPLETED, and drops
    ACTIVE deployments that have no task left (keeping the last completed one
    while the PRIMARY may still need to roll back to it).
    """
    if service.status != pb.SERVICE_ACTIVE:
        return None
    tasks = list(tasks)
    updated = pb.Service()
    updated.CopyFrom(service)
    events: list[str] = []
    if not updated.deployments:
        # A service from before deployments existed: its current task
        # definition becomes deployment 1, which completes when it is steady.
        updated.deployment_count = max(updated.deployment_count, 1)
        updated.deployments.append(
            pb.Deployment(
                id=updated.deployment_count,
                task_definition=updated.task_definition,
                status=pb.PRIMARY,
                rollout_state=pb.IN_PROGRESS,
                created_at=at,
                updated_at=at,
                last_failure_at=at,
            )
        )
    config = configuration(updated)
    current = primary(updated)
    if current is None:  # not written by Berth; heal by making the newest PRIMARY
        current = updated.deployments[0]
        current.status = pb.PRIMARY
    owner_of = owners(updated)
    mine = [t for t in tasks if owner_of(t) == current.id]
    if current.rollout_state == pb.IN_PROGRESS:
        _count_failures(current, mine)
        threshold = failure_threshold(updated.desired_count)
        if config.circuit_breaker and not current.rolled_back_from and current.failed_tasks >= threshold:
            events.extend(_trip(updated, current, threshold, config, at))
            current = primary(updated) or current
            owner_of = owners(updated)  # the PRIMARY may have changed (a rollback)
            mine = [t for t in tasks if owner_of(t) == current.id]
    others_live = any(t.last_status != pb.STOPPED for t in tasks if owner_of(t) != current.id)
    deregistering = any(t.HasField("deregistered_at") and t.last_status != pb.STOPPED for t in mine)
    serving = sum(1 for t in mine if _serving(t, _seconds(at)))
    live_mine = sum(1 for t in mine if t.last_status != pb.STOPPED and t.desired_status == pb.DESIRED_RUNNING)
    if (
        current.rollout_state == pb.IN_PROGRESS
        and not others_live
        and not deregistering
        and serving == updated.desired_count
        and live_mine == updated.desired_count
    ):
        current.rollout_state = pb.COMPLETED
        current.completed_at.CopyFrom(at)
        current.updated_at.CopyFrom(at)
        tasks_text = _plural(updated.desired_count, "task")
        if current.rolled_back_from:
            current.rollout_state_reason = (
                f"rolled back from deployment {current.rolled_back_from}; back at a steady state"
            )
            events.append(
                f"rollback to deployment {current.id} ({current.task_definition}) finished: "
                f"{tasks_text} running; deployment {current.rolled_back_from} stays failed"
            )
        else:
            events.append(
                f"deployment {current.id} completed: {current.task_definition}, {tasks_text} running"
            )
    _drop_finished(updated, tasks)
    if updated == service:
        return None
    return Change(updated, tuple(events))


def _count_failures(deployment: pb.Deployment, tasks: list[pb.Task]) -> None:
    accounted = _seconds(deployment.last_failure_at)
    for task in sorted((t for t in tasks if backoff.is_failure(t)), key=lambda t: _seconds(t.stopped_at)):
        if _seconds(task.stopped_at) > accounted:
            deployment.failed_tasks += 1
            deployment.last_failure_at.CopyFrom(task.stopped_at)


def _trip(
    service: pb.Service,
    failed: pb.Deployment,
    threshold: int,
    config: pb.DeploymentConfiguration,
    at: Timestamp,
) -> list[str]:
    """The circuit breaker: FAILED, and back to the last completed deployment when rollback is on."""
    failed.rollout_state = pb.FAILED
    failed.updated_at.CopyFrom(at)
    why = f"{_plural(failed.failed_tasks, 'task')} failed (threshold {threshold})"
    target = _rollback_target(service, failed)
    if not config.rollback or target is None:
        stays = "rollback is off" if not config.rollback else "no earlier deployment completed to return to"
        failed.rollout_state_reason = _reason(f"circuit breaker: {why}; {stays}")
        return [f"deployment {failed.id} failed: {why}; {stays}"]
    failed.rollout_state_reason = _reason(
        f"circuit breaker: {why}; rolled back to deployment {target.id} ({target.task_definition})"
    )
    failed.status = pb.DEPLOYMENT_ACTIVE
    target.status = pb.PRIMARY
    target.rollout_state = pb.IN_PROGRESS
    target.rollout_state_reason = f"rollback from deployment {failed.id}"
    target.rolled_back_from = failed.id
    target.updated_at.CopyFrom(at)
    # Its own old failures are not this rollback's.
    target.last_failure_at.CopyFrom(at)
    target.ClearField("completed_at")
    service.task_definition = target.task_definition
    service.backoff.CopyFrom(pb.ServiceBackoff(last_failure_at=at))
    # The PRIMARY comes first in the list, then the others newest first.
    _replace(service, sorted(service.deployments, key=lambda d: (d.status != pb.PRIMARY, -d.id)))
    back = f"rolled back to deployment {target.id} ({target.task_definition})"
    return [f"deployment {failed.id} failed: {why}; {back}"]


def _rollback_target(service: pb.Service, failed: pb.Deployment) -> pb.Deployment | None:
    """The newest other deployment that reached a steady state."""
    completed = [d for d in service.deployments if d.id != failed.id and d.HasField("completed_at")]
    return max(completed, key=lambda d: d.id, default=None)


def _drop_finished(service: pb.Service, tasks: list[pb.Task]) -> None:
    """Drop ACTIVE deployments with no live task, except a rollback target still needed."""
    current = primary(service)
    owner_of = owners(service)
    live = {owner_of(t) for t in tasks if t.last_status != pb.STOPPED}
    needed = None
    if current is not None and current.rollout_state == pb.IN_PROGRESS and not current.rolled_back_from:
        target = _rollback_target(service, current)
        needed = target.id if target else None
    kept = [d for d in service.deployments if d.status == pb.PRIMARY or d.id in live or d.id == needed]
    if len(kept) != len(service.deployments):
        _replace(service, kept)


def _replace(service: pb.Service, deployments: list[pb.Deployment]) -> None:
    # Copies first: the elements of a repeated field are not to be trusted
    # once the field is cleared.
    copies = []
    for deployment in deployments:
        copy = pb.Deployment()
        copy.CopyFrom(deployment)
        copies.append(copy)
    del service.deployments[:]
    service.deployments.extend(copies)
