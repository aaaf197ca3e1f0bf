"""Task lifecycle transitions: status reports and stop requests."""

from __future__ import annotations

from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb
from controlplane import lifecycle


def placed_task(status: int = pb.PENDING) -> pb.Task:
    td = pb.TaskDefinition(
        family="web", revision=1, container_definitions=[pb.ContainerDefinition(name="w", memory=64)]
    )
    task = lifecycle.new_task("default", td, "web")
    task.node_id = "n1"
    task.last_status = status  # type: ignore[assignment]
    return task


def test_running_report_marks_running_with_bindings() -> None:
    report = agent_pb.TaskStatusReport(
        task_id="x",
        last_status=pb.RUNNING,
        network_bindings=[pb.NetworkBinding(container_port=80, host_port=32768)],
    )
    updated = lifecycle.apply_report(placed_task(), "n1", report)
    assert updated is not None
    assert updated.last_status == pb.RUNNING
    assert updated.network_bindings[0].host_port == 32768
    assert updated.started_at.seconds > 0


def test_stopped_report_records_exit_code_and_reason() -> None:
    report = agent_pb.TaskStatusReport(
        last_status=pb.STOPPED,
        has_exit_code=True,
        exit_code=137,
        stop_code=pb.ESSENTIAL_CONTAINER_EXITED,
        stopped_reason="Essential container in task exited",
    )
    updated = lifecycle.apply_report(placed_task(pb.RUNNING), "n1", report)
    assert updated is not None
    assert (updated.last_status, updated.desired_status) == (pb.STOPPED, pb.DESIRED_STOPPED)
    assert (updated.has_exit_code, updated.exit_code) == (True, 137)
    assert updated.stopped_reason == "Essential container in task exited"


def test_stopped_is_terminal() -> None:
    stopped = lifecycle.apply_report(
        placed_task(pb.RUNNING), "n1", agent_pb.TaskStatusReport(last_status=pb.STOPPED)
    )
    assert stopped is not None
    assert lifecycle.apply_report(stopped, "n1", agent_pb.TaskStatusReport(last_status=pb.RUNNING)) is None


def test_reports_from_another_node_are_ignored() -> None:
    assert (
        lifecycle.apply_report(placed_task(), "n2", agent_pb.TaskStatusReport(last_status=pb.RUNNING)) is None
    )


def test_first_stop_reason_wins() -> None:
    task = placed_task(pb.RUNNING)
    stopping = lifecycle.request_stop(task, pb.USER_INITIATED, "by user")
    assert stopping is not None
    assert lifecycle.request_stop(stopping, pb.SERVICE_SCHEDULER_INITIATED, "scaling") is None
    reported = lifecycle.apply_report(
        stopping,
        "n1",
        agent_pb.TaskStatusReport(
            last_status=pb.STOPPED, stop_code=pb.ESSENTIAL_CONTAINER_EXITED, stopped_reason="x"
        ),
    )
    assert reported is not None
    assert (reported.stop_code, reported.stopped_reason) == (pb.USER_INITIATED, "by user")


def test_a_recorded_restart_count_is_never_lowered_by_an_agent_that_restarted() -> None:
    """The agent counts restarts in memory only: after its own restart it reports 0 again."""
    running = pb.Task(id="t", node_id="n1", last_status=pb.RUNNING)
    running.containers.add(name="web", restart_count=2)
    running.containers.add(name="log", restart_count=0)
    report = agent_pb.TaskStatusReport(task_id="t", last_status=pb.RUNNING)
    report.containers.add(name="web", restart_count=0)
    report.containers.add(name="log", restart_count=0)
    assert lifecycle.apply_report(running, "n1", report) is None  # nothing to write
    report.containers[1].restart_count = 1  # a restart counted since: recorded
    updated = lifecycle.apply_report(running, "n1", report)
    assert updated is not None
    assert [c.restart_count for c in updated.containers] == [2, 1]
    report.last_status = pb.STOPPED
    report.containers[1].restart_count = 0
    stopped = lifecycle.apply_report(updated, "n1", report)
    assert stopped is not None and stopped.last_status == pb.STOPPED
    assert [c.restart_count for c in stopped.containers] == [2, 1]
