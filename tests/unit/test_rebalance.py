"""Rebalancing a spread service onto emptier hosts, one task at a time, never below its desired count."""

from __future__ import annotations

from berth import deployment_defaults
from berth.v1 import resources_pb2 as pb
from controlplane import backoff, deployments, rebalance
from controlplane.controllers.services import decide


def _service(desired: int = 6) -> pb.Service:
    created = pb.Service(
        cluster="default",
        name="web",
        task_definition="web:1",
        desired_count=desired,
        status=pb.SERVICE_ACTIVE,
        deployment_configuration=deployment_defaults.defaults(),
        ports=[pb.ServicePort(port=80, container_port=80)],
    )
    service = deployments.new_deployment(created, "web:1", backoff.timestamp(1.0))
    service.deployments[0].rollout_state = pb.COMPLETED
    return service


def _task(task_id: str, node: str, created: int = 0, status: int = pb.RUNNING) -> pb.Task:
    task = pb.Task(
        id=task_id,
        task_definition="web:1",
        deployment_id=1,
        node_id=node,
        last_status=status,  # type: ignore[arg-type]
        desired_status=pb.DESIRED_RUNNING,
    )
    task.created_at.seconds = created
    return task


NODES = {n: pb.Node(id=n, name=n, status=pb.READY) for n in ("a", "b", "c")}


def _lopsided() -> list[pb.Task]:
    return [_task(f"a{i}", "a", created=i) for i in range(3)] + [_task(f"b{i}", "b") for i in range(3)]


def test_the_newest_task_on_the_fullest_host_moves_where_the_scheduler_would_put_a_copy() -> None:
    tasks = [_task(f"a{i}", "a", created=i) for i in range(4)] + [_task(f"b{i}", "b") for i in range(2)]
    choice = rebalance.pick(tasks, NODES, lambda task: "c")
    assert choice is not None
    task, source, target = choice
    assert (task.id, source, target) == ("a3", "a", "c")


def test_no_move_when_balanced_or_when_the_copy_would_not_land_on_an_emptier_host() -> None:
    balanced = [_task(f"{n}{i}", n) for n in "abc" for i in range(2)]
    assert rebalance.pick(balanced, NODES, lambda task: "c") is None
    assert rebalance.pick(_lopsided(), NODES, lambda task: "b") is None  # 3 -> 3 gains nothing
    assert rebalance.pick(_lopsided(), NODES, lambda task: None) is None  # nowhere fits


def test_only_a_settled_spread_service_with_room_is_rebalanced() -> None:
    service = _service()
    tasks = _lopsided()
    assert rebalance.settled(service, tasks, frozenset(), failing=False)
    assert not rebalance.settled(service, tasks, frozenset(), failing=True)
    assert not rebalance.settled(
        service, [*tasks[:-1], _task("p", "c", status=pb.PENDING)], frozenset(), False
    )
    off = _service()
    off.deployment_configuration.rebalance = False
    assert not rebalance.settled(off, tasks, frozenset(), failing=False)
    binpack = _service()
    binpack.placement_strategy.append(pb.PlacementStrategy(type="binpack", field="memory"))
    assert not rebalance.settled(binpack, tasks, frozenset(), failing=False)
    # Spread that only breaks binpack's ties does not make the service a spread service.
    binpack.placement_strategy.append(pb.PlacementStrategy(type="spread", field="attribute:zone"))
    assert not rebalance.settled(binpack, tasks, frozenset(), failing=False)
    spread_first = _service()
    spread_first.placement_strategy.extend(
        [
            pb.PlacementStrategy(type="spread", field="instanceId"),
            pb.PlacementStrategy(type="binpack", field="cpu"),
        ]
    )
    assert rebalance.settled(spread_first, tasks, frozenset(), failing=False)
    no_room = _service()
    no_room.deployment_configuration.minimum_healthy_percent = 50
    no_room.deployment_configuration.maximum_percent = 100
    assert not rebalance.settled(no_room, tasks, frozenset(), failing=False)


def test_a_marked_task_is_replaced_first_and_leaves_only_once_the_replacement_serves() -> None:
    service = _service()
    tasks = _lopsided()
    tasks[2].rebalancing = True
    first = decide(service, tasks, now=10.0)
    assert (first.start, first.stop, first.deregister) == (1, [], [])
    replacement = _task("c0", "c", status=pb.PENDING)
    waiting = decide(service, [*tasks, replacement], now=11.0)
    assert (waiting.start, waiting.stop, waiting.deregister) == (0, [], []), "left before its replacement ran"
    replacement.last_status = pb.RUNNING
    moved = decide(service, [*tasks, replacement], now=12.0)
    assert (moved.start, moved.deregister) == (0, ["a2"])
    assert "Rebalancing service web" in moved.reasons["a2"]
