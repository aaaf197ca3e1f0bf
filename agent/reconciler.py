"""Decides what the agent must do, from desired and observed state (pure).

`plan` compares the control plane's snapshot of this host with what the
runtime shows and returns actions. It never starts a task twice: a task is
started only while etcd still says PENDING and no container of it exists,
and a container that exited is reported, not restarted (the service
controller starts a replacement task instead, as ECS does), unless its
restartPolicy restarts it in place (`agent.ordering.due_restarts`). A
non-essential container that exits leaves its task running.

Health follows ECS: only the health checks of the task definition count (an
image's own HEALTHCHECK is ignored), and `task_health` aggregates the
essential containers'. A RUNNING task whose health differs from what etcd
records is reported at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from agent import ordering
from agent.runtime.driver import ContainerHealth, ContainerPhase, ObservedContainer, ObservedTask
from berth.taskdef_lifecycle import restart_total
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb

ESSENTIAL_EXITED = "Essential container in task exited"
CONTAINER_VANISHED = "Task's containers were removed outside Berth"


@dataclass(frozen=True)
class Start:
    task_id: str


@dataclass(frozen=True)
class Stop:
    task_id: str
    timeout: int


@dataclass(frozen=True)
class Remove:
    task_id: str
    timeout: int


@dataclass(frozen=True)
class Restart:
    """Start these exited containers of a running task again, in place (their restartPolicy)."""

    task_id: str
    runtime_ids: tuple[str, ...]


@dataclass(frozen=True)
class Report:
    report: agent_pb.TaskStatusReport


Action = Start | Stop | Remove | Restart | Report


_HEALTH = {ContainerHealth.HEALTHY: pb.HEALTHY, ContainerHealth.UNHEALTHY: pb.UNHEALTHY}


def container_health(c: ObservedContainer, checked: frozenset[str]) -> pb.HealthStatus.ValueType:
    """ECS's health of one container: UNKNOWN unless it is running a check of its task definition."""
    if c.name not in checked or c.phase is not ContainerPhase.RUNNING:
        return pb.HEALTH_UNKNOWN
    return _HEALTH.get(c.health, pb.HEALTH_UNKNOWN)


def task_health(observed: ObservedTask, checked: frozenset[str]) -> pb.HealthStatus.ValueType:
    """ECS's task health: UNHEALTHY if any essential container with a check is, HEALTHY if all
    of them are, UNKNOWN otherwise (none has a check, or one is still starting).

    checked: the names of the containers whose definition has a healthCheck.
    """
    states = [container_health(c, checked) for c in observed.containers if c.essential and c.name in checked]
    if pb.UNHEALTHY in states:
        return pb.UNHEALTHY
    if states and all(state == pb.HEALTHY for state in states):
        return pb.HEALTHY
    return pb.HEALTH_UNKNOWN


def checked_containers(assignment: agent_pb.TaskAssignment | None) -> frozenset[str]:
    if assignment is None:
        return frozenset()
    return frozenset(
        c.name for c in assignment.task_definition.container_definitions if c.HasField("health_check")
    )


def _container_states(observed: ObservedTask, checked: frozenset[str]) -> list[pb.ContainerState]:
    states = []
    for c in observed.containers:
        state = pb.ContainerState(
            name=c.name,
            docker_id=c.runtime_id,
            reason=c.reason,
            health_status=container_health(c, checked),
            restart_count=c.restart_count,
        )
        if state.health_status == pb.UNHEALTHY:
            state.health_output = c.health_output
        state.last_status = (
            pb.RUNNING
            if c.phase is ContainerPhase.RUNNING
            else (pb.STOPPED if c.phase is ContainerPhase.EXITED else pb.PENDING)
        )
        if c.exit_code is not None:
            state.has_exit_code = True
            state.exit_code = c.exit_code
        states.append(state)
    return states


