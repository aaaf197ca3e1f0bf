"""The task lifecycle, as pure functions over `Task` messages.

    desiredStatus RUNNING                         desiredStatus STOPPED
    ─────────────────────                         ─────────────────────
    PENDING (unplaced) ──scheduler──▶ PENDING (on a node)
        │                                 │ agent started every container
        │ stop requested                  ▼
        │                              RUNNING ──essential container exits──▶ STOPPED
        ▼                                 │ stop requested (user, scaling)       ▲
     STOPPED                              └───────────▶ agent stops it ──────────┘

While RUNNING, the agent also reports the task's health (UNKNOWN, HEALTHY,
UNHEALTHY) each time it changes; a STOPPED task keeps the last one reported, and
the newest changes of its containers' health (`health_history`).

STOPPED is terminal: nothing moves a task out of it, so a late or repeated
report from an agent can never resurrect one. Every function here returns a
new message (or None for "no change") and never does I/O.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence

from berth.clock import now
from berth.taskdef import health_checked, task_reservation
from berth.taskdef_lifecycle import restart_total
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb
from controlplane import health_history


def task_definition_ref(td: pb.TaskDefinition) -> str:
    return f"{td.family}:{td.revision}"


def new_task(
    cluster: str,
    td: pb.TaskDefinition,
    service: str = "",
    strategy: Sequence[pb.PlacementStrategy] = (),
    constraints: Sequence[pb.PlacementConstraint] = (),
) -> pb.Task:
    cpu, memory = task_reservation(td)
    return pb.Task(
        id=uuid.uuid4().hex,
        cluster=cluster,
        service=service,
        task_definition=task_definition_ref(td),
        desired_status=pb.DESIRED_RUNNING,
        last_status=pb.PENDING,
        created_at=now(),
        cpu=cpu,
        memory=memory,
        placement_strategy=strategy,
        placement_constraints=constraints,
        health_checked=health_checked(td),
    )


def request_stop(task: pb.Task, code: pb.StopCode.ValueType, reason: str) -> pb.Task | None:
    """Ask for a task to stop; the first reason given is the one that is kept."""
    if task.desired_status == pb.DESIRED_STOPPED or task.last_status == pb.STOPPED:
        return None
    updated = pb.Task()
    updated.CopyFrom(task)
    updated.desired_status = pb.DESIRED_STOPPED
    updated.stop_code = code
    updated.stopped_reason = reason
    return updated


def mark_stopped(task: pb.Task, code: pb.StopCode.ValueType, reason: str) -> pb.Task | None:
    """Record a stop decided by the control plane (never started, node lost)."""
    if task.last_status == pb.STOPPED:
        return None
    updated = pb.Task()
    updated.CopyFrom(task)
    updated.desired_status = pb.DESIRED_STOPPED
    updated.last_status = pb.STOPPED
    if not updated.stop_code:
        updated.stop_code = code
        updated.stopped_reason = reason
    updated.stopped_at.CopyFrom(now())
    updated.pending_reason = ""
    return updated


def apply_report(task: pb.Task, node_id: str, report: agent_pb.TaskStatusReport) -> pb.Task | None:
    """Fold an agent's status report into the task; None when nothing changes.

    Reports from a node the task is not assigned to are ignored: that agent
    is stale (the task was replaced while it was away) and will be told to
    remove its copy.
    """
    if task.node_id != node_id or task.last_status == pb.STOPPED:
        return None
    containers = _kept_restart_counts(task.containers, report.containers)
    if (
        report.last_status == pb.RUNNING
        and task.last_status == pb.RUNNING
        and report.health_status == task.health_status
        and restart_total(containers) == restart_total(task.containers)
    ):
        return None
    updated = pb.Task()
    updated.CopyFrom(task)
    if report.last_status == pb.RUNNING:
        # Only a running container's health is news: a stopped one's is UNKNOWN by definition.
        health_history.record(updated, containers, now())
    del updated.containers[:]
    updated.containers.extend(containers)
    del updated.network_bindings[:]
    updated.network_bindings.extend(report.network_bindings)
    if report.last_status == pb.RUNNING:
        # A health change of a RUNNING task is a report of its own, written at once.
        updated.health_status = report.health_status
        if task.last_status != pb.RUNNING:
            updated.last_status = pb.RUNNING
            updated.started_at.CopyFrom(now())
        return updated
    if report.last_status != pb.STOPPED:
        return None
    updated.last_status = pb.STOPPED
    updated.desired_status = pb.DESIRED_STOPPED
    updated.stopped_at.CopyFrom(now())
    updated.has_exit_code = report.has_exit_code
    updated.exit_code = report.exit_code
    if report.HasField("kept_output"):
        # Checked at the boundary (agent_reports.check_kept_output); its containers go next.
        updated.kept_output.CopyFrom(report.kept_output)
    if not updated.stop_code:
        updated.stop_code = report.stop_code or pb.ESSENTIAL_CONTAINER_EXITED
        updated.stopped_reason = report.stopped_reason
    return updated


def _kept_restart_counts(
    recorded: Iterable[pb.ContainerState], reported: Iterable[pb.ContainerState]
) -> list[pb.ContainerState]:
    """The reported containers, each with the larger of its reported and recorded restart count:
    an agent counts restarts in memory only, so after its own restart it reports fewer, and a
    count once recorded is never lowered."""
    counts = {c.name: c.restart_count for c in recorded}
    kept = []
    for container in reported:
        state = pb.ContainerState()
        state.CopyFrom(container)
        state.restart_count = max(state.restart_count, counts.get(state.name, 0))
        kept.append(state)
    return kept


def is_active(task: pb.Task) -> bool:
    """Counts toward a service's desired count: wanted and not yet stopped."""
    return task.desired_status == pb.DESIRED_RUNNING and task.last_status != pb.STOPPED


def holds_resources(task: pb.Task) -> bool:
    """Occupies its node's CPU, memory and ports until its containers are gone."""
    return bool(task.node_id) and task.last_status != pb.STOPPED
