"""A task's health history: which container changes are recorded, and the bound on their number."""

from __future__ import annotations

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb
from controlplane import health_history, lifecycle
from controlplane.health_history import HISTORY_LENGTH, MAX_OUTPUT

AT = Timestamp(seconds=1_700_000_000)


def state(name: str, health: int, output: str = "") -> pb.ContainerState:
    return pb.ContainerState(name=name, health_status=health, health_output=output)  # type: ignore[arg-type]


def seen(changes: list[pb.HealthChange]) -> list[tuple[str, int, str]]:
    return [(c.container, c.status, c.output) for c in changes]


@pytest.mark.parametrize(
    ("recorded", "reported", "expected"),
    [
        pytest.param([], [], [], id="no containers"),
        pytest.param([], [state("web", pb.HEALTH_UNKNOWN)], [], id="first report, no check yet"),
        pytest.param(
            [], [state("web", pb.HEALTHY)], [("web", pb.HEALTHY, "")], id="first report already healthy"
        ),
        pytest.param(
            [state("web", pb.HEALTH_UNKNOWN)],
            [state("web", pb.HEALTHY)],
            [("web", pb.HEALTHY, "")],
            id="turns healthy",
        ),
        pytest.param([state("web", pb.HEALTHY)], [state("web", pb.HEALTHY)], [], id="unchanged"),
        pytest.param(
            [state("web", pb.HEALTHY)],
            [state("web", pb.UNHEALTHY, "exit 1: no /tmp/ok")],
            [("web", pb.UNHEALTHY, "exit 1: no /tmp/ok")],
            id="turns unhealthy with the check's output",
        ),
        pytest.param(
            [state("web", pb.UNHEALTHY, "exit 1: a")],
            [state("web", pb.UNHEALTHY, "exit 1: b")],
            [],
            id="output alone",
        ),
        pytest.param(
            [state("web", pb.HEALTHY)],
            [state("web", pb.HEALTH_UNKNOWN)],
            [("web", pb.HEALTH_UNKNOWN, "")],
            id="restarted in place: starting again",
        ),
        pytest.param(
            [state("web", pb.HEALTHY), state("log", pb.HEALTH_UNKNOWN)],
            [state("web", pb.HEALTHY), state("log", pb.UNHEALTHY, "exit 2")],
            [("log", pb.UNHEALTHY, "exit 2")],
            id="only the container that changed",
        ),
        pytest.param(
            [state("web", pb.UNHEALTHY, "exit 1: x")],
            [state("web", pb.HEALTHY, "stale output")],
            [("web", pb.HEALTHY, "")],
            id="output only when unhealthy",
        ),
    ],
)
def test_changes(
    recorded: list[pb.ContainerState], reported: list[pb.ContainerState], expected: list[tuple[str, int, str]]
) -> None:
    found = health_history.changes(recorded, reported, AT)
    assert seen(found) == expected
    assert all(c.at == AT for c in found)


def test_the_output_is_one_line_bounded_like_health_output() -> None:
    long = "exit 1: " + "x" * 1000 + "\nsecond line"
    (change,) = health_history.changes([], [state("web", pb.UNHEALTHY, long)], AT)
    assert len(change.output) == MAX_OUTPUT
    assert change.output.endswith("...") and "\n" not in change.output
    (short,) = health_history.changes([], [state("web", pb.UNHEALTHY, "exit 1: no\nmore")], AT)
    assert short.output == "exit 1: no"


def test_appended_keeps_the_newest_oldest_first() -> None:
    def made(n: int) -> list[pb.HealthChange]:
        return [pb.HealthChange(container=f"c{i}") for i in range(n)]

    assert [c.container for c in health_history.appended(made(2), made(1))] == ["c0", "c1", "c0"]
    kept = health_history.appended(made(HISTORY_LENGTH), [pb.HealthChange(container="new")])
    assert len(kept) == HISTORY_LENGTH
    assert kept[0].container == "c1" and kept[-1].container == "new"
    assert health_history.appended(made(3), made(3), limit=4) == [*made(3)[2:], *made(3)]


def running_report(health: int, output: str = "", restarts: int = 0) -> agent_pb.TaskStatusReport:
    report = agent_pb.TaskStatusReport(task_id="t", last_status=pb.RUNNING, health_status=health)  # type: ignore[arg-type]
    report.containers.append(state("web", health, output))
    report.containers[0].restart_count = restarts
    return report


def test_a_flapping_check_cannot_grow_the_record_without_bound() -> None:
    task: pb.Task | None = pb.Task(id="t", node_id="n1", last_status=pb.RUNNING, health_checked=True)
    for i in range(3 * HISTORY_LENGTH):
        assert task is not None
        if i % 2:
            task = lifecycle.apply_report(task, "n1", running_report(pb.UNHEALTHY, f"exit 1: flap {i}"))
        else:
            task = lifecycle.apply_report(task, "n1", running_report(pb.HEALTHY))
    assert task is not None
    assert len(task.health_history) == HISTORY_LENGTH
    assert task.health_history[-1].output == f"exit 1: flap {3 * HISTORY_LENGTH - 1}"
    assert task.health_history[-1].status == pb.UNHEALTHY
    assert task.health_history[-2].status == pb.HEALTHY


def test_apply_report_records_running_changes_and_keeps_them_when_stopped() -> None:
    task = pb.Task(id="t", node_id="n1", last_status=pb.PENDING, health_checked=True)
    started = lifecycle.apply_report(task, "n1", running_report(pb.HEALTH_UNKNOWN))
    assert started is not None and not started.health_history  # starting: nothing decided yet
    healthy = lifecycle.apply_report(started, "n1", running_report(pb.HEALTHY))
    assert healthy is not None
    unhealthy = lifecycle.apply_report(healthy, "n1", running_report(pb.UNHEALTHY, "exit 1: no /tmp/ok"))
    assert unhealthy is not None
    assert lifecycle.apply_report(unhealthy, "n1", running_report(pb.UNHEALTHY, "exit 1: no /tmp/ok")) is None
    stopped_report = agent_pb.TaskStatusReport(task_id="t", last_status=pb.STOPPED)
    stopped_report.containers.append(state("web", pb.HEALTH_UNKNOWN))  # a stopped container has no health
    stopped = lifecycle.apply_report(unhealthy, "n1", stopped_report)
    assert stopped is not None and stopped.last_status == pb.STOPPED
    assert seen(list(stopped.health_history)) == [
        ("web", pb.HEALTHY, ""),
        ("web", pb.UNHEALTHY, "exit 1: no /tmp/ok"),
    ]
    assert stopped.health_history[0].at.seconds > 0


def test_a_restart_count_report_records_the_restarted_containers_new_health() -> None:
    healthy = pb.Task(id="t", node_id="n1", last_status=pb.RUNNING, health_status=pb.HEALTH_UNKNOWN)
    healthy.containers.append(state("web", pb.HEALTHY))
    restarted = lifecycle.apply_report(healthy, "n1", running_report(pb.HEALTH_UNKNOWN, restarts=1))
    assert restarted is not None
    assert seen(list(restarted.health_history)) == [("web", pb.HEALTH_UNKNOWN, "")]
