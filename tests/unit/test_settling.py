"""A RUNNING task without a health check counts for rollouts and steady states once settled,
and the controller loop looks again exactly when one settles (not a resync later)."""

from __future__ import annotations

import asyncio
import time
import types

import pytest

from berth.v1 import resources_pb2 as pb
from controlplane import backoff, settling
from controlplane.cache import ClusterCache
from controlplane.controllers import services
from controlplane.controllers.loop import ControllerLoop
from controlplane.controllers.scheduling import SchedulingController
from controlplane.controllers.services import ServiceController
from controlplane.events import EventLog
from controlplane.store import keys
from controlplane.store.memory import MemoryStore
from tests.unit.conftest import caught_up, put, until

T0 = 1_700_000_000.0
SETTLE = settling.SETTLE_SECONDS


def _task(status: int = pb.RUNNING, started: float | None = T0, checked: bool = False) -> pb.Task:
    task = pb.Task(
        id="a",
        cluster="default",
        service="web",
        task_definition="web:1",
        node_id="n1",
        desired_status=pb.DESIRED_RUNNING,
        last_status=status,  # type: ignore[arg-type]
        health_checked=checked,
    )
    if started is not None:
        task.started_at.CopyFrom(backoff.timestamp(started))
    return task


@pytest.mark.parametrize(
    ("task", "at", "settles_at", "settled"),
    [
        (_task(), T0 + 0.5, T0 + SETTLE, False),
        (_task(), T0 + SETTLE, T0 + SETTLE, True),
        # A health check is evidence of its own: HEALTHY decides, not time.
        (_task(checked=True), T0 + 0.5, 0.0, True),
        # Not RUNNING: nothing to settle (it does not serve at all).
        (_task(pb.PENDING, started=None), T0, 0.0, True),
        # A record written before start times were kept has nothing to wait on.
        (_task(started=None), T0, 0.0, True),
    ],
)
def test_settling(task: pb.Task, at: float, settles_at: float, settled: bool) -> None:
    assert settling.settles_at(task) == settles_at
    assert settling.has_settled(task, at) == settled


def test_next_settle_is_the_earliest_still_ahead() -> None:
    early, late = _task(started=T0), _task(started=T0 + 1)
    assert settling.next_settle([late, early], T0 + 0.5) == T0 + SETTLE
    assert settling.next_settle([late, early], T0 + SETTLE) == T0 + 1 + SETTLE
    assert settling.next_settle([late, early], T0 + 1 + SETTLE) == 0.0


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


async def test_the_controller_looks_again_when_a_task_settles_and_only_then_says_steady(
    store: MemoryStore, cache: ClusterCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = T0 + 0.5
    monkeypatch.setattr(services, "time", types.SimpleNamespace(time=lambda: clock))
    await _world(store)
    await put(store, keys.task("a"), _task())
    await caught_up(cache, store)
    events = EventLog(store)
    controller = ServiceController(store, cache, events, SchedulingController(store, cache, events))

    async def messages() -> list[str]:
        found = await store.get(keys.events("default", "web"), pb.ServiceEvents)
        return [e.message for e in found.value.events] if found else []

    def rollout() -> int:
        found = cache.service("default", "web")
        assert found is not None
        return found.value.deployments[0].rollout_state

    for _ in range(2):  # the second pass sees what the first wrote
        await controller.reconcile()
        await caught_up(cache, store)
    assert rollout() == pb.IN_PROGRESS
    assert not any("steady state" in m for m in await messages())
    assert controller.look_again_at() == T0 + SETTLE
    assert len(cache.tasks_of_service("default", "web")) == 1, "nothing new started"

    # Nothing in the store changes; only time passes, and the controller still looks.
    clock = T0 + SETTLE
    for _ in range(2):
        await controller.reconcile()
        await caught_up(cache, store)
    assert rollout() == pb.COMPLETED
    said = await messages()
    assert "deployment 1 completed: web:1, 1 task running" in said
    assert said[-1] == "service web has reached a steady state."
    assert controller.look_again_at() == 0.0


class _Paced:
    """A controller whose first pass asks for another one shortly."""

    def __init__(self) -> None:
        self.passes = 0
        self._due = 0.0

    async def reconcile(self) -> int:
        self.passes += 1
        self._due = time.time() + 0.05 if self.passes == 1 else 0.0
        return 0

    def look_again_at(self) -> float:
        return self._due


class _Plain:
    async def reconcile(self) -> int:
        return 0


@pytest.mark.timeout(10)
async def test_the_loop_wakes_when_a_controller_says_and_not_a_resync_later(cache: ClusterCache) -> None:
    paced = _Paced()
    loop = ControllerLoop(cache, [_Plain(), paced], resync_interval=60.0)
    runner = asyncio.create_task(loop.run())

    async def passed_twice() -> bool:
        assert not runner.done(), runner
        return paced.passes >= 2

    try:
        await until(passed_twice, "a second pass at the controller's time", timeout=2.0)
        await asyncio.sleep(0.2)
        assert paced.passes == 2, "then it waits for a change or the resync again"
    finally:
        runner.cancel()
