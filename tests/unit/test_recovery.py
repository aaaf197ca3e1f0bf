"""RecoveryClock: seconds from a service task's failure to its replacement RUNNING, observed once."""

from __future__ import annotations

from berth.v1 import resources_pb2 as pb
from controlplane.recovery import RecoveryClock

KEY = ("default", "web")


def _failed(
    task_id: str, stopped: float, code: pb.StopCode.ValueType = pb.ESSENTIAL_CONTAINER_EXITED
) -> pb.Task:
    task = pb.Task(id=task_id, last_status=pb.STOPPED, stop_code=code)
    task.stopped_at.FromNanoseconds(int(stopped * 1e9))
    return task


def _running(task_id: str, started: float) -> pb.Task:
    task = pb.Task(id=task_id, last_status=pb.RUNNING)
    task.started_at.FromNanoseconds(int(started * 1e9))
    return task


def test_a_failure_then_its_replacement_is_observed_once() -> None:
    seen: list[float] = []
    clock = RecoveryClock(seen.append)
    assert clock.look(KEY, [_running("a", 10.0)]) is None  # first sight: learns, measures nothing
    assert clock.look(KEY, [_failed("a", 100.0)]) is None  # failed, not replaced yet
    assert clock.look(KEY, [_failed("a", 100.0), _running("b", 107.5)]) == 7.5
    assert clock.look(KEY, [_failed("a", 100.0), _running("b", 107.5)]) is None  # once
    assert seen == [7.5]


def test_history_before_the_first_look_is_not_measured() -> None:
    seen: list[float] = []
    clock = RecoveryClock(seen.append)
    assert clock.look(KEY, [_failed("a", 100.0), _running("b", 103.0)]) is None
    assert seen == []


def test_older_running_tasks_are_not_replacements_and_user_stops_are_not_failures() -> None:
    seen: list[float] = []
    clock = RecoveryClock(seen.append)
    clock.look(KEY, [_running("old", 10.0), _running("a", 20.0)])
    assert clock.look(KEY, [_running("old", 10.0), _failed("a", 50.0, pb.USER_INITIATED)]) is None
    assert clock.look(KEY, [_running("old", 10.0), _failed("a", 100.0)]) is None
    assert clock.look(KEY, [_running("old", 10.0), _failed("a", 100.0), _running("b", 112.0)]) == 12.0
    # A later failure starts a new measurement.
    tasks = [_running("old", 10.0), _failed("a", 100.0), _failed("b", 200.0), _running("c", 201.0)]
    assert clock.look(KEY, tasks) == 1.0
    assert seen == [12.0, 1.0]


def test_forget_drops_deleted_services() -> None:
    seen: list[float] = []
    clock = RecoveryClock(seen.append)
    clock.look(KEY, [])
    clock.forget([])
    assert clock.look(KEY, [_failed("a", 100.0), _running("b", 101.0)]) is None  # first sight again
    assert seen == []
