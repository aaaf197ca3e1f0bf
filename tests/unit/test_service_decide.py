"""The service controller's decisions, as a table of cases."""

from __future__ import annotations

import pytest

from berth.v1 import resources_pb2 as pb
from controlplane.controllers.services import decide


def task(
    task_id: str, last: int, desired: int = pb.DESIRED_RUNNING, node: str = "n1", created: int = 0
) -> pb.Task:
    t = pb.Task(id=task_id, last_status=last, desired_status=desired, node_id=node)  # type: ignore[arg-type]
    t.created_at.seconds = created
    return t


def service(desired: int, status: int = pb.SERVICE_ACTIVE) -> pb.Service:
    return pb.Service(name="web", desired_count=desired, status=status)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("desired", "tasks", "start", "stop"),
    [
        (2, [], 2, []),
        (2, [task("a", pb.RUNNING)], 1, []),
        # A stopped task does not count: it is replaced.
        (2, [task("a", pb.RUNNING), task("b", pb.STOPPED, pb.DESIRED_STOPPED)], 1, []),
        # A task already asked to stop does not count either.
        (1, [task("a", pb.RUNNING, pb.DESIRED_STOPPED)], 1, []),
        (2, [task("a", pb.RUNNING), task("b", pb.PENDING)], 0, []),
        # Scale in: unplaced first, then pending, then the newest running.
        (
            1,
            [
                task("old", pb.RUNNING, created=1),
                task("new", pb.RUNNING, created=2),
                task("u", pb.PENDING, node=""),
            ],
            0,
            ["u", "new"],
        ),
    ],
)
def test_desired_count(desired: int, tasks: list[pb.Task], start: int, stop: list[str]) -> None:
    decision = decide(service(desired), tasks)
    assert decision.start == start
    assert decision.stop == stop


def test_draining_service_stops_everything_then_is_deleted() -> None:
    draining = service(0, pb.SERVICE_DRAINING)
    first = decide(draining, [task("a", pb.RUNNING), task("b", pb.PENDING)])
    assert sorted(first.stop) == ["a", "b"]
    assert not first.delete_service
    stopping = decide(draining, [task("a", pb.RUNNING, pb.DESIRED_STOPPED)])
    assert stopping.stop == [] and not stopping.delete_service
    assert decide(draining, [task("a", pb.STOPPED, pb.DESIRED_STOPPED)]).delete_service


def test_steady_only_when_all_desired_run() -> None:
    assert decide(service(1), [task("a", pb.RUNNING)]).steady
    assert not decide(service(1), [task("a", pb.PENDING)]).steady


def test_drain_starts_replacements_first_and_never_dips_below_desired() -> None:
    draining = frozenset({"old"})
    tasks = [task("a", pb.RUNNING, node="old"), task("b", pb.RUNNING, node="old"), task("c", pb.RUNNING)]
    first = decide(service(3), tasks, draining)
    assert first.start == 2 and first.stop == []  # nothing stops before replacements run
    tasks += [task("d", pb.RUNNING, node="n2"), task("e", pb.PENDING, node="n2")]
    second = decide(service(3), tasks, draining)
    # 4 RUNNING against 3 desired: exactly one draining task may go.
    assert second.start == 0 and len(second.stop) == 1 and second.stop[0] in {"a", "b"}
    tasks[-1] = task("e", pb.RUNNING, node="n2")
    third = decide(service(3), tasks, draining)
    assert sorted(third.stop) == ["a", "b"]


def test_pending_tasks_on_a_draining_node_stop_at_once() -> None:
    decision = decide(service(1), [task("a", pb.PENDING, node="old")], frozenset({"old"}))
    assert decision.start == 1 and decision.stop == ["a"]
