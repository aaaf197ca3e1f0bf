"""The leader's lease refreshed through a keep-alive stream (the control plane's is threaded)."""

from __future__ import annotations

import asyncio
import contextlib

from controlplane.leader import LeaderElection
from controlplane.store import keys
from controlplane.store.memory import MemoryStore
from tests.unit.conftest import until

TTL = 3


async def _lead(store: MemoryStore) -> tuple[LeaderElection, asyncio.Task[None], asyncio.Event]:
    election = LeaderElection(store, "replica-a", TTL, keep_alive_stream=store.keep_alive_stream)
    working = asyncio.Event()

    async def lead() -> None:
        working.set()
        await asyncio.Event().wait()

    campaign = asyncio.create_task(election.run(lead))

    async def leading() -> bool:
        return election.is_leader and working.is_set()

    await until(leading, "replica-a leads")
    return election, campaign, working


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_the_leader_keeps_its_lease_through_the_stream() -> None:
    store = MemoryStore()
    election, campaign, _ = await _lead(store)
    try:
        lease = store.lease_of(keys.LEADER)
        store.advance(TTL - 1)

        async def refreshed() -> bool:
            return store.time_to_live(lease) == TTL

        await until(refreshed, "the lease refreshed", timeout=TTL)
        assert election.is_leader and store.lease_of(keys.LEADER) == lease
    finally:
        await _stop(campaign)


async def test_an_expired_lease_ends_the_leadership_and_its_work() -> None:
    store = MemoryStore()
    _, campaign, working = await _lead(store)
    try:
        lease = store.lease_of(keys.LEADER)
        working.clear()
        store.expire_lease(lease)  # as etcd does when refreshes stopped for a TTL

        async def lost_and_back() -> bool:
            # Leadership lost (the next refresh is answered TTL 0), then won again on a new lease.
            return working.is_set() and store.lease_of(keys.LEADER) not in (0, lease)

        await until(lost_and_back, "leadership lost and taken again", timeout=TTL + 3)
    finally:
        await _stop(campaign)