def report(
    task_id: str,
    status: pb.TaskStatus.ValueType,
    observed: ObservedTask | None = None,
    stop_code: pb.StopCode.ValueType = pb.STOP_CODE_UNSPECIFIED,
    reason: str = "",
    checked: frozenset[str] = frozenset(),
) -> agent_pb.TaskStatusReport:
    """checked: the containers with a health check (see `checked_containers`)."""
    message = agent_pb.TaskStatusReport(
        task_id=task_id, last_status=status, stop_code=stop_code, stopped_reason=reason
    )
    if observed is not None:
        message.containers.extend(_container_states(observed, checked))
        if status == pb.RUNNING:
            message.health_status = task_health(observed, checked)
        for c in observed.containers:
            message.network_bindings.extend(c.bindings)
        # The task's exit code is its first essential container's, as ECS shows it.
        exited = [c for c in observed.containers if c.exit_code is not None]
        exited.sort(key=lambda c: not c.essential)
        if exited:
            message.has_exit_code = True
            message.exit_code = exited[0].exit_code  # type: ignore[assignment]
            if not reason and exited[0].reason:
                message.stopped_reason = f"{ESSENTIAL_EXITED} ({exited[0].reason})"
    return message


def _plan_running(a: agent_pb.TaskAssignment, observed: ObservedTask | None) -> list[Action]:
    if observed is None:
        if a.last_status == pb.PENDING:
            return [Start(a.task_id)]
        return [
            Report(report(a.task_id, pb.STOPPED, None, pb.ESSENTIAL_CONTAINER_EXITED, CONTAINER_VANISHED))
        ]
    restarting = ordering.due_restarts(a.task_definition.container_definitions, observed.containers)
    essential_exited = any(
        c.essential and c.phase is ContainerPhase.EXITED and c not in restarting for c in observed.containers
    )
    if restarting and not essential_exited:
        return [Restart(a.task_id, tuple(c.runtime_id for c in restarting))]
    if essential_exited:
        if observed.any_running:
            return [Stop(a.task_id, observed.stop_timeout)]
        return [
            Report(
                report(
                    a.task_id,
                    pb.STOPPED,
                    observed,
                    pb.ESSENTIAL_CONTAINER_EXITED,
                    ESSENTIAL_EXITED,
                    checked_containers(a),
                )
            )
        ]
    complete = len(observed.containers) == len(a.task_definition.container_definitions)
    if not complete or any(c.phase is ContainerPhase.CREATED for c in observed.containers):
        # A start was interrupted (agent crash): clear it out; the next pass starts afresh.
        if a.last_status == pb.PENDING:
            return [Remove(a.task_id, observed.stop_timeout)]
        return [Stop(a.task_id, observed.stop_timeout)]
    checked = checked_containers(a)
    if a.last_status == pb.PENDING or (
        a.last_status == pb.RUNNING
        and (
            task_health(observed, checked) != a.health_status
            or restart_total(observed.containers) != a.restarts
        )
    ):
        return [Report(report(a.task_id, pb.RUNNING, observed, checked=checked))]
    return []


def _plan_stopped(a: agent_pb.TaskAssignment, observed: ObservedTask | None) -> list[Action]:
    if observed is not None and observed.any_running:
        return [Stop(a.task_id, observed.stop_timeout)]
    if a.last_status != pb.STOPPED:
        return [
            Report(
                report(a.task_id, pb.STOPPED, observed, a.stop_code, a.stopped_reason, checked_containers(a))
            )
        ]
    return []


def plan(
    desired: Mapping[str, agent_pb.TaskAssignment] | None,
    observed: Mapping[str, ObservedTask],
    busy: set[str],
    failed_starts: Mapping[str, agent_pb.TaskStatusReport],
) -> list[Action]:
    """Actions that move this host toward `desired`.

    desired None means no snapshot has arrived since the agent started: then
    nothing is touched (static stability; adopt, never guess).
    """
    if desired is None:
        return []
    actions: list[Action] = []
    for task_id, assignment in desired.items():
        if task_id in busy:
            continue
        if task_id in failed_starts and assignment.last_status != pb.STOPPED:
            actions.append(Report(failed_starts[task_id]))
            continue
        found = observed.get(task_id)
        if assignment.desired_status == pb.DESIRED_STOPPED:
            actions.extend(_plan_stopped(assignment, found))
        else:
            actions.extend(_plan_running(assignment, found))
    for task_id, found in observed.items():
        if task_id not in desired and task_id not in busy:
            actions.append(Remove(task_id, found.stop_timeout))
    return actions
