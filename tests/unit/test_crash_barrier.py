"""The crash barrier: one broken object stops only itself, and the loop survives any controller.

A task definition stored before the bounds existed (two containers at
2^32-1 CPU units: their sum overflows the task's uint32) made the service
controller raise on every pass, so no service scaled any more.
"""

from __future__ import annotations

import asyncio

import pytest

from berth.v1 import resources_pb2 as pb
from controlplane.cache import ClusterCache
from controlplane.controllers.loop import ControllerLoop
from controlplane.controllers.scheduling import SchedulingController
from controlplane.controllers.services import ServiceController
from controlplane.events import EventLog
from controlplane.metrics import CONTROLLER_FAILURES
from controlplane.store import keys
from controlplane.store.memory import MemoryStore
from tests.unit.conftest import caught_up, put, until

HUGE = 2**32 - 1


def _taskdef(family: str, cpu: int, containers: int = 1) -> pb.TaskDefinition:
    return pb.TaskDefinition(
        family=family,
        revision=1,
        status=pb.ACTIVE,
        container_definitions=[
            pb.ContainerDefinition(name=f"c{i}", image="busybox", cpu=cpu, memory=64, essential=True)
            for i in range(containers)
        ],
    )


def _service(name: str, family: str, count: int) -> pb.Service:
    return pb.Service(
        cluster="default",
        name=name,
        task_definition=f"{family}:1",
        desired_count=count,
        status=pb.SERVICE_ACTIVE,
    )


async def _world(store: MemoryStore) -> None:
    """A node with room, a good service and one whose stored definition overflows."""
    node = pb.Node(id="n1", name="n1", status=pb.READY, cpu_units=4096, memory_mib=4096)
    await put(store, keys.node(node.id), node)
    await put(store, keys.alive(node.id), b"1")
    # Written straight into the store, as if validation had been bypassed.
    await put(store, keys.taskdef("bad", 1), _taskdef("bad", HUGE, containers=2))
    await put(store, keys.taskdef("good", 1), _taskdef("good", 128))
    await put(store, keys.service("default", "bad"), _service("bad", "bad", 2))
    await put(store, keys.service("default", "good"), _service("good", "good", 3))


def _controllers(store: MemoryStore, cache: ClusterCache) -> tuple[ServiceController, EventLog]:
    events = EventLog(store)
    scheduler = SchedulingController(store, cache, events)
    return ServiceController(store, cache, events, scheduler), events


async def _events(store: MemoryStore, service: str) -> list[str]:
    found = await store.get(keys.events("default", service), pb.ServiceEvents)
    return [e.message for e in found.value.events] if found else []


async def test_a_service_whose_definition_overflows_is_skipped_and_told_why(
    store: MemoryStore, cache: ClusterCache
) -> None:
    await _world(store)
    await caught_up(cache, store)
    services, _ = _controllers(store, cache)

    await services.reconcile()  # raised ValueError (uint32 overflow) before the barrier
    await caught_up(cache, store)

    good = [t.value for t in cache.tasks_of_service("default", "good")]
    assert len(good) == 3 and all(t.node_id == "n1" for t in good)
    assert cache.tasks_of_service("default", "bad") == []
    (message,) = [m for m in await _events(store, "bad") if "could not be reconciled" in m]
    assert message.startswith("service bad could not be reconciled (service default/bad): ValueError")
    assert "\n" not in message


async def test_the_other_services_keep_scaling_and_healing_past_the_broken_one(
    store: MemoryStore, cache: ClusterCache
) -> None:
    await _world(store)
    await caught_up(cache, store)
    services, _ = _controllers(store, cache)
    await services.reconcile()
    await caught_up(cache, store)

    # Scale up: the broken service is still there, failing, on every pass.
    await put(store, keys.service("default", "good"), _service("good", "good", 5))
    await caught_up(cache, store)
    await services.reconcile()
    await caught_up(cache, store)
    live = [t for t in cache.tasks_of_service("default", "good") if t.value.last_status != pb.STOPPED]
    assert len(live) == 5

    # Heal: a task that stops is replaced.
    lost = live[0].value
    lost.last_status = pb.STOPPED
    lost.desired_status = pb.DESIRED_STOPPED
    await put(store, live[0].key, lost)
    await caught_up(cache, store)
    await services.reconcile()
    await caught_up(cache, store)
    live = [t for t in cache.tasks_of_service("default", "good") if t.value.last_status != pb.STOPPED]
    assert len(live) == 5


