"""The service controller applies the crash-loop backoff: stored state, held starts, events."""

from __future__ import annotations

from berth.clock import now
from berth.v1 import resources_pb2 as pb
from controlplane.cache import ClusterCache
from controlplane.controllers.housekeeping import Housekeeper
from controlplane.controllers.scheduling import SchedulingController
from controlplane.controllers.services import ServiceController
from controlplane.events import EventLog
from controlplane.store import keys
from controlplane.store.memory import MemoryStore
from tests.unit.conftest import caught_up, put


def _controller(store: MemoryStore, cache: ClusterCache) -> ServiceController:
    events = EventLog(store)
    return ServiceController(store, cache, events, SchedulingController(store, cache, events))


async def _world(store: MemoryStore) -> None:
    node = pb.Node(id="n1", name="n1", status=pb.READY, cpu_units=4096, memory_mib=4096)
    await put(store, keys.node(node.id), node)
    await put(store, keys.alive(node.id), b"1")
    td = pb.TaskDefinition(
        family="web",
        revision=1,
        status=pb.ACTIVE,
        container_definitions=[pb.ContainerDefinition(name="c", image="busybox", memory=64, essential=True)],
    )
    await put(store, keys.taskdef("web", 1), td)
    service = pb.Service(
        cluster="default", name="web", task_definition="web:1", desired_count=1, status=pb.SERVICE_ACTIVE
    )
    await put(store, keys.service("default", "web"), service)


async def _fail_active(store: MemoryStore, cache: ClusterCache) -> None:
    """Every active task of web exits with code 1 (what an agent's report does)."""
    for versioned in cache.tasks_of_service("default", "web"):
        task = versioned.value
        if task.last_status == pb.STOPPED:
            continue
        task.last_status = pb.STOPPED
        task.desired_status = pb.DESIRED_STOPPED
        task.stop_code = pb.ESSENTIAL_CONTAINER_EXITED
        task.has_exit_code, task.exit_code = True, 1
        task.stopped_at.CopyFrom(now())
        await put(store, versioned.key, task)
    await caught_up(cache, store)


async def _pass(controller: ServiceController, store: MemoryStore, cache: ClusterCache) -> None:
    await controller.reconcile()
    await caught_up(cache, store)


def _state(cache: ClusterCache) -> pb.ServiceBackoff:
    found = cache.service("default", "web")
    assert found is not None
    return found.value.backoff


async def _events(store: MemoryStore) -> list[str]:
    found = await store.get(keys.events("default", "web"), pb.ServiceEvents)
    return [e.message for e in found.value.events] if found else []


async def test_failures_are_stored_held_back_and_told(store: MemoryStore, cache: ClusterCache) -> None:
    await _world(store)
    await caught_up(cache, store)
    controller = _controller(store, cache)
    await _pass(controller, store, cache)
    assert len(cache.tasks_of_service("default", "web")) == 1

    await _fail_active(store, cache)
    await _pass(controller, store, cache)  # records attempt 1
    assert _state(cache).attempts == 1
    await _pass(controller, store, cache)  # replaces at once
    assert len(cache.tasks_of_service("default", "web")) == 2

    await _fail_active(store, cache)
    await _pass(controller, store, cache)  # records attempt 2: wait 5 s
    state = _state(cache)
    assert (state.attempts, state.failed_tasks, state.last_failure) == (2, 2, "exit 1")
    for leader in (controller, _controller(store, cache)):  # a new leader holds back too
        await _pass(leader, store, cache)
        assert len(cache.tasks_of_service("default", "web")) == 2, "started during the backoff"
    messages = await _events(store)
    assert "service web: 1 task exited (exit 1); replacing at once" in messages
    assert messages[-1] == "service web is failing: 2 tasks exited in a row (exit 1); next attempt in 5 s"
    assert not any("steady state" in m for m in messages)


async def test_housekeeping_purges_a_crash_loops_older_attempts_early(
    store: MemoryStore, cache: ClusterCache
) -> None:
    await _world(store)
    stamp = now()
    for i in range(12):
        task = pb.Task(id=f"t{i:02}", cluster="default", service="web", node_id="n1")
        task.last_status, task.desired_status = pb.STOPPED, pb.DESIRED_STOPPED
        task.stop_code = pb.TASK_FAILED_TO_START
        task.stopped_at.seconds, task.stopped_at.nanos = stamp.seconds - 100 + i, 0
        await put(store, keys.task(task.id), task)
    await caught_up(cache, store)
    await Housekeeper(store, cache, stopped_task_retention=3600, keep_failed_per_service=10).reconcile()
    await caught_up(cache, store)
    left = sorted(t.value.id for t in cache.tasks_of_service("default", "web"))
    assert left == [f"t{i:02}" for i in range(2, 12)], "the newest 10 are kept, well within retention"
