"""A service's events: bounded, de-duplicated, read newest first with a limit."""

from __future__ import annotations

import itertools

import pytest

from berth.errors import NotFound
from controlplane.cache import ClusterCache
from controlplane.events import MAX_EVENTS, EventLog
from controlplane.operations.services import ServiceSpec
from controlplane.store.memory import MemoryStore
from tests.unit.test_operations import build


async def test_events_are_read_newest_first_bounded_and_limited(
    store: MemoryStore, cache: ClusterCache
) -> None:
    ops = await build(store, cache)
    await ops.services.create(ServiceSpec("default", "web", "web", 1))
    log = EventLog(store)
    for n in range(MAX_EVENTS + 5):
        await log.record("default", "web", f"event {n}")
    await log.record("default", "web", f"event {MAX_EVENTS + 4}")  # a repeat is kept once

    everything = await ops.services.events("default", "web")
    assert len(everything) == MAX_EVENTS
    assert [e.message for e in everything[:2]] == [f"event {MAX_EVENTS + 4}", f"event {MAX_EVENTS + 3}"]
    assert everything[-1].message == "event 5", "the oldest are dropped, not the newest"
    assert all(
        a.created_at.ToNanoseconds() >= b.created_at.ToNanoseconds()
        for a, b in itertools.pairwise(everything)
    )

    newest = await ops.services.events("default", "web", limit=3)
    assert [e.message for e in newest] == [e.message for e in everything[:3]]
    assert (await ops.services.describe("default", "web")).events == everything


async def test_events_of_a_service_that_does_not_exist_are_not_found(
    store: MemoryStore, cache: ClusterCache
) -> None:
    ops = await build(store, cache)
    with pytest.raises(NotFound, match="does not exist"):
        await ops.services.events("default", "nope")
