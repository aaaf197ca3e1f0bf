"""Node leases on the MemoryStore, with its clock driven by hand: heartbeats keep `alive/NODE`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from berth.v1 import resources_pb2 as pb
from controlplane.cache import ClusterCache
from controlplane.liveness import NodeLeases
from controlplane.store import keys
from controlplane.store.memory import MemoryStore
from tests.unit.conftest import caught_up, put, until

GRACE = 5


@pytest.fixture()
async def leases(store: MemoryStore, cache: ClusterCache) -> AsyncIterator[NodeLeases]:
    await put(store, keys.node("n1"), pb.Node(id="n1", status=pb.READY))
    await caught_up(cache, store)
    node_leases = NodeLeases(store, cache, grace=GRACE)
    yield node_leases
    await node_leases.close()


def alive_lease(store: MemoryStore, node: str = "n1") -> int:
    return store.lease_of(keys.alive(node))


async def test_the_first_beat_grants_a_lease_and_writes_the_alive_key(
    store: MemoryStore, leases: NodeLeases
) -> None:
    assert alive_lease(store) == 0
    await leases.beat("n1")
    lease = alive_lease(store)
    assert lease != 0
    assert store.time_to_live(lease) == GRACE
    entry = await store.get_raw(keys.alive("n1"))
    assert entry is not None and entry.value == b""


async def test_beats_refresh_the_same_lease(store: MemoryStore, leases: NodeLeases) -> None:
    await leases.beat("n1")
    lease = alive_lease(store)
    for _ in range(3):  # 12 s in all, well past one lease's TTL
        store.advance(GRACE - 1)
        await leases.beat("n1")
        await until(lambda: _refreshed(store, lease), "the keep-alive answered")
    assert alive_lease(store) == lease


async def _refreshed(store: MemoryStore, lease: int) -> bool:
    return store.time_to_live(lease) == GRACE


async def test_without_beats_the_lease_runs_out_and_the_key_goes(
    store: MemoryStore, leases: NodeLeases
) -> None:
    await leases.beat("n1")
    store.advance(GRACE)
    assert await store.get_raw(keys.alive("n1")) is None


async def test_an_expired_lease_is_replaced_by_a_new_one_on_the_next_beat(
    store: MemoryStore, leases: NodeLeases
) -> None:
    await leases.beat("n1")
    first = alive_lease(store)
    store.expire_lease(first)  # say the control plane stalled past the grace period
    assert alive_lease(store) == 0
    await leases.beat("n1")  # refreshes the dead lease: etcd answers TTL 0

    async def answered() -> bool:
        return (first, 0) in store.keep_alive_replies

    await until(answered, "the keep-alive of the dead lease answered")
    await leases.beat("n1")
    second = alive_lease(store)
    assert second not in (0, first)
    assert store.time_to_live(second) == GRACE


async def test_a_down_node_that_beats_is_ready_again_in_the_same_transaction_as_its_key(
    store: MemoryStore, cache: ClusterCache, leases: NodeLeases
) -> None:
    await leases.beat("n1")
    first = alive_lease(store)
    # The node monitor judged it lost (the lease still looked healthy here).
    await put(store, keys.node("n1"), pb.Node(id="n1", status=pb.DOWN))
    await caught_up(cache, store)
    await leases.beat("n1")
    node = await store.get(keys.node("n1"), pb.Node)
    alive = await store.get_raw(keys.alive("n1"))
    assert node is not None and alive is not None
    assert node.value.status == pb.READY
    assert alive.mod_revision == node.mod_revision  # one transaction
    assert alive.lease not in (0, first)
