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
from controlplane.store import Condition, KeepAlive, Put, StoreAPI, keys

log = logging.getLogger(__name__)


class LeaderElection:
    def __init__(
        self,
        store: StoreAPI,
        identity: str,
        ttl: int = 5,
        keep_alive_stream: Callable[[], KeepAlive] | None = None,
    ) -> None:
        self._store = store
        self._identity = identity.encode()
        self._ttl = ttl
        # None: each refresh is a round trip on this loop. The control plane gives a stream
        # driven from a thread of its own (controlplane.keepalive), so that a busy loop delays
        # a refresh by its lag at most, not by the several turns a round trip takes.
        self._new_keep_alive_stream = keep_alive_stream
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
        if self._new_keep_alive_stream is not None:
            await self._keep_alive_on(self._new_keep_alive_stream(), lease, work)
            return
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

    async def _keep_alive_on(self, stream: KeepAlive, lease: int, work: asyncio.Task[None]) -> None:
        """Refresh every ttl/3 through `stream`; return once etcd says the lease expired, or once
        no refresh has been answered for a whole TTL (another replica may lead by then)."""
        loop = asyncio.get_running_loop()
        last_answer = loop.time()
        expired = asyncio.Event()

        def on_reply(lease_id: int, ttl: int) -> None:
            nonlocal last_answer
            if lease_id != lease:
                return
            if ttl <= 0:
                expired.set()
            else:
                last_answer = loop.time()

        sender = asyncio.create_task(stream.run(on_reply), name="leader-keepalive")
        ended = asyncio.create_task(expired.wait())
        try:
            while not work.done() and not expired.is_set():
                if sender.done():
                    error = sender.exception() if not sender.cancelled() else None
                    log.warning("event=leader_lease_refresh_failed error=%r", str(error))
                    assert self._new_keep_alive_stream is not None
                    stream = self._new_keep_alive_stream()
                    sender = asyncio.create_task(stream.run(on_reply), name="leader-keepalive")
                stream.refresh(lease)
                # Not on the sender: a stream that breaks at once is replaced once a tick, no faster.
                await asyncio.wait({work, ended}, timeout=self._ttl / 3)
                if loop.time() - last_answer >= self._ttl:
                    log.warning("event=leader_lease_unanswered seconds=%.1f", loop.time() - last_answer)
                    return
        finally:
            for task in (sender, ended):
                task.cancel()
            await asyncio.gather(sender, ended, return_exceptions=True)
        if not work.cancelled() and work.done() and work.exception() is not None:
            log.error("event=leader_work_crashed error=%r", work.exception())

    async def resign(self) -> None:
        """Give leadership up promptly on a clean shutdown."""
        if not self.is_leader:
            return
        with contextlib.suppress(Exception):
            current = await self._store.get_raw(keys.LEADER)
            if current is not None and current.value == self._identity:
                await self._store.revoke_lease(current.lease)
