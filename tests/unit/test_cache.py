"""The cluster cache on the MemoryStore: list, then follow the watch; its indexes and notifications."""

from __future__ import annotations

from collections.abc import Iterable

from berth.v1 import resources_pb2 as pb
from controlplane.cache import ClusterCache
from controlplane.store import Delete, Versioned, keys
from controlplane.store.memory import MemoryStore
from tests.unit.conftest import caught_up, put


def task(
    task_id: str, node: str = "", service: str = "", status: pb.TaskStatus.ValueType = pb.PENDING
) -> pb.Task:
    return pb.Task(
        id=task_id,
        cluster="default",
        service=service,
        node_id=node,
        desired_status=pb.DESIRED_RUNNING,
        last_status=status,
    )


def ids(found: Iterable[Versioned[pb.Task]]) -> list[str]:
    return sorted(v.value.id for v in found)


async def test_start_lists_what_the_store_holds(store: MemoryStore) -> None:
    await put(store, keys.cluster("default"), pb.Cluster(name="default"))
    await put(store, keys.node("n1"), pb.Node(id="n1", status=pb.READY))
    await put(store, keys.task("a"), task("a", node="n1", service="web"))
    await put(store, keys.task("b"), task("b", service="web"))
    await put(store, keys.task("c"), task("c", status=pb.STOPPED))
    await put(store, keys.alive("n1"), b"")
    cache = ClusterCache(store)
    await cache.start()
    try:
        assert cache.revision == store.revision
        assert ids(cache.tasks_on_node("n1")) == ["a"]
        assert ids(cache.tasks_of_service("default", "web")) == ["a", "b"]
        assert ids(cache.unplaced_tasks()) == ["b"]  # c is unplaced but STOPPED
        assert [n.value.id for n in cache.nodes()] == ["n1"]
        raw = cache.raw(keys.alive("n1"))
        assert raw is not None and raw.value == b""
        assert cache.cluster("default") is not None
    finally:
        await cache.stop()


async def test_the_watch_applies_puts_and_deletes_to_every_index(
    store: MemoryStore, cache: ClusterCache
) -> None:
    await put(store, keys.task("a"), task("a", service="web"))
    await caught_up(cache, store)
    assert ids(cache.unplaced_tasks()) == ["a"]
    assert cache.tasks_on_node("n1") == []

    await put(store, keys.task("a"), task("a", node="n1", service="web"))
    await caught_up(cache, store)
    assert cache.unplaced_tasks() == []
    assert ids(cache.tasks_on_node("n1")) == ["a"]

    await put(store, keys.task("a"), task("a", node="n2", service="web"))
    await caught_up(cache, store)
    assert cache.tasks_on_node("n1") == []
    assert ids(cache.tasks_on_node("n2")) == ["a"]
    assert ids(cache.tasks_of_service("default", "web")) == ["a"]
    found = cache.task("a")
    assert found is not None and found.mod_revision == store.revision

    await store.commit([Delete(keys.task("a"))])
    await caught_up(cache, store)
    assert cache.task("a") is None
    assert cache.tasks_on_node("n2") == []
    assert cache.tasks_of_service("default", "web") == []

    await put(store, keys.alive("n2"), b"")
    await caught_up(cache, store)
    assert cache.raw(keys.alive("n2")) is not None
    await store.commit([Delete(keys.alive("n2"))])
    await caught_up(cache, store)
    assert cache.raw(keys.alive("n2")) is None


async def test_an_unplaced_task_leaves_the_unplaced_set_when_it_stops(
    store: MemoryStore, cache: ClusterCache
) -> None:
    await put(store, keys.task("a"), task("a"))
    await put(store, keys.task("b"), task("b"))
    await caught_up(cache, store)
    assert ids(cache.unplaced_tasks()) == ["a", "b"]
    await put(store, keys.task("a"), task("a", status=pb.STOPPED))
    await caught_up(cache, store)
    assert ids(cache.unplaced_tasks()) == ["b"]


async def test_subscribers_hear_of_their_own_nodes_tasks_only(
    store: MemoryStore, cache: ClusterCache
) -> None:
    heard: list[str] = []
    unsubscribe = cache.subscribe_node("n1", lambda: heard.append("n1"))
    cache.subscribe_node("n2", lambda: heard.append("n2"))

    await put(store, keys.task("a"), task("a", node="n1"))
    await caught_up(cache, store)
    assert heard == ["n1"]

    heard.clear()
    await put(store, keys.task("b"), task("b", node="n2"))
    await caught_up(cache, store)
    assert heard == ["n2"]

    heard.clear()  # moving a task tells the node it left and the node it joined
    await put(store, keys.task("a"), task("a", node="n2"))
    await caught_up(cache, store)
    assert sorted(heard) == ["n1", "n2"]

    heard.clear()
    unsubscribe()
    await put(store, keys.task("c"), task("c", node="n1"))
    await caught_up(cache, store)
    assert heard == []


async def test_a_task_of_a_service_with_ports_tells_every_node(
    store: MemoryStore, cache: ClusterCache
) -> None:
    # Its endpoint is in the route table every node is sent.
    await put(
        store,
        keys.service("default", "web"),
        pb.Service(cluster="default", name="web", ports=[pb.ServicePort(port=80)]),
    )
    await caught_up(cache, store)
    heard: list[str] = []
    cache.subscribe_node("n2", lambda: heard.append("n2"))
    await put(store, keys.task("a"), task("a", node="n1", service="web"))
    await caught_up(cache, store)
    assert heard == ["n2"]


async def test_wait_for_revision_returns_once_seen_and_gives_up_at_its_timeout(
    store: MemoryStore, cache: ClusterCache
) -> None:
    revision = await put(store, keys.cluster("a"), pb.Cluster(name="a"))
    await cache.wait_for_revision(revision, timeout=2.0)
    assert cache.revision >= revision
    assert cache.cluster("a") is not None
    await cache.wait_for_revision(revision + 10, timeout=0.05)  # never written: returns anyway
    assert cache.revision == revision


async def test_a_broken_watch_is_healed_by_a_relist(store: MemoryStore, cache: ClusterCache) -> None:
    await put(store, keys.task("a"), task("a", node="n1"))
    await caught_up(cache, store)
    before = cache.node_tasks_version("n1")
    store.break_watches()
    # Written while nobody watches, and compacted so no watch could replay it:
    # only a fresh list finds it.
    await put(store, keys.task("b"), task("b", node="n1"))
    await put(store, keys.cluster("later"), pb.Cluster(name="later"))
    store.compact(store.revision)
    await caught_up(cache, store)
    assert ids(cache.tasks_on_node("n1")) == ["a", "b"]
    assert cache.node_tasks_version("n1") != before
