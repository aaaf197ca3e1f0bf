"""The store fails over between the members of a real 3-member etcd cluster (TLS everywhere).

Killing (-9) the member the store talks to costs no call an error: reads,
conditional writes, an open watch and a lease keep-alive stream all carry on
on another member, and the watch misses no event. With every member down a
call fails promptly with Unavailable. A member that hangs (SIGSTOP) costs
the first call one deadline, then calls go elsewhere.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from berth.errors import Unavailable
from berth.testing.etcd_cluster import EtcdCluster, EtcdMember
from berth.v1 import resources_pb2 as pb
from controlplane.store import Condition, Entry, Put, Store, keys


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    etcd = EtcdCluster(tmp_path_factory.mktemp("etcd"))
    etcd.start()
    try:
        yield etcd
    finally:
        etcd.stop()


@pytest.fixture()
async def store(cluster: EtcdCluster) -> AsyncIterator[Store]:
    client = cluster.store(prefix=f"/failover-{time.monotonic_ns()}/", timeout=5.0)
    await client.connect()
    try:
        yield client
    finally:
        await client.close()


def member_at(cluster: EtcdCluster, endpoint: str) -> EtcdMember:
    return next(m for m in cluster.members if m.endpoint.endswith(f"//{endpoint}"))


def revive(cluster: EtcdCluster, member: EtcdMember) -> None:
    member.start()
    cluster.wait_healthy(members=[member])


async def test_calls_watch_and_keepalive_survive_the_death_of_their_member(
    cluster: EtcdCluster, store: Store
) -> None:
    key = keys.cluster("a")
    assert await store.commit([Put(key, pb.Cluster(name="a"))], [Condition(key, 0)])
    lease = await store.grant_lease(5)

    seen: list[Entry] = []
    expected = {keys.cluster(n) for n in "acde"}
    watched_everything = asyncio.Event()

    async def watch() -> None:
        async for batch in store.watch(keys.CLUSTERS, 1):
            seen.extend(batch)
            if {e.key for e in seen} == expected and len(seen) >= 5:
                watched_everything.set()

    watcher = asyncio.create_task(watch())
    replies: list[tuple[int, int]] = []
    stream = store.keep_alive_stream()
    keeper = asyncio.create_task(stream.run(lambda lease_id, ttl: replies.append((lease_id, ttl))))
    stream.refresh(lease)
    await asyncio.sleep(0.5)

    victim = member_at(cluster, store.current_endpoint)
    victim.kill9()
    try:
        started = time.monotonic()
        # Every call after the kill succeeds: the first one fails over.
        current = await store.get(key, pb.Cluster)
        assert current is not None
        assert await store.commit([Put(key, pb.Cluster(name="b"))], [Condition(key, current.mod_revision)])
        print(f"first call after the kill answered in {time.monotonic() - started:.2f}s")
        assert member_at(cluster, store.current_endpoint) is not victim
        for name in ("c", "d", "e"):
            assert await store.commit([Put(keys.cluster(name), pb.Cluster(name=name))])
        # A lease granted before the kill is refreshed on another member.
        for _ in range(3):
            stream.refresh(lease)
            await asyncio.sleep(0.3)
        assert await store.refresh_lease(lease) > 0

        await asyncio.wait_for(watched_everything.wait(), 10)
        assert not watcher.done(), "the watch ended instead of resuming on another member"
        assert not keeper.done(), "the keep-alive stream ended instead of moving"
        # No event lost or repeated across the move: a, a (update), c, d, e in revision order.
        revisions = [e.mod_revision for e in seen]
        assert revisions == sorted(set(revisions))
        assert len(seen) == 5
        assert sum(1 for lease_id, ttl in replies if lease_id == lease and ttl > 0) >= 2
    finally:
        watcher.cancel()
        keeper.cancel()
        revive(cluster, victim)


async def test_a_call_fails_over_from_a_dead_member_it_had_never_used(cluster: EtcdCluster) -> None:
    # The store's first member is down when it connects: it starts on the next one.
    first = cluster.members[0]
    first.kill9()
    try:
        store = cluster.store(prefix="/first-down/", timeout=5.0)
        await store.connect()
        try:
            assert await store.commit([Put("k", b"v")])
            entry = await store.get_raw("k")
            assert entry is not None and entry.value == b"v"
        finally:
            await store.close()
    finally:
        revive(cluster, first)


async def test_with_every_member_down_a_call_fails_promptly(cluster: EtcdCluster, store: Store) -> None:
    assert await store.commit([Put("k", b"v")])
    for member in cluster.members:
        member.kill9()
    try:
        started = time.monotonic()
        with pytest.raises(Unavailable, match="etcd"):
            await store.get_raw("k")
        # Each member tried once: refused connections, not three timeouts.
        assert time.monotonic() - started < 5
    finally:
        for member in cluster.members:
            member.start()
        cluster.wait_healthy()
    # The same store works again once the members are back.
    entry = await store.get_raw("k")
    assert entry is not None and entry.value == b"v"


async def test_a_hung_member_costs_one_timeout_then_calls_move_on(cluster: EtcdCluster) -> None:
    # SIGSTOP: the member accepts nothing and answers nothing, as a frozen VM would.
    store = cluster.store(prefix="/hung/", timeout=2.0)
    await store.connect()
    victim = member_at(cluster, store.current_endpoint)
    assert victim.process is not None
    os.kill(victim.process.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        assert await store.commit([Put("k", b"v")])
        first = time.monotonic() - started
        started = time.monotonic()
        entry = await store.get_raw("k")
        second = time.monotonic() - started
        print(f"hung member: first call {first:.1f} s (its deadline), the next {second:.2f} s")
        assert entry is not None and entry.value == b"v"
        assert first < 2.0 + 3.0  # one deadline, then another member
        assert second < 1.5  # the hung member is no longer asked first
    finally:
        os.kill(victim.process.pid, signal.SIGCONT)
        await store.close()
        cluster.wait_healthy()


def test_the_cluster_names_its_leader(cluster: EtcdCluster) -> None:
    assert cluster.leader() in cluster.members


def test_controlplane_args_name_every_member_and_the_tls_files(cluster: EtcdCluster) -> None:
    args = cluster.controlplane_args()
    assert args[args.index("--etcd") + 1].split(",") == cluster.endpoints
    for flag in ("--etcd-cacert", "--etcd-cert", "--etcd-key"):
        assert Path(args[args.index(flag) + 1]).is_file()
