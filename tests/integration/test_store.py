"""The etcd store on a real etcd: optimistic concurrency, watch, embedded supervision."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from berth.v1 import resources_pb2 as pb
from controlplane.cache import ClusterCache
from controlplane.store import Condition, Delete, Put, Store, keys
from controlplane.store.embedded import EmbeddedEtcd


@pytest.fixture()
async def etcd(tmp_path: Path) -> AsyncIterator[EmbeddedEtcd]:
    server = EmbeddedEtcd(tmp_path)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture()
async def store(etcd: EmbeddedEtcd) -> AsyncIterator[Store]:
    client = Store([etcd.endpoint], prefix="/test/", tls=etcd.client_tls)
    await client.connect()
    yield client
    await client.close()


async def test_commit_compares_mod_revision(store: Store) -> None:
    key = keys.cluster("a")
    assert await store.commit([Put(key, pb.Cluster(name="a"))], [Condition(key, 0)])
    # Creating again fails: the key exists, so its mod_revision is not 0.
    assert await store.commit([Put(key, pb.Cluster(name="again"))], [Condition(key, 0)]) is None
    current = await store.get(key, pb.Cluster)
    assert current is not None and current.value.name == "a"
    # A writer holding a stale revision loses; one with the current revision wins.
    assert await store.commit([Put(key, pb.Cluster(name="b"))], [Condition(key, current.mod_revision)])
    assert (
        await store.commit([Put(key, pb.Cluster(name="c"))], [Condition(key, current.mod_revision)]) is None
    )
    final = await store.get(key, pb.Cluster)
    assert final is not None and final.value.name == "b"


async def test_a_failed_batch_writes_nothing(store: Store) -> None:
    await store.commit([Put(keys.cluster("x"), pb.Cluster(name="x"))])
    result = await store.commit(
        [Put(keys.cluster("y"), pb.Cluster(name="y")), Delete(keys.cluster("x"))],
        [Condition(keys.cluster("y"), 0), Condition(keys.cluster("x"), 999_999)],
    )
    assert result is None
    assert await store.get(keys.cluster("y"), pb.Cluster) is None
    assert await store.get(keys.cluster("x"), pb.Cluster) is not None


async def test_concurrent_updates_lose_nothing(store: Store) -> None:
    key = keys.service("default", "web")
    await store.commit([Put(key, pb.Service(name="web", desired_count=0))])

    def bump(service: pb.Service) -> pb.Service:
        service.desired_count += 1
        return service

    await asyncio.gather(*(store.update(key, pb.Service, bump, attempts=100) for _ in range(20)))
    final = await store.get(key, pb.Service)
    assert final is not None and final.value.desired_count == 20


async def test_cache_follows_writes_through_watch(store: Store) -> None:
    cache = ClusterCache(store)
    await cache.start()
    try:
        task = pb.Task(id="t1", cluster="default", service="web", node_id="n1")
        revision = await store.commit([Put(keys.task("t1"), task)])
        assert revision
        await cache.wait_for_revision(revision)
        assert [t.value.id for t in cache.tasks_on_node("n1")] == ["t1"]
        task.node_id = "n2"
        revision = await store.commit([Put(keys.task("t1"), task)])
        assert revision
        await cache.wait_for_revision(revision)
        assert cache.tasks_on_node("n1") == []
        assert [t.value.id for t in cache.tasks_of_service("default", "web")] == ["t1"]
    finally:
        await cache.stop()


async def test_embedded_etcd_is_restarted_when_it_dies(etcd: EmbeddedEtcd, store: Store) -> None:
    await store.commit([Put(keys.cluster("kept"), pb.Cluster(name="kept"))])
    assert etcd._process is not None
    os.kill(etcd._process.pid, signal.SIGKILL)
    for _ in range(100):
        try:
            found = await store.get(keys.cluster("kept"), pb.Cluster)
            if found is not None:
                break
        except Exception:
            pass
        await asyncio.sleep(0.2)
    else:
        pytest.fail("etcd did not come back")
    assert found.value.name == "kept"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_embedded_etcd_keeps_its_files_private(tmp_path: Path) -> None:
    previous = os.umask(0o022)  # the usual umask, under which a plain mkdir/open gives 0755/0644
    server = EmbeddedEtcd(tmp_path / "cp")
    try:
        await server.start()
    finally:
        os.umask(previous)
    try:
        data = tmp_path / "cp"
        assert _mode(data) == 0o700
        assert _mode(data / "etcd") == 0o700
        assert _mode(data / "etcd-ports.json") == 0o600
        assert _mode(data / "etcd.log") == 0o600
    finally:
        await server.stop()


async def test_embedded_etcd_tightens_what_an_older_version_left_loose(tmp_path: Path) -> None:
    data = tmp_path / "cp"
    first = EmbeddedEtcd(data)
    await first.start()
    await first.stop()
    for path, loose in [
        (data, 0o755),
        (data / "etcd", 0o755),
        (data / "etcd-ports.json", 0o644),
        (data / "etcd.log", 0o644),
    ]:
        os.chmod(path, loose)
    again = EmbeddedEtcd(data)
    await again.start()
    try:
        assert [_mode(data), _mode(data / "etcd")] == [0o700, 0o700]
        assert [_mode(data / "etcd-ports.json"), _mode(data / "etcd.log")] == [0o600, 0o600]
        assert (again.client_port, again.peer_port) == (first.client_port, first.peer_port)
    finally:
        await again.stop()
