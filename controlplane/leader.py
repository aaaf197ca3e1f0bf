"""Leader election through an etcd lease: one replica runs the controllers.

The leader key holds the replica's identity and lives on a lease the leader
keeps alive. If the leader dies its lease expires and another replica takes
over within `ttl` seconds. A replica restarted with the same identity (same
listen address and data directory) takes its own stale key over at once,
so `kill -9` and restart of a single control plane costs no lease wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from berth.errors import Unavailable
from controlplane.metrics import IS_LEADER
from controlplane.store import Condition, Put, StoreAPI, keys

log = logging.getLogger(__name__)


class LeaderElection:
    def __init__(self, store: StoreAPI, identity: str, ttl: int = 5) -> None:
        self._store = store
        self._identity = identity.encode()
        self._ttl = ttl
        self.is_leader = False

    async def _try_acquire(self) -> int | None:
        """Return our lease id if we became leader."""
        lease = await self._store.grant_lease(self._ttl)
        current = await self._store.get_raw(keys.LEADER)
        if current is None:
            condition = Condition(keys.LEADER, 0)
        elif current.value == self._identity:
            condition = Condition(keys.LEADER, current.mod_revision)
        else:
            await self._store.revoke_lease(lease)
            return None
        if await self._store.commit([Put(keys.LEADER, self._identity, lease=lease)], [condition]) is None:
            await self._store.revoke_lease(lease)
            return None
        return lease

    async def run(self, lead: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Campaign forever; while leader, run `lead` and cancel it when leadership is lost."""
        while True:
            try:
                lease = await self._try_acquire()
            except Unavailable as error:
                log.warning("event=election_failed error=%r", str(error))
                lease = None
            if lease is None:
                await asyncio.sleep(1.0)
                continue
            self.is_leader = True
            IS_LEADER.set(1)
            log.info("event=became_leader identity=%s", self._identity.decode())
            work = asyncio.create_task(lead(), name="leader-work")
            try:
                await self._keep_alive(lease, work)
            finally:
                self.is_leader = False
                IS_LEADER.set(0)
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await work
            log.warning("event=lost_leadership identity=%s", self._identity.decode())

    async def _keep_alive(self, lease: int, work: asyncio.Task[None]) -> None:
        loop = asyncio.get_running_loop()
        last_refresh = loop.time()
        while not work.done():
            await asyncio.sleep(self._ttl / 3)
            try:
                if await self._store.refresh_lease(lease) <= 0:
                    return
                last_refresh = loop.time()
            except Unavailable as error:
                # Transient etcd trouble is survivable until the lease could
                # have expired; after that another replica may lead.
                log.warning("event=leader_lease_refresh_failed error=%r", str(error))
                if loop.time() - last_refresh >= self._ttl:
                    return
        if not work.cancelled() and work.exception() is not None:
            log.error("event=leader_work_crashed error=%r", work.exception())

    async def resign(self) -> None:
        """Give leadership up promptly on a clean shutdown."""
        if not self.is_leader:
            return
        with contextlib.suppress(Exception):
            current = await self._store.get_raw(keys.LEADER)
            if current is not None and current.value == self._identity:
                await self._store.revoke_lease(current.lease)
