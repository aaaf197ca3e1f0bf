"""Unit-test fixtures: the MemoryStore fake and a cache following it (no etcd, no sleeping)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from google.protobuf.message import Message

from controlplane.cache import ClusterCache
from controlplane.store import Put
from controlplane.store.memory import MemoryStore


@pytest.fixture()
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture()
async def cache(store: MemoryStore) -> AsyncIterator[ClusterCache]:
    following = ClusterCache(store, relist_pause=0)
    await following.start()
    yield following
    await following.stop()


async def put(store: MemoryStore, key: str, value: Message | bytes, lease: int = 0) -> int:
    """Write one key unconditionally; the new revision."""
    revision = await store.commit([Put(key, value, lease=lease)])
    assert revision is not None
    return revision


async def caught_up(cache: ClusterCache, store: MemoryStore) -> None:
    """Wait (bounded) until the cache has applied everything the store holds."""
    await cache.wait_for_revision(store.revision, timeout=2.0)
    assert cache.revision == store.revision, "the cache did not catch up with the store"


async def until(condition: Callable[[], Awaitable[bool]], what: str, timeout: float = 2.0) -> None:
    """Wait (bounded) for work running in other tasks to make `condition` true."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"{what} did not happen within {timeout}s")
        await asyncio.sleep(0.001)
