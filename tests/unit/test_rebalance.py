"""Rebalancing a spread service onto emptier hosts, one task at a time, never below its desired count."""

from __future__ import annotations

from berth import deployment_defaults
from berth.v1 import resources_pb2 as pb
from controlplane import backoff, deployments, rebalance
from controlplane.cache import ClusterCache
from controlplane.controllers.scheduling import SchedulingController
from controlplane.controllers.services import ServiceController, decide
from controlplane.events import EventLog
from controlplane.store import keys
from controlplane.store.memory import MemoryStore
from tests.unit.conftest import caught_up, put


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


async def test_no_rebalance_while_tasks_of_the_cluster_wait_for_their_first_placement(
    store: MemoryStore, cache: ClusterCache
) -> None:
    for name in ("a", "b"):
        node = pb.Node(id=name, name=name, status=pb.READY, cpu_units=4096, memory_mib=4096)
        await put(store, keys.node(name), node)
        await put(store, keys.alive(name), b"1")
    definition = pb.ContainerDefinition(name="web", image="web:1", essential=True, memory=64)
    await put(
        store,
        keys.taskdef("web", 1),
        pb.TaskDefinition(family="web", revision=1, status=pb.ACTIVE, container_definitions=[definition]),
    )
    service = _service(desired=2)
    service.ports.clear()
    await put(store, keys.service("default", "web"), service)
    for task in (_task("a0", "a", created=1), _task("a1", "a", created=2)):
        task.cluster, task.service = "default", "web"
        await put(store, keys.task(task.id), task)
    # Another service's new task, not yet placed: a scale-up is under way in this cluster.
    waiting = pb.Task(id="new", cluster="default", service="other", task_definition="web:1")
    waiting.desired_status, waiting.last_status = pb.DESIRED_RUNNING, pb.PENDING
    await put(store, keys.task(waiting.id), waiting)
    await caught_up(cache, store)
    events = EventLog(store)
    scheduler = SchedulingController(store, cache, events)
    services = ServiceController(store, cache, events, scheduler)

    await services.reconcile()
    await caught_up(cache, store)
    assert not any(t.value.rebalancing for t in cache.tasks_of_service("default", "web"))

    waiting.node_id = "b"  # placed: the scale-up is over
    await put(store, keys.task(waiting.id), waiting)
    await caught_up(cache, store)
    await services.reconcile()
    await caught_up(cache, store)
    marked = [t.value.id for t in cache.tasks_of_service("default", "web") if t.value.rebalancing]
    assert marked == ["a1"], "the service was left quiet while placing went on, and never looked at again"
