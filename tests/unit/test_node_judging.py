"""The node monitor's judging: settling, mass-failure protection and announced restarts.

`judge` is pinned by a table of cases; `NodeMonitor` and `NodeLeases.goodbye` run on the
MemoryStore with the monitor's clock driven by hand.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from berth.v1 import resources_pb2 as pb
from controlplane.cache import ClusterCache
from controlplane.controllers.nodes import (
    MASS_FAILURE_MIN_NODES,
    NodeMonitor,
    NodeView,
    Policy,
    judge,
    settle_seconds,
)
from controlplane.liveness import NodeLeases, heartbeat_interval
from controlplane.store import Delete, keys
from controlplane.store.memory import MemoryStore
from tests.unit.conftest import caught_up, put

GRACE = 10.0
NOW = 1_000_000.0
POLICY = Policy(GRACE, mass_failure_share=0.33)
SETTLE = settle_seconds(GRACE)


def _nodes(alive: int, silent: int, **silent_fields: float) -> list[NodeView]:
    return [NodeView(f"a{i}", pb.READY, alive=True) for i in range(alive)] + [
        NodeView(f"s{i}", pb.READY, alive=False, **silent_fields) for i in range(silent)
    ]


def _long_silent(nodes: list[NodeView]) -> dict[str, float]:
    return {n.id: NOW - SETTLE for n in nodes if not n.alive}


@pytest.mark.parametrize(
    ("case", "nodes", "down", "held", "mass"),
    [
        ("no node silent", _nodes(10, 0), 0, 0, False),
        ("one dead host of ten is judged", _nodes(9, 1), 1, 0, False),
        ("one silent host of three is judged", _nodes(2, 1), 1, 0, False),
        ("one silent host alone is judged", _nodes(0, 1), 1, 0, False),
        ("two of two: too few nodes for a share", _nodes(0, 2), 2, 0, False),
        ("three of ten: at the share, judged", _nodes(7, 3), 3, 0, False),
        ("four of ten: above the share, held", _nodes(6, 4), 0, 4, True),
        ("two of three: held", _nodes(1, 2), 0, 2, True),
        ("everyone silent: held", _nodes(0, 50), 0, 50, True),
    ],
)
def test_judge(case: str, nodes: list[NodeView], down: int, held: int, mass: bool) -> None:
    verdict = judge(nodes, _long_silent(nodes), NOW, POLICY)
    assert (len(verdict.down), len(verdict.held), verdict.mass_failure) == (down, held, mass), case


def test_a_key_just_missing_is_not_judged_before_it_settled() -> None:
    nodes = _nodes(9, 1)
    assert judge(nodes, {"s0": NOW - SETTLE + 0.1}, NOW, POLICY).down == []
    assert judge(nodes, {}, NOW, POLICY).down == []  # first seen missing now
    assert judge(nodes, {"s0": NOW - SETTLE}, NOW, POLICY).down == ["s0"]


def test_settling_covers_the_spread_of_lease_expiries_of_nodes_silenced_together() -> None:
    # Each lease was last refreshed somewhere within one heartbeat interval.
    assert settle_seconds(GRACE) > heartbeat_interval(GRACE)
    assert settle_seconds(3) > heartbeat_interval(3)
    # ... and a dead host is still judged within its grace and about two seconds.
    assert settle_seconds(GRACE) <= 2.0


def test_nodes_down_within_one_grace_count_toward_the_share() -> None:
    # Three went DOWN a moment ago, one by one; a fourth falls silent: 4 of 10 within a grace.
    recent = [NodeView(f"d{i}", pb.DOWN, alive=False, down_since=NOW - 2) for i in range(3)]
    nodes = recent + _nodes(6, 1)
    verdict = judge(nodes, _long_silent(nodes), NOW, POLICY)
    assert verdict.mass_failure and verdict.held == ["s0"] and verdict.down == []
    # DOWN for longer than a grace: no longer part of the count, nor of the nodes.
    old = [NodeView(f"d{i}", pb.DOWN, alive=False, down_since=NOW - GRACE - 1) for i in range(3)]
    verdict = judge(old + _nodes(6, 1), {"s0": NOW - SETTLE}, NOW, POLICY)
    assert (verdict.silent, verdict.nodes, verdict.down) == (1, 7, ["s0"])


def test_an_announced_restart_is_tolerated_until_its_window_closes_and_counts_toward_nothing() -> None:
    restarting = _nodes(2, 5, restarting_until=NOW + 30)
    verdict = judge(restarting, _long_silent(restarting), NOW, POLICY)
    assert verdict.down == [] and verdict.held == [] and not verdict.mass_failure
    assert len(verdict.restarting) == 5
    closed = _nodes(9, 1, restarting_until=NOW - 1)
    assert judge(closed, _long_silent(closed), NOW, POLICY).down == ["s0"]


def test_draining_nodes_are_judged_like_ready_ones() -> None:
    nodes = [NodeView("d", pb.DRAINING, alive=False), *_nodes(5, 0)]
    assert judge(nodes, {"d": NOW - SETTLE}, NOW, POLICY).down == ["d"]


def test_the_minimum_cluster_for_protection_is_three_nodes() -> None:
    assert MASS_FAILURE_MIN_NODES == 3


# -- the monitor on the memory store ------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
async def monitor(store: MemoryStore, cache: ClusterCache, clock: Clock) -> AsyncIterator[NodeMonitor]:
    yield NodeMonitor(store, cache, GRACE, startup_hold=0, clock=clock)


async def _cluster(store: MemoryStore, cache: ClusterCache, nodes: int, tasks_each: int = 2) -> None:
    for i in range(nodes):
        await put(store, keys.node(f"n{i}"), pb.Node(id=f"n{i}", name=f"n{i}", status=pb.READY))
        await put(store, keys.alive(f"n{i}"), b"")
        for t in range(tasks_each):
            task = pb.Task(
                id=f"t{i}-{t}",
                node_id=f"n{i}",
                desired_status=pb.DESIRED_RUNNING,
                last_status=pb.RUNNING,
            )
            await put(store, keys.task(task.id), task)
    await caught_up(cache, store)


async def _silence(store: MemoryStore, cache: ClusterCache, *node_ids: str) -> None:
    for node_id in node_ids:
        await store.commit([Delete(keys.alive(node_id))])
    await caught_up(cache, store)


async def _pass(
    monitor: NodeMonitor, store: MemoryStore, cache: ClusterCache, clock: Clock, after: float
) -> None:
    clock.now += after
    await monitor.reconcile()
    await caught_up(cache, store)


def _status(cache: ClusterCache) -> dict[str, int]:
    return {n.value.id: n.value.status for n in cache.nodes()}


def _lost(cache: ClusterCache) -> set[str]:
    return {t.value.id for t in cache.tasks() if t.value.stop_code == pb.NODE_LOST}


async def test_a_single_dead_host_is_down_once_its_key_settled_missing_and_its_tasks_lost(
    store: MemoryStore, cache: ClusterCache, monitor: NodeMonitor, clock: Clock
) -> None:
    await _cluster(store, cache, 10)
    await _silence(store, cache, "n3")
    await _pass(monitor, store, cache, clock, 0)
    assert _status(cache)["n3"] == pb.READY  # just seen missing
    await _pass(monitor, store, cache, clock, SETTLE)
    assert _status(cache)["n3"] == pb.DOWN
    assert _lost(cache) == {"t3-0", "t3-1"}
    assert cache.raw(keys.mass_failure()) is None


async def test_most_nodes_silent_at_once_are_held_the_event_is_stored_and_cleared_when_they_return(
    store: MemoryStore, cache: ClusterCache, monitor: NodeMonitor, clock: Clock
) -> None:
    await _cluster(store, cache, 10)
    silent = [f"n{i}" for i in range(7)]
    await _silence(store, cache, *silent)
    for _ in range(5):  # well past the grace
        await _pass(monitor, store, cache, clock, GRACE)
    assert all(s == pb.READY for s in _status(cache).values())
    assert _lost(cache) == set()
    event = cache.raw(keys.mass_failure())
    assert event is not None and b"7 of 10 nodes stopped heartbeating" in (event.value or b"")
    # They come back: the episode ends and its record goes.
    for node_id in silent:
        await put(store, keys.alive(node_id), b"")
    await caught_up(cache, store)
    await _pass(monitor, store, cache, clock, 1)
    assert cache.raw(keys.mass_failure()) is None
    assert all(s == pb.READY for s in _status(cache).values()) and _lost(cache) == set()


async def test_after_an_episode_the_nodes_still_silent_get_one_more_grace_then_are_judged(
    store: MemoryStore, cache: ClusterCache, monitor: NodeMonitor, clock: Clock
) -> None:
    await _cluster(store, cache, 10)
    await _silence(store, cache, *(f"n{i}" for i in range(6)))
    await _pass(monitor, store, cache, clock, 0)
    await _pass(monitor, store, cache, clock, GRACE)
    assert cache.raw(keys.mass_failure()) is not None
    for i in range(5):  # all but n5 come back
        await put(store, keys.alive(f"n{i}"), b"")
    await caught_up(cache, store)
    await _pass(monitor, store, cache, clock, 1)
    assert cache.raw(keys.mass_failure()) is None
    assert _status(cache)["n5"] == pb.READY, "it had its silence blamed on the episode"
    await _pass(monitor, store, cache, clock, GRACE - 1)
    assert _status(cache)["n5"] == pb.READY
    await _pass(monitor, store, cache, clock, 1.5)
    assert _status(cache)["n5"] == pb.DOWN
    assert _lost(cache) == {"t5-0", "t5-1"}


async def test_a_leader_that_finds_a_stale_episode_record_removes_it(
    store: MemoryStore, cache: ClusterCache, monitor: NodeMonitor, clock: Clock
) -> None:
    await _cluster(store, cache, 4)
    await put(store, keys.mass_failure(), b"left by a leader that died")
    await caught_up(cache, store)
    await _pass(monitor, store, cache, clock, 0)
    assert cache.raw(keys.mass_failure()) is None


async def test_a_new_leader_waits_its_startup_hold(
    store: MemoryStore, cache: ClusterCache, clock: Clock
) -> None:
    await _cluster(store, cache, 5)
    await _silence(store, cache, "n0")
    monitor = NodeMonitor(store, cache, GRACE, startup_hold=GRACE + 2, clock=clock)
    await _pass(monitor, store, cache, clock, GRACE)
    assert _status(cache)["n0"] == pb.READY
    await _pass(monitor, store, cache, clock, 2)
    await _pass(monitor, store, cache, clock, SETTLE)
    assert _status(cache)["n0"] == pb.DOWN


# -- goodbye: the restart window ----------------------------------------------


@pytest.fixture()
async def leases(store: MemoryStore, cache: ClusterCache) -> AsyncIterator[NodeLeases]:
    node_leases = NodeLeases(store, cache, grace=GRACE, restart_grace=60)
    yield node_leases
    await node_leases.close()


async def test_a_restarting_agent_keeps_its_tasks_past_the_grace_until_its_window_closes(
    store: MemoryStore, cache: ClusterCache, monitor: NodeMonitor, clock: Clock, leases: NodeLeases
) -> None:
    await _cluster(store, cache, 5)
    await leases.goodbye("n1", restarting=True, expected_seconds=0)
    await caught_up(cache, store)
    node = cache.node("n1")
    assert node is not None and node.value.HasField("restarting_until")
    # The window is written with the real clock: the monitor's starts just after the goodbye.
    clock.now = node.value.restarting_until.seconds - 60 + 0.5
    await _silence(store, cache, "n1")
    for _ in range(5):
        await _pass(monitor, store, cache, clock, GRACE)
    assert _status(cache)["n1"] == pb.READY and _lost(cache) == set()
    await _pass(monitor, store, cache, clock, 11)  # the 60 s window has closed
    assert _status(cache)["n1"] == pb.DOWN
    node = cache.node("n1")
    assert node is not None and not node.value.HasField("restarting_until")


async def test_the_window_is_at_least_the_grace_and_at_most_the_restart_grace(
    store: MemoryStore, cache: ClusterCache, leases: NodeLeases
) -> None:
    await _cluster(store, cache, 1, tasks_each=0)
    for asked, granted in ((0, 60), (5, GRACE), (30, 30), (10**9, 60)):
        await leases.goodbye("n0", restarting=True, expected_seconds=asked)
        node = await store.get(keys.node("n0"), pb.Node)
        assert node is not None
        until = node.value.restarting_until.ToNanoseconds() / 1e9
        registered = pb.Node()
        registered.restarting_until.GetCurrentTime()
        assert abs(until - registered.restarting_until.ToNanoseconds() / 1e9 - granted) < 2, asked


async def test_a_goodbye_without_restarting_opens_no_window(
    store: MemoryStore, cache: ClusterCache, leases: NodeLeases
) -> None:
    await _cluster(store, cache, 1, tasks_each=0)
    await leases.goodbye("n0", restarting=False, expected_seconds=30)
    node = await store.get(keys.node("n0"), pb.Node)
    assert node is not None and not node.value.HasField("restarting_until")


async def test_the_node_beating_again_clears_its_window_with_its_new_key(
    store: MemoryStore, cache: ClusterCache, leases: NodeLeases
) -> None:
    await _cluster(store, cache, 1, tasks_each=0)
    await leases.beat("n0")
    await leases.goodbye("n0", restarting=True, expected_seconds=0)
    leases.forget("n0")  # its stream ended
    await caught_up(cache, store)
    await leases.beat("n0")  # the restarted agent registers
    node = await store.get(keys.node("n0"), pb.Node)
    alive = await store.get_raw(keys.alive("n0"))
    assert node is not None and alive is not None
    assert not node.value.HasField("restarting_until")
    assert node.value.status == pb.READY
    assert alive.mod_revision == node.mod_revision  # one transaction


async def test_a_window_still_recorded_is_cleared_by_the_next_beat_even_on_a_healthy_lease(
    store: MemoryStore, cache: ClusterCache, leases: NodeLeases
) -> None:
    await _cluster(store, cache, 1, tasks_each=0)
    await leases.beat("n0")
    await leases.goodbye("n0", restarting=True, expected_seconds=0)
    await caught_up(cache, store)
    await leases.beat("n0")  # the agent did not stop after all
    node = await store.get(keys.node("n0"), pb.Node)
    assert node is not None and not node.value.HasField("restarting_until")


async def test_a_goodbye_for_a_down_or_unknown_node_writes_nothing(
    store: MemoryStore, cache: ClusterCache, leases: NodeLeases
) -> None:
    await put(store, keys.node("gone"), pb.Node(id="gone", status=pb.DOWN))
    revision = store.revision
    await leases.goodbye("gone", restarting=True, expected_seconds=0)
    await leases.goodbye("nobody", restarting=True, expected_seconds=0)
    assert store.revision == revision
