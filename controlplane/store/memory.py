"""`MemoryStore`: the store in memory, with etcd's semantics, for unit tests.

It satisfies `StoreAPI` like the real `Store` and keeps the parts of etcd's
behaviour Berth relies on (see `controlplane.store.api`; the contract test
runs the same behaviours on both). Time does not pass on its own: leases
expire when a test calls `advance(seconds)` or `expire_lease(lease_id)`, so
no test sleeps. `break_watches()` ends every open watch with Unavailable,
as a lost connection to etcd would, and `compact(revision)` forgets history
so that a watch from an older revision fails, as etcd's compaction does.

A transaction is applied between two awaits, so no other task ever sees
half of it. By default no call suspends; `MemoryStore(interleave=True)`
makes each call yield to the event loop once first, as a round trip to
etcd would, so that racing writers really interleave.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from google.protobuf.message import Message

from berth.errors import Unavailable
from controlplane.store.api import (
    Condition,
    Delete,
    Entry,
    M,
    Put,
    StoreAPI,
    Versioned,
    Write,
    decode,
    decoded,
    read_modify_write,
)
from controlplane.store.retry import ATTEMPTS


@dataclass
class _Lease:
    ttl: int
    deadline: float
    keys: set[str] = field(default_factory=set)


class _Broken:
    """Queued to a watcher to end its watch with Unavailable."""


class MemoryStore:
    """An in-memory etcd keyspace: keys, revisions, history, leases and watchers."""

    def __init__(self, interleave: bool = False) -> None:
        # With interleave, every call yields to the event loop once before it
        # runs, as a round trip to etcd would, so concurrent writers interleave.
        self._interleave = interleave
        # A fresh etcd is at revision 1 before anything is written.
        self.revision = 1
        self.now = 0.0
        self._data: dict[str, Entry] = {}
        self._sorted_keys: list[str] = []
        self._history: list[tuple[int, list[Entry]]] = []
        self._compacted = 0
        self._watchers: list[tuple[str, asyncio.Queue[list[Entry] | _Broken]]] = []
        self._leases: dict[int, _Lease] = {}
        self._next_lease = 0x1000
        # Every keep-alive answered on a stream, (lease id, TTL), for tests to wait on.
        self.keep_alive_replies: list[tuple[int, int]] = []

    async def _round_trip(self) -> None:
        if self._interleave:
            await asyncio.sleep(0)

    # -- reads -------------------------------------------------------------

    async def get_raw(self, key: str) -> Entry | None:
        await self._round_trip()
        return self._data.get(key)

    async def get(self, key: str, message_type: type[M]) -> Versioned[M] | None:
        await self._round_trip()
        entry = self._data.get(key)
        if entry is None or entry.value is None:
            return None
        value = decode(message_type, key, entry.value)
        return None if value is None else Versioned(key, value, entry.mod_revision)

    def _under(self, prefix: str) -> list[Entry]:
        start = bisect.bisect_left(self._sorted_keys, prefix)
        found = []
        for key in self._sorted_keys[start:]:
            if not key.startswith(prefix):
                break
            found.append(self._data[key])
        return found

    async def scan(self, prefix: str, message_type: type[M]) -> tuple[list[Versioned[M]], int]:
        await self._round_trip()
        items = decoded(message_type, self._under(prefix))
        return items, self.revision

    async def scan_raw(self, prefix: str = "") -> tuple[list[Entry], int]:
        await self._round_trip()
        return self._under(prefix), self.revision

    # -- writes ------------------------------------------------------------

    def _holds(self, condition: Condition) -> bool:
        entry = self._data.get(condition.key)
        return (entry.mod_revision if entry is not None else 0) == condition.mod_revision

    async def commit(self, writes: Sequence[Write], conditions: Sequence[Condition] = ()) -> int | None:
        await self._round_trip()
        if len({write.key for write in writes}) != len(writes):
            raise Unavailable("etcd: duplicate key given in txn request")  # as etcd refuses it
        if not all(self._holds(condition) for condition in conditions):
            return None
        for write in writes:  # etcd checks leases only on the branch it takes
            if isinstance(write, Put) and write.lease and write.lease not in self._leases:
                raise Unavailable("etcd: requested lease not found")
        self._apply(writes)
        return self.revision

    async def put_if_unchanged(self, key: str, value: Message | bytes, mod_revision: int) -> int | None:
        return await self.commit([Put(key, value)], [Condition(key, mod_revision)])

    async def update(
        self,
        key: str,
        message_type: type[M],
        mutate: Callable[[M], M | None],
        attempts: int = ATTEMPTS,
    ) -> M | None:
        return await read_modify_write(self, key, message_type, mutate, attempts)

    def _apply(self, writes: Sequence[Write]) -> None:
        """One transaction: one new revision, one watch batch (nothing, if nothing changed)."""
        revision = self.revision + 1
        events: list[Entry] = []
        for write in writes:
            previous = self._data.get(write.key)
            if previous is not None and previous.lease in self._leases:
                self._leases[previous.lease].keys.discard(write.key)
            if isinstance(write, Delete):
                if previous is None:
                    continue  # deleting nothing changes nothing, as in etcd
                del self._data[write.key]
                self._sorted_keys.pop(bisect.bisect_left(self._sorted_keys, write.key))
                events.append(Entry(write.key, None, revision))
                continue
            raw = write.value if isinstance(write.value, bytes) else write.value.SerializeToString()
            entry = Entry(write.key, raw, revision, write.lease)
            if previous is None:
                bisect.insort(self._sorted_keys, write.key)
            self._data[write.key] = entry
            if write.lease:
                self._leases[write.lease].keys.add(write.key)
            events.append(entry)
        if not events:
            return
        self.revision = revision
        self._history.append((revision, events))
        for prefix, queue in self._watchers:
            mine = [event for event in events if event.key.startswith(prefix)]
            if mine:
                queue.put_nowait(mine)

    # -- leases ------------------------------------------------------------

    async def grant_lease(self, ttl: int) -> int:
        await self._round_trip()
        self._next_lease += 1
        self._leases[self._next_lease] = _Lease(ttl, self.now + ttl)
        return self._next_lease

    def _refresh(self, lease_id: int) -> int:
        lease = self._leases.get(lease_id)
        if lease is None:
            return 0  # etcd's answer for a lease it does not know (expired or revoked)
        lease.deadline = self.now + lease.ttl
        return lease.ttl

    async def refresh_lease(self, lease_id: int) -> int:
        await self._round_trip()
        return self._refresh(lease_id)

    async def revoke_lease(self, lease_id: int) -> None:
        await self._round_trip()
        self.expire_lease(lease_id)

    def keep_alive_stream(self) -> MemoryKeepAlive:
        return MemoryKeepAlive(self._answer_keep_alive)

    def _answer_keep_alive(self, lease_id: int) -> int:
        ttl = self._refresh(lease_id)
        self.keep_alive_replies.append((lease_id, ttl))
        return ttl

    def time_to_live(self, lease_id: int) -> float:
        """Seconds the lease has left (-1: no such lease), like etcd's LeaseTimeToLive."""
        lease = self._leases.get(lease_id)
        return -1 if lease is None else lease.deadline - self.now

    def expire_lease(self, lease_id: int) -> None:
        """The lease runs out now: its keys are deleted in one transaction (unknown: no-op)."""
        lease = self._leases.pop(lease_id, None)
        if lease is not None:
            self._apply([Delete(key) for key in sorted(lease.keys)])

    def advance(self, seconds: float) -> None:
        """Let time pass: every lease not refreshed within its TTL expires."""
        self.now += seconds
        for lease_id, lease in sorted(self._leases.items()):
            if lease.deadline <= self.now:
                self.expire_lease(lease_id)

    def lease_of(self, key: str) -> int:
        """The lease the key is attached to (0: none, or the key is absent)."""
        entry = self._data.get(key)
        return entry.lease if entry is not None else 0

    # -- watch -------------------------------------------------------------

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[list[Entry]]:
        if start_revision and start_revision < self._compacted:
            raise Unavailable(f"etcd watch: revision {start_revision} was compacted")
        queue: asyncio.Queue[list[Entry] | _Broken] = asyncio.Queue()
        # History and subscription are taken together, with no await between,
        # so no transaction falls in a gap or arrives twice.
        # As in etcd, start_revision 0 means "from now on".
        since = start_revision or self.revision + 1
        for revision, events in self._history:
            if revision >= since:
                mine = [event for event in events if event.key.startswith(prefix)]
                if mine:
                    queue.put_nowait(mine)
        watcher = (prefix, queue)
        self._watchers.append(watcher)
        try:
            while True:
                batch = await queue.get()
                if isinstance(batch, _Broken):
                    raise Unavailable("etcd watch broke: connection lost (MemoryStore.break_watches)")
                yield batch
        finally:
            self._watchers.remove(watcher)

    def break_watches(self) -> None:
        """End every open watch with Unavailable, as a lost connection to etcd does."""
        for _, queue in self._watchers:
            queue.put_nowait(_Broken())

    def compact(self, revision: int) -> None:
        """Forget history before `revision`: a watch from an earlier revision fails."""
        self._compacted = max(self._compacted, revision)
        self._history = [(r, events) for r, events in self._history if r >= revision]


class MemoryKeepAlive:
    """A keep-alive stream on the memory store: each refresh is answered in order."""

    def __init__(self, refresh: Callable[[int], int]) -> None:
        self._refresh = refresh
        self._requests: asyncio.Queue[int] = asyncio.Queue()

    def refresh(self, lease_id: int) -> None:
        self._requests.put_nowait(lease_id)

    async def run(self, on_reply: Callable[[int, int], None]) -> None:
        while True:
            lease_id = await self._requests.get()
            on_reply(lease_id, self._refresh(lease_id))


if TYPE_CHECKING:
    _satisfies_the_protocol: StoreAPI = MemoryStore()  # checked by mypy, never run
