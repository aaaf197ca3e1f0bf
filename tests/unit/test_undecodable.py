"""Bytes in etcd that are no Berth message are read as absent, never a crash (issue 8).

Something other than Berth (or a newer, incompatible Berth) may write under
the prefix; before, one such key stopped the cache's watch, and with it every
controller, and made listings fail with INTERNAL.
"""

from __future__ import annotations

from berth.v1 import resources_pb2 as pb
from controlplane.cache import ClusterCache
from controlplane.store import keys
from controlplane.store.memory import MemoryStore
from tests.unit.conftest import caught_up, put

GARBAGE = b"\xff\xff\xff\xff"


async def test_store_reads_skip_undecodable_values(store: MemoryStore) -> None:
    await put(store, keys.cluster("good"), pb.Cluster(name="good"))
    await put(store, keys.cluster("junk"), GARBAGE)
    assert await store.get(keys.cluster("junk"), pb.Cluster) is None
    found, _ = await store.scan(keys.CLUSTERS, pb.Cluster)
    assert [c.value.name for c in found] == ["good"]


async def test_the_cache_keeps_following_past_an_undecodable_value(
    store: MemoryStore, cache: ClusterCache
) -> None:
    await put(store, keys.node("n1"), pb.Node(id="n1", name="one"))
    await caught_up(cache, store)
    # A good value turned into garbage: the object is gone, not stuck at its old value.
    await put(store, keys.node("n1"), GARBAGE)
    await put(store, keys.task("0" * 32), GARBAGE)
    await put(store, keys.node("n2"), pb.Node(id="n2", name="two"))
    await caught_up(cache, store)
    assert cache.node("n1") is None
    assert cache.task("0" * 32) is None
    node = cache.node("n2")
    assert node is not None and node.value.name == "two"


async def test_a_relist_skips_undecodable_values(store: MemoryStore) -> None:
    await put(store, keys.service("default", "junk"), GARBAGE)
    await put(store, keys.service("default", "web"), pb.Service(cluster="default", name="web"))
    following = ClusterCache(store, relist_pause=0)
    await following.start()
    try:
        assert [s.value.name for s in following.services()] == ["web"]
    finally:
        await following.stop()
