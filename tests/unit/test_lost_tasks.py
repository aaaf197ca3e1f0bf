"""Tasks of a DOWN node: replaced at once, declared lost once their replacements serve, and
kept when their node comes back first (the surplus replacement goes instead)."""

from __future__ import annotations

import pytest

from berth.v1 import resources_pb2 as pb
from controlplane.cache import ClusterCache
from controlplane.controllers.nodes import NodeMonitor
from controlplane.controllers.services import decide
from controlplane.store import keys
from controlplane.store.memory import MemoryStore
from tests.unit.conftest import caught_up, put
from tests.unit.test_service_decide import service, task

DOWN = frozenset({"dead"})


def _originals() -> list[pb.Task]:
    return [task(f"o{i}", pb.RUNNING, node="dead", created=1) for i in range(3)]


@pytest.mark.parametrize(
    ("case", "replacements", "start", "lost", "stop"),
    [
        ("node just DOWN: three replacements start, nothing lost yet", [], 3, [], []),
        (
            "replacements placed but not running: the originals are kept",
            [task(f"r{i}", pb.PENDING, node="n2", created=2) for i in range(3)],
            0,
            [],
            [],
        ),
        (
            "one replacement serves: one original is lost",
            [task("r0", pb.RUNNING, node="n2", created=2)]
            + [task(f"r{i}", pb.PENDING, node="n2", created=2) for i in (1, 2)],
            0,
            ["o0"],
            [],
        ),
        (
            "all replacements serve: all originals are lost",
            [task(f"r{i}", pb.RUNNING, node="n2", created=2) for i in range(3)],
            0,
            ["o0", "o1", "o2"],
            [],
        ),
    ],
)
def test_tasks_of_a_down_node(
    case: str, replacements: list[pb.Task], start: int, lost: list[str], stop: list[str]
) -> None:
    decision = decide(service(3), _originals() + replacements, draining=DOWN, down=DOWN)
    assert (decision.start, sorted(decision.lost), decision.stop) == (start, lost, stop), case
    assert not decision.steady


def test_a_task_that_never_started_on_the_down_node_is_lost_at_once() -> None:
    decision = decide(service(1), [task("p", pb.PENDING, node="dead")], draining=DOWN, down=DOWN)
    assert (decision.start, decision.lost) == (1, ["p"])


def test_when_the_node_comes_back_first_its_tasks_are_kept_and_the_replacements_go() -> None:
    back = [task(f"o{i}", pb.RUNNING, node="back", created=1) for i in range(3)]
    replacements = [
        task("unplaced", pb.PENDING, node="", created=2),
        task("pending", pb.PENDING, node="n2", created=2),
        task("running", pb.RUNNING, node="n2", created=2),
    ]
    decision = decide(service(3), back + replacements)  # the node is READY again
    assert decision.lost == [] and decision.start == 0
    assert sorted(decision.stop) == ["pending", "running", "unplaced"], "the originals are kept"


def test_a_draining_node_is_not_a_down_one() -> None:
    on_draining = [task(f"o{i}", pb.RUNNING, node="drained", created=1) for i in range(2)]
    replacements = [task(f"r{i}", pb.RUNNING, node="n2", created=2) for i in range(2)]
    drained = frozenset({"drained"})
    decision = decide(service(2), on_draining + replacements, draining=drained)
    assert decision.lost == [] and sorted(decision.stop) == ["o0", "o1"]


async def test_the_monitor_loses_at_once_only_the_tasks_nobody_moves(
    store: MemoryStore, cache: ClusterCache
) -> None:
    await put(store, keys.node("dead"), pb.Node(id="dead", name="dead", status=pb.READY))
    await put(
        store, keys.service("default", "web"), pb.Service(cluster="default", name="web", desired_count=1)
    )
    tasks = {
        "of-web": pb.Task(service="web"),
        "one-off": pb.Task(),
        "of-a-gone-service": pb.Task(service="gone"),
        "asked-to-stop": pb.Task(service="web", desired_status=pb.DESIRED_STOPPED),
    }
    for task_id, t in tasks.items():
        t.id, t.cluster, t.node_id, t.last_status = task_id, "default", "dead", pb.RUNNING
        if t.desired_status != pb.DESIRED_STOPPED:
            t.desired_status = pb.DESIRED_RUNNING
        await put(store, keys.task(task_id), t)
    await caught_up(cache, store)
    clock = [1_000_000.0]
    monitor = NodeMonitor(store, cache, grace=3, startup_hold=0, clock=lambda: clock[0])
    for _ in range(3):
        await monitor.reconcile()
        await caught_up(cache, store)
        clock[0] += 2
    node = cache.node("dead")
    assert node is not None and node.value.status == pb.DOWN
    stopped = {t.value.id: t.value.stop_code for t in cache.tasks() if t.value.last_status == pb.STOPPED}
    assert stopped == {
        "one-off": pb.NODE_LOST,
        "of-a-gone-service": pb.NODE_LOST,
        "asked-to-stop": pb.NODE_LOST,
    }
    # Later, something asks the service's task to stop: no agent will, the monitor records it.
    current = cache.task("of-web")
    assert current is not None
    stopping = pb.Task()
    stopping.CopyFrom(current.value)
    stopping.desired_status = pb.DESIRED_STOPPED
    stopping.stop_code = pb.USER_INITIATED
    await put(store, current.key, stopping)
    await caught_up(cache, store)
    clock[0] += 1
    await monitor.reconcile()
    await caught_up(cache, store)
    final = cache.task("of-web")
    assert final is not None and final.value.last_status == pb.STOPPED
    assert final.value.stop_code == pb.USER_INITIATED, "the first reason given is kept"
