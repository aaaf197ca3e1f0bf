"""The status writer on the MemoryStore: agents' reports folded into tasks, many per transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb
from controlplane.cache import ClusterCache
from controlplane.status import StatusWriter
from controlplane.store import Versioned, keys
from controlplane.store.memory import MemoryStore
from tests.unit.conftest import caught_up, put, until


@pytest.fixture()
async def writer(store: MemoryStore, cache: ClusterCache) -> AsyncIterator[StatusWriter]:
    status = StatusWriter(store, cache)
    yield status
    await status.stop()


def placed(task_id: str, status: pb.TaskStatus.ValueType = pb.PENDING) -> pb.Task:
    return pb.Task(
        id=task_id, cluster="default", node_id="n1", desired_status=pb.DESIRED_RUNNING, last_status=status
    )


def running(task_id: str, host_port: int = 0) -> agent_pb.TaskStatusReport:
    return agent_pb.TaskStatusReport(
        task_id=task_id,
        last_status=pb.RUNNING,
        network_bindings=[pb.NetworkBinding(container_port=8080, host_port=host_port)],
    )


async def stored(store: MemoryStore, task_id: str) -> Versioned[pb.Task]:
    found = await store.get(keys.task(task_id), pb.Task)
    assert found is not None
    return found


async def is_running(store: MemoryStore, *task_ids: str) -> bool:
    found = [await stored(store, t) for t in task_ids]
    return all(t.value.last_status == pb.RUNNING for t in found)


async def test_reports_queued_together_are_written_in_one_transaction(
    store: MemoryStore, cache: ClusterCache, writer: StatusWriter
) -> None:
    await put(store, keys.task("a"), placed("a"))
    await put(store, keys.task("b"), placed("b"))
    await caught_up(cache, store)
    writer.submit("n1", running("a", 32768))
    writer.submit("n1", running("b", 32769))
    writer.start(workers=1)
    await until(lambda: is_running(store, "a", "b"), "both reports written")
    a, b = await stored(store, "a"), await stored(store, "b")
    assert a.mod_revision == b.mod_revision  # one transaction
    assert a.value.HasField("started_at")  # as lifecycle.apply_report writes it
    assert [x.host_port for x in a.value.network_bindings] == [32768]
    assert [x.host_port for x in b.value.network_bindings] == [32769]


async def test_a_stale_cache_view_falls_back_to_one_write_per_report_on_fresh_reads(
    store: MemoryStore, cache: ClusterCache, writer: StatusWriter
) -> None:
    await put(store, keys.task("a"), placed("a"))
    await put(store, keys.task("b"), placed("b"))
    await caught_up(cache, store)
    await cache.stop()  # from here on the cache trails the store
    changed = placed("a")
    changed.cpu = 512  # a change the cache never sees
    await put(store, keys.task("a"), changed)
    writer.submit("n1", running("a"))
    writer.submit("n1", running("b"))
    writer.start(workers=1)
    await until(lambda: is_running(store, "a", "b"), "both reports written after the batch lost")
    a, b = await stored(store, "a"), await stored(store, "b")
    assert a.value.cpu == 512  # applied to what the store held, not to the cache's copy
    assert a.mod_revision != b.mod_revision  # report by report


async def test_a_late_running_report_never_resurrects_a_stopped_task(
    store: MemoryStore, cache: ClusterCache, writer: StatusWriter
) -> None:
    await put(store, keys.task("a"), placed("a", pb.STOPPED))
    await put(store, keys.task("b"), placed("b", pb.RUNNING))
    await put(store, keys.task("marker"), placed("marker"))
    await caught_up(cache, store)
    # b stops after the cache stopped following: only the store knows.
    await cache.stop()
    await put(store, keys.task("b"), placed("b", pb.STOPPED))
    before = {t: (await stored(store, t)).mod_revision for t in ("a", "b")}
    writer.submit("n1", running("a"))  # the cache knows it is STOPPED
    writer.submit("n1", running("b"))  # the cache still thinks it is RUNNING
    writer.start(workers=1)
    writer.submit("n1", running("marker"))  # queued last: once written, the others were handled
    await until(lambda: is_running(store, "marker"), "the marker report written")
    for task_id in ("a", "b"):
        after = await stored(store, task_id)
        assert after.value.last_status == pb.STOPPED
        assert after.mod_revision == before[task_id]


async def test_a_report_from_a_node_the_task_is_not_on_is_ignored(
    store: MemoryStore, cache: ClusterCache, writer: StatusWriter
) -> None:
    await put(store, keys.task("a"), placed("a"))
    await put(store, keys.task("marker"), placed("marker"))
    await caught_up(cache, store)
    writer.start(workers=1)
    writer.submit("n2", running("a"))  # a stale agent's copy
    writer.submit("n1", running("marker"))
    await until(lambda: is_running(store, "marker"), "the marker report written")
    assert (await stored(store, "a")).value.last_status == pb.PENDING


async def test_a_health_change_goes_into_the_history_in_the_write_that_records_it(
    store: MemoryStore, cache: ClusterCache, writer: StatusWriter
) -> None:
    await put(store, keys.task("a"), placed("a", pb.RUNNING))
    await caught_up(cache, store)
    before = (await stored(store, "a")).mod_revision
    report = running("a")
    report.health_status = pb.UNHEALTHY
    report.containers.add(name="web", health_status=pb.UNHEALTHY, health_output="exit 1: no /tmp/ok")
    writer.start(workers=1)
    writer.submit("n1", report)

    async def unhealthy() -> bool:
        return (await stored(store, "a")).value.health_status == pb.UNHEALTHY

    await until(unhealthy, "the health change written")
    after = await stored(store, "a")
    assert [(c.container, c.status, c.output) for c in after.value.health_history] == [
        ("web", pb.UNHEALTHY, "exit 1: no /tmp/ok")
    ]
    assert after.value.health_history[0].at.seconds > 0
    # One write, the one that recorded the change (MemoryStore bumps the revision per commit).
    assert after.mod_revision == before + 1
