"""Stopped tasks are kept for the retention, then purged in bounded batches, oldest first."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from berth.v1 import resources_pb2 as pb
from controlplane.cache import ClusterCache
from controlplane.config import ControlPlaneSettings
from controlplane.controllers import housekeeping
from controlplane.controllers.housekeeping import Housekeeper
from controlplane.main import parse_args
from controlplane.store import Condition, keys
from controlplane.store.api import Write
from controlplane.store.memory import MemoryStore
from tests.unit.conftest import caught_up, put

NOW = 1_000_000.0
DAY = 86_400


def _task(ident: str, status: pb.TaskStatus.ValueType, stopped_at: int = 0, created_at: int = 0) -> pb.Task:
    task = pb.Task(id=ident, cluster="default", last_status=status, exit_code=3, has_exit_code=True)
    task.stopped_at.seconds = stopped_at
    task.created_at.seconds = created_at
    return task


def test_the_default_retention_is_three_days() -> None:
    assert ControlPlaneSettings(listen="x", data_dir=Path(".")).stopped_task_retention == 3 * DAY
    assert parse_args(["--data-dir", "d"]).stopped_task_retention == 3 * DAY
    assert parse_args(["--data-dir", "d", "--stopped-task-retention", "2"]).stopped_task_retention == 2


async def test_stopped_tasks_stay_for_the_retention_then_go(store: MemoryStore, cache: ClusterCache) -> None:
    tasks = [
        _task("old", pb.STOPPED, stopped_at=int(NOW) - 3 * DAY - 1),
        _task("recent", pb.STOPPED, stopped_at=int(NOW) - 3 * DAY + 60),
        _task("legacy", pb.STOPPED, created_at=int(NOW) - 4 * DAY),  # no stopped_at
        _task("running", pb.RUNNING, created_at=int(NOW) - 9 * DAY),
    ]
    for task in tasks:
        await put(store, keys.task(task.id), task)
    await caught_up(cache, store)

    assert await Housekeeper(store, cache, 3 * DAY).purge_stopped(NOW) > 0

    await caught_up(cache, store)
    assert {t.value.id for t in cache.tasks()} == {"recent", "running"}
    kept = await store.get(keys.task("recent"), pb.Task)
    assert kept is not None and kept.value.exit_code == 3


async def test_a_backlog_is_purged_in_bounded_batches_over_passes(
    store: MemoryStore, cache: ClusterCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(housekeeping, "PURGE_PER_PASS", 120)
    for n in range(250):
        await put(store, keys.task(f"t{n:03}"), _task(f"t{n:03}", pb.STOPPED, stopped_at=1_000 + n))
    await caught_up(cache, store)
    sizes: list[int] = []
    real_commit = store.commit

    async def counting(writes: Sequence[Write], conditions: Sequence[Condition] = ()) -> int | None:
        sizes.append(len(writes))
        return await real_commit(writes, conditions)

    store.commit = counting  # type: ignore[method-assign]
    keeper = Housekeeper(store, cache, stopped_task_retention=60)

    await keeper.purge_stopped(NOW)
    await caught_up(cache, store)
    left = sorted(t.value.id for t in cache.tasks())
    assert len(left) == 130 and left[0] == "t120", "the oldest go first, at most PURGE_PER_PASS a pass"
    passes = 1
    while cache.tasks() and passes < 10:
        await keeper.purge_stopped(NOW)
        await caught_up(cache, store)
        passes += 1
    assert not cache.tasks() and passes == 3
    assert sizes and max(sizes) <= housekeeping.PURGE_BATCH < 128


async def test_a_task_changed_since_the_cache_saw_it_is_left_for_the_next_pass(
    store: MemoryStore, cache: ClusterCache
) -> None:
    await put(store, keys.task("t"), _task("t", pb.STOPPED, stopped_at=1))
    await caught_up(cache, store)
    await cache.stop()  # the cache now trails the store
    await put(store, keys.task("t"), _task("t", pb.STOPPED, stopped_at=2))

    assert await Housekeeper(store, cache, 60).purge_stopped(NOW) == 0
    assert await store.get(keys.task("t"), pb.Task) is not None
