"""One contract, two stores: the real Store on etcd and the MemoryStore fake behave alike.

Every test here runs on both, so the fake that unit tests stand on cannot
drift from what etcd does: conditional commits, all-or-nothing batches,
sorted scans with their read revision, watches from a revision in whole
transactions, and leases that take their keys with them when they expire.
(The one integration test that runs the fake too: it is the fake's check.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import pytest

from controlplane.store import Condition, Delete, Entry, Put, Store, StoreAPI
from controlplane.store.embedded import EmbeddedEtcd
from controlplane.store.memory import MemoryStore

LEASE_TTL = 2  # etcd's minimum
LEASE_WAIT = 15.0  # seconds a real etcd may take to expire a 2-second lease


@dataclass
class Subject:
    """A store under contract, and how to make a lease run out on it."""

    store: StoreAPI
    let_lease_expire: Callable[[int, str], Awaitable[None]]


@pytest.fixture(params=["etcd", "memory"])
async def subject(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Subject]:
    if request.param == "memory":
        memory = MemoryStore()

        async def advance(lease: int, key: str) -> None:
            memory.advance(LEASE_TTL)

        yield Subject(memory, advance)
        return
    server = EmbeddedEtcd(tmp_path)
    await server.start()
    store = Store([server.endpoint], prefix="/contract/", tls=server.client_tls)
    await store.connect()

    async def wait(lease: int, key: str) -> None:
        # etcd's lessor expires leases on its own clock: wait, bounded.
        deadline = asyncio.get_running_loop().time() + LEASE_WAIT
        while await store.get_raw(key) is not None:
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"etcd kept {key} for {LEASE_WAIT}s after its {LEASE_TTL}s lease")
            await asyncio.sleep(0.2)

    try:
        yield Subject(store, wait)
    finally:
        await store.close()
        await server.stop()


async def test_commit_holds_only_when_every_mod_revision_matches(subject: Subject) -> None:
    store = subject.store
    created = await store.commit([Put("k/a", b"1")], [Condition("k/a", 0)])
    assert created is not None
    entry = await store.get_raw("k/a")
    assert entry is not None and entry.mod_revision == created and entry.value == b"1"
    # 0 means "absent": creating again fails.
    assert await store.commit([Put("k/a", b"2")], [Condition("k/a", 0)]) is None
    # The current revision wins once; after that it is stale.
    updated = await store.commit([Put("k/a", b"3")], [Condition("k/a", created)])
    assert updated == created + 1
    assert await store.commit([Put("k/a", b"4")], [Condition("k/a", created)]) is None
    assert await store.put_if_unchanged("k/a", b"5", updated)
    final = await store.get_raw("k/a")
    assert final is not None and final.value == b"5"


async def test_a_failed_batch_writes_nothing_and_takes_no_revision(subject: Subject) -> None:
    store = subject.store
    before = await store.commit([Put("k/x", b"x")])
    assert before is not None
    failed = await store.commit(
        [Put("k/y", b"y"), Delete("k/x")], [Condition("k/y", 0), Condition("k/x", before + 100)]
    )
    assert failed is None
    assert await store.get_raw("k/y") is None
    assert await store.get_raw("k/x") is not None
    _, revision = await store.scan_raw("k/")
    assert revision == before


async def test_one_transaction_is_one_revision_for_all_its_keys(subject: Subject) -> None:
    store = subject.store
    revision = await store.commit([Put("k/1", b"a"), Put("k/2", b"b"), Put("k/3", b"c")])
    assert revision is not None
    entries, read_at = await store.scan_raw("k/")
    assert [e.mod_revision for e in entries] == [revision] * 3
    assert read_at == revision


async def test_scan_is_sorted_by_key_under_the_prefix_only(subject: Subject) -> None:
    store = subject.store
    for key in ["p/b", "p/a/2", "q/a", "p/a/1", "p", "p/c"]:
        await store.commit([Put(key, key.encode())])
    last = await store.commit([Put("o", b"o")])
    entries, read_at = await store.scan_raw("p/")
    assert [e.key for e in entries] == ["p/a/1", "p/a/2", "p/b", "p/c"]
    assert [e.value for e in entries] == [b"p/a/1", b"p/a/2", b"p/b", b"p/c"]
    assert read_at == last  # the store's revision, not the newest key's under the prefix


async def _collect(watch: AsyncIterator[list[Entry]], count: int) -> list[list[Entry]]:
    """Batches until `count` events have arrived (bounded)."""
    batches: list[list[Entry]] = []

    async def take() -> None:
        async for batch in watch:
            batches.append(batch)
            if sum(len(b) for b in batches) >= count:
                return

    await asyncio.wait_for(take(), 10)
    return batches


async def test_watch_from_a_revision_replays_whole_transactions_then_continues_live(
    subject: Subject,
) -> None:
    store = subject.store
    await store.commit([Put("w/before", b"0")])
    first = await store.commit([Put("w/a", b"1"), Put("w/b", b"2")])
    assert first is not None
    await store.commit([Put("other/x", b"not watched")])
    await store.commit([Delete("w/a")])
    await store.commit([Put("w/b", b"3")])
    watch = aiter(store.watch("w/", first))
    try:
        replayed = await _collect(watch, 4)
        events = [(e.key, e.value, e.mod_revision) for batch in replayed for e in batch]
        assert events == [
            ("w/a", b"1", first),
            ("w/b", b"2", first),
            ("w/a", None, first + 2),  # a delete carries the revision that deleted it
            ("w/b", b"3", first + 3),
        ]
        # etcd may join several transactions into one batch while catching
        # up, but never splits one across batches.
        for batch in replayed:
            assert [e.mod_revision for e in batch] == sorted(e.mod_revision for e in batch)
        revisions = [{e.mod_revision for e in batch} for batch in replayed]
        for earlier, later in pairwise(revisions):
            assert max(earlier) < min(later)
        live = await store.commit([Put("w/c", b"4"), Delete("w/b")])
        (batch,) = await _collect(watch, 2)
        assert [(e.key, e.value, e.mod_revision) for e in batch] == [("w/c", b"4", live), ("w/b", None, live)]
    finally:
        await watch.aclose()  # type: ignore[attr-defined]


async def test_an_expired_lease_deletes_its_keys_and_answers_keep_alives_with_zero(
    subject: Subject,
) -> None:
    store = subject.store
    lease = await store.grant_lease(LEASE_TTL)
    await store.commit([Put("alive/n1", b"", lease=lease), Put("kept", b"")])
    entry = await store.get_raw("alive/n1")
    assert entry is not None and entry.lease == lease
    assert await store.refresh_lease(lease) > 0
    await subject.let_lease_expire(lease, "alive/n1")
    assert await store.get_raw("alive/n1") is None
    assert await store.get_raw("kept") is not None
    assert await store.refresh_lease(lease) <= 0
    # The same answer on a keep-alive stream, which the node leases use.
    stream = store.keep_alive_stream()
    replies: list[tuple[int, int]] = []

    def on_reply(lease_id: int, ttl: int) -> None:
        replies.append((lease_id, ttl))

    runner = asyncio.create_task(stream.run(on_reply))
    try:
        stream.refresh(lease)
        for _ in range(200):
            if replies:
                break
            await asyncio.sleep(0.01)
        assert len(replies) == 1
        assert replies[0][0] == lease and replies[0][1] <= 0
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_a_revoked_lease_deletes_its_keys_at_once(subject: Subject) -> None:
    store = subject.store
    lease = await store.grant_lease(60)
    await store.commit([Put("leader", b"me", lease=lease)])
    await store.revoke_lease(lease)
    assert await store.get_raw("leader") is None
    await store.revoke_lease(lease)  # revoking again is harmless
    assert await store.refresh_lease(lease) <= 0
