"""The agent's pure planner: start once, report exits, adopt, remove orphans."""

from __future__ import annotations

from agent.reconciler import Remove, Report, Start, Stop, plan
from agent.runtime.driver import ContainerPhase, ObservedContainer, ObservedTask
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb

TD = pb.TaskDefinition(
    family="web", revision=1, container_definitions=[pb.ContainerDefinition(name="w", essential=True)]
)


def assignment(
    task_id: str,
    last: pb.TaskStatus.ValueType,
    desired: pb.DesiredStatus.ValueType = pb.DESIRED_RUNNING,
) -> agent_pb.TaskAssignment:
    return agent_pb.TaskAssignment(
        task_id=task_id, last_status=last, desired_status=desired, task_definition=TD
    )


def observed(task_id: str, phase: ContainerPhase, exit_code: int | None = None) -> ObservedTask:
    return ObservedTask(task_id, (ObservedContainer("w", "cid", phase, True, 5, exit_code),))


def test_no_snapshot_touches_nothing() -> None:
    assert plan(None, {"x": observed("x", ContainerPhase.RUNNING)}, set(), {}) == []


def test_pending_task_without_containers_is_started() -> None:
    assert plan({"a": assignment("a", pb.PENDING)}, {}, set(), {}) == [Start("a")]


def test_busy_tasks_are_left_alone() -> None:
    assert plan({"a": assignment("a", pb.PENDING)}, {}, {"a"}, {}) == []


def test_running_container_of_pending_task_is_reported_running() -> None:
    (action,) = plan(
        {"a": assignment("a", pb.PENDING)}, {"a": observed("a", ContainerPhase.RUNNING)}, set(), {}
    )
    assert isinstance(action, Report) and action.report.last_status == pb.RUNNING


def test_adopted_running_task_needs_nothing() -> None:
    assert (
        plan({"a": assignment("a", pb.RUNNING)}, {"a": observed("a", ContainerPhase.RUNNING)}, set(), {})
        == []
    )


def test_exited_essential_container_is_reported_not_restarted() -> None:
    (action,) = plan(
        {"a": assignment("a", pb.RUNNING)}, {"a": observed("a", ContainerPhase.EXITED, 137)}, set(), {}
    )
    assert isinstance(action, Report)
    assert action.report.last_status == pb.STOPPED
    assert (action.report.has_exit_code, action.report.exit_code) == (True, 137)
    assert action.report.stop_code == pb.ESSENTIAL_CONTAINER_EXITED


def test_vanished_running_task_is_reported_stopped() -> None:
    (action,) = plan({"a": assignment("a", pb.RUNNING)}, {}, set(), {})
    assert isinstance(action, Report) and action.report.last_status == pb.STOPPED


def test_stop_requested_stops_then_reports() -> None:
    wanted = {"a": assignment("a", pb.RUNNING, pb.DESIRED_STOPPED)}
    assert plan(wanted, {"a": observed("a", ContainerPhase.RUNNING)}, set(), {}) == [Stop("a", 5)]
    (action,) = plan(wanted, {"a": observed("a", ContainerPhase.EXITED, 143)}, set(), {})
    assert isinstance(action, Report) and action.report.last_status == pb.STOPPED


def test_orphans_are_removed() -> None:
    assert plan({}, {"gone": observed("gone", ContainerPhase.RUNNING)}, set(), {}) == [Remove("gone", 5)]


def test_interrupted_start_is_cleared_for_a_fresh_one() -> None:
    (action,) = plan(
        {"a": assignment("a", pb.PENDING)}, {"a": observed("a", ContainerPhase.CREATED)}, set(), {}
    )
    assert action == Remove("a", 5)


def test_failed_start_is_reported_not_retried() -> None:
    failure = agent_pb.TaskStatusReport(
        task_id="a", last_status=pb.STOPPED, stop_code=pb.TASK_FAILED_TO_START
    )
    (action,) = plan({"a": assignment("a", pb.PENDING)}, {}, set(), {"a": failure})
    assert action == Report(failure)
