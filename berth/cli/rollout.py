"""What `berth service wait` and `service update --wait` conclude from a look
at a service, and the words they print: pure functions over the
`ServiceDescription` a poll returned, so every outcome is pinned by a table.

A waited-for deployment ends in one of these ways (exit code in brackets):

    COMPLETED   it is PRIMARY and its rollout COMPLETED: a steady state  [0]
    FAILED      its rollout FAILED (the circuit breaker tripped)         [1]
    ROLLED_BACK the PRIMARY is a rollback from it, or it is a rollback   [1]
    SUPERSEDED  a newer deployment became PRIMARY                        [1]
    DELETED     the service was deleted (or is being deleted)            [1]
    (timeout)   --timeout passed first (decided by the watcher)          [124]

A rollback is the failure it is, never a success: a CI pipeline can trust 0.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp

from berth.cli.deployments import counts_of, rollout_word, status_word
from berth.v1 import operator_pb2 as api
from berth.v1 import resources_pb2 as pb

EXIT_COMPLETED = 0
EXIT_FAILED = 1
EXIT_TIMEOUT = 124  # like timeout(1)


class Outcome(enum.Enum):
    COMPLETED = "completed"
    FAILED = "failed"
    ROLLED_BACK = "rolled back"
    SUPERSEDED = "superseded"
    DELETED = "deleted"


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    # The final line: what happened and why, in plain words.
    line: str

    @property
    def exit_code(self) -> int:
        return EXIT_COMPLETED if self.outcome is Outcome.COMPLETED else EXIT_FAILED


def primary(service: pb.Service) -> pb.Deployment | None:
    for deployment in service.deployments:
        if deployment.status == pb.PRIMARY:
            return deployment
    return None


def find(service: pb.Service, deployment_id: int) -> pb.Deployment | None:
    for deployment in service.deployments:
        if deployment.id == deployment_id:
            return deployment
    return None


def _named(deployment: pb.Deployment) -> str:
    return f"deployment {deployment.id} ({deployment.task_definition})"


def _failure_reason(description: api.ServiceDescription, failed_id: int, failed: pb.Deployment | None) -> str:
    """Why deployment `failed_id` failed: its rollout reason, or, once the deployment was dropped
    from the service (no task left), the event that said it."""
    if failed is not None and failed.rollout_state_reason:
        return failed.rollout_state_reason
    said = f"deployment {failed_id} failed: "
    for event in description.events:  # newest first
        if event.message.startswith(said):
            return event.message.removeprefix(said)
    return ""


def _rolled_back_line(failed_id: int, reason: str, back_to: pb.Deployment) -> str:
    """`deployment 3 failed: <why>; rolled back to deployment 2 (web:3)`, and whether the rollback is done."""
    line = f"deployment {failed_id} failed"
    if reason:
        line += f": {reason}"
    if f"deployment {back_to.id} " not in reason:  # the control plane's reason usually says it already
        line += f"; rolled back to {_named(back_to)}"
    if back_to.rollout_state == pb.IN_PROGRESS:
        line += " (the rollback is in progress)"
    return line


def _steady(description: api.ServiceDescription, deployment: pb.Deployment) -> bool:
    """COMPLETED, and its tasks (when counted) all run: a later scale-up is not yet steady."""
    if deployment.rollout_state != pb.COMPLETED:
        return False
    counts = counts_of(description, deployment.id)
    return counts is None or (counts.running_count >= counts.desired_count and not counts.pending_count)


def judge(description: api.ServiceDescription | None, waited: int) -> Verdict | None:
    """How the wait for deployment `waited` ended, or None while it goes on.

    `description` is None when the service is not found. `waited` 0 stands for
    a service without deployments (a record from before them): it is steady
    once the desired count runs.
    """
    if description is None or description.service.status == pb.SERVICE_DRAINING:
        return Verdict(Outcome.DELETED, f"deployment {waited}: the service was deleted")
    service = description.service
    current = primary(service)
    if current is None:
        if (
            waited == 0
            and description.running_count >= service.desired_count
            and not description.pending_count
        ):
            return Verdict(
                Outcome.COMPLETED,
                f"service {service.name} is steady: {description.running_count} tasks running",
            )
        return None
    waited_for = find(service, waited)
    if current.rolled_back_from and current.rolled_back_from == waited:
        reason = _failure_reason(description, waited, waited_for)
        return Verdict(Outcome.ROLLED_BACK, _rolled_back_line(waited, reason, current))
    if waited_for is None:
        if current.id > waited:
            return Verdict(Outcome.SUPERSEDED, f"deployment {waited} was superseded by {_named(current)}")
        return Verdict(Outcome.FAILED, f"deployment {waited} is gone; the primary is {_named(current)}")
    if waited_for.rolled_back_from:
        # Waiting on a rollback: the service is back on an old version because a new one failed.
        failed_id = waited_for.rolled_back_from
        reason = _failure_reason(description, failed_id, find(service, failed_id))
        line = _rolled_back_line(failed_id, reason, waited_for)
        return Verdict(Outcome.ROLLED_BACK, f"{_named(waited_for)} is a rollback: {line}")
    if waited_for.rollout_state == pb.FAILED:
        reason = waited_for.rollout_state_reason or "the circuit breaker tripped"
        return Verdict(Outcome.FAILED, f"deployment {waited} failed: {reason}")
    if waited_for.status != pb.PRIMARY:
        return Verdict(Outcome.SUPERSEDED, f"deployment {waited} was superseded by {_named(current)}")
    if _steady(description, waited_for):
        counts = counts_of(description, waited)
        healthy = counts.healthy_count if counts is not None else description.running_count
        return Verdict(
            Outcome.COMPLETED,
            f"deployment {waited} completed: {waited_for.task_definition}, {healthy} tasks healthy",
        )
    return None


def _progress(description: api.ServiceDescription, deployment: pb.Deployment) -> str:
    counts = counts_of(description, deployment.id) or api.DeploymentCounts(id=deployment.id)
    head = f"deployment {deployment.id} {deployment.task_definition} {status_word(deployment)}"
    if deployment.status == pb.PRIMARY:
        return (
            f"{head} {rollout_word(deployment)}: {counts.healthy_count}/{counts.desired_count} healthy, "
            f"{counts.running_count} running, {counts.pending_count} pending, {counts.failed_count} failed"
        )
    parts = [f"{counts.running_count} running"]
    parts += [
        f"{n} {word}" for n, word in ((counts.pending_count, "pending"), (counts.failed_count, "failed")) if n
    ]
    return f"{head}: {', '.join(parts)}"


def progress_line(description: api.ServiceDescription) -> str:
    """Every deployment's counts on one line, PRIMARY first (printed when it changes)."""
    service = description.service
    if not service.deployments:
        return (
            f"service {service.name}: {description.running_count}/{service.desired_count} running, "
            f"{description.pending_count} pending"
        )
    return " | ".join(_progress(description, d) for d in service.deployments)


def _at_or_after(stamp: Timestamp, since: Timestamp) -> bool:
    return (stamp.seconds, stamp.nanos) >= (since.seconds, since.nanos)


def events_since(
    description: api.ServiceDescription, since: Timestamp, limit: int = 10
) -> list[pb.ServiceEvent]:
    """The newest `limit` events at or after `since` (the control plane's clock), oldest first."""
    newest_first = [e for e in description.events if _at_or_after(e.created_at, since)][:limit]
    return list(reversed(newest_first))