class _Exploding:
    def __init__(self) -> None:
        self.passes = 0

    async def reconcile(self) -> int:
        self.passes += 1
        raise RuntimeError("a bug in one controller")


class _Counting:
    def __init__(self) -> None:
        self.passes = 0

    async def reconcile(self) -> int:
        self.passes += 1
        return 0


@pytest.mark.timeout(10)
async def test_the_loop_survives_a_controller_that_raises_and_runs_the_others(
    store: MemoryStore, cache: ClusterCache
) -> None:
    exploding, counting = _Exploding(), _Counting()
    before = CONTROLLER_FAILURES.labels("_Exploding")._value.get()
    loop = ControllerLoop(cache, [exploding, counting], resync_interval=0.01)
    runner = asyncio.create_task(loop.run())

    async def passed_twice() -> bool:
        assert not runner.done(), runner  # the loop must not die
        return counting.passes >= 2 and exploding.passes >= 2

    try:
        await until(passed_twice, "two passes of both controllers", timeout=5.0)
    finally:
        runner.cancel()
    assert CONTROLLER_FAILURES.labels("_Exploding")._value.get() - before >= 2


async def test_the_housekeeper_skips_a_task_it_fails_on_and_tidies_the_rest(
    store: MemoryStore, cache: ClusterCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    from controlplane import lifecycle
    from controlplane.controllers import housekeeping

    for task_id in ("poison", "plain"):
        orphan = pb.Task(id=task_id, cluster="default", node_id="gone", last_status=pb.RUNNING)
        await put(store, keys.task(task_id), orphan)
    await caught_up(cache, store)
    real = lifecycle.mark_stopped

    def mark_stopped(task: pb.Task, code: pb.StopCode.ValueType, reason: str) -> pb.Task | None:
        if task.id == "poison":
            raise RuntimeError("a bug that only this task triggers")
        return real(task, code, reason)

    monkeypatch.setattr(lifecycle, "mark_stopped", mark_stopped)
    await housekeeping.Housekeeper(store, cache, stopped_task_retention=3600).reconcile()
    await caught_up(cache, store)

    statuses = {t.value.id: t.value.last_status for t in cache.tasks()}
    assert statuses == {"poison": pb.RUNNING, "plain": pb.STOPPED}


async def test_the_node_monitor_skips_a_node_it_fails_on_and_judges_the_rest(
    store: MemoryStore, cache: ClusterCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    from controlplane.controllers import nodes

    for node_id in ("poison", "plain"):
        await put(store, keys.node(node_id), pb.Node(id=node_id, name=node_id, status=pb.READY))
    await caught_up(cache, store)
    monitor = nodes.NodeMonitor(store, cache, grace=1, startup_hold=0)
    real = monitor._lose_tasks

    async def lose_tasks(node: pb.Node) -> int:
        if node.id == "poison":
            raise RuntimeError("a bug that only this node triggers")
        return await real(node)

    monkeypatch.setattr(monitor, "_lose_tasks", lose_tasks)
    monkeypatch.setattr(nodes, "CONFIRM", 0.0)
    monkeypatch.setattr(nodes, "settle_seconds", lambda grace: 0.0)
    await monitor.reconcile()  # the liveness keys are missing: both nodes are judged
    await caught_up(cache, store)

    statuses = {n.value.id: n.value.status for n in cache.nodes()}
    assert statuses["plain"] == pb.DOWN


async def test_the_scheduler_places_the_others_past_a_task_it_cannot_read(
    store: MemoryStore, cache: ClusterCache
) -> None:
    await _world(store)
    for task_id, ref, service in (("broken", "bad\n:1", "bad"), ("fine", "good:1", "good")):
        task = pb.Task(
            id=task_id,
            cluster="default",
            service=service,
            task_definition=ref,
            desired_status=pb.DESIRED_RUNNING,
            last_status=pb.PENDING,
            cpu=1,
            memory=16,
        )
        await put(store, keys.task(task_id), task)
    await caught_up(cache, store)
    events = EventLog(store)

    await SchedulingController(store, cache, events).reconcile()
    await caught_up(cache, store)

    placed = {t.value.id: t.value.node_id for t in cache.tasks()}
    assert placed == {"broken": "", "fine": "n1"}
    assert any(
        "could not be reconciled (task broken): InvalidArgument" in m for m in await _events(store, "bad")
    )
