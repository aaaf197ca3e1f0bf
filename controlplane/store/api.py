"""The store's public surface: the value types and the `StoreAPI` protocol.

Everything above the store (cache, writers, leases, election, operations,
controllers) is written against `StoreAPI`. Two things satisfy it: `Store`
(`controlplane.store.etcd`, the real one, on etcd) and `MemoryStore`
(`controlplane.store.memory`, the fake that unit tests use). A contract test
(`tests/integration/test_store_contract.py`) runs the same behaviours on
both, so the fake keeps etcd's semantics:

- one global revision, incremented once per transaction that changes
  something; every key remembers the revision that last modified it;
- a condition holds when the key's mod_revision equals the one given
  (0: the key is absent); a transaction writes all or nothing;
- a scan is sorted by key and reports the revision it was read at;
- a watch from a revision delivers every change since then in order, each
  transaction's changes whole within one batch, and then continues live;
- a lease deletes its keys when it expires or is revoked; a keep-alive for
  a lease that no longer exists is answered with TTL 0.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from google.protobuf.message import DecodeError, Message

from controlplane.store.retry import ATTEMPTS, RETRY, Retry, optimistic

M = TypeVar("M", bound=Message)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Versioned(Generic[M]):
    """A decoded value and the etcd revision that last modified its key."""

    key: str
    value: M
    mod_revision: int


@dataclass(frozen=True)
class Entry:
    """One key as etcd holds it: raw bytes (None: deleted), revision and lease."""

    key: str
    value: bytes | None
    mod_revision: int
    lease: int = 0


@dataclass(frozen=True)
class Put:
    key: str
    value: Message | bytes
    lease: int = 0


@dataclass(frozen=True)
class Delete:
    key: str


Write = Put | Delete


@dataclass(frozen=True)
class Condition:
    """Holds when the key's mod_revision equals `mod_revision` (0: key absent)."""

    key: str
    mod_revision: int


class KeepAlive(Protocol):
    """Refreshes for many leases over one stream (see `etcd.KeepAliveStream`)."""

    def refresh(self, lease_id: int) -> None:
        """Queue a keep-alive for the lease."""
        ...

    async def run(self, on_reply: Callable[[int, int], None]) -> None:
        """Send queued refreshes; hand each reply (lease id, TTL; 0 or less: expired) to on_reply."""
        ...


class StoreAPI(Protocol):
    """Typed, transactional access to the cluster's state (keys relative to the store's prefix)."""

    async def get_raw(self, key: str) -> Entry | None: ...

    async def get(self, key: str, message_type: type[M]) -> Versioned[M] | None: ...

    async def scan(self, prefix: str, message_type: type[M]) -> tuple[list[Versioned[M]], int]: ...

    async def scan_raw(self, prefix: str = "") -> tuple[list[Entry], int]: ...

    async def commit(self, writes: Sequence[Write], conditions: Sequence[Condition] = ()) -> int | None:
        """The new revision, or None when a condition failed (and nothing was written)."""
        ...

    async def put_if_unchanged(self, key: str, value: Message | bytes, mod_revision: int) -> int | None:
        """Write one key if it still has `mod_revision` (0: absent); the new revision, or None."""

    async def update(
        self,
        key: str,
        message_type: type[M],
        mutate: Callable[[M], M | None],
        attempts: int = ATTEMPTS,
    ) -> M | None: ...

    async def grant_lease(self, ttl: int) -> int: ...

    async def refresh_lease(self, lease_id: int) -> int: ...

    async def revoke_lease(self, lease_id: int) -> None: ...

    def keep_alive_stream(self) -> KeepAlive: ...

    def watch(self, prefix: str, start_revision: int) -> AsyncIterator[list[Entry]]: ...


async def read_modify_write(
    store: StoreAPI,
    key: str,
    message_type: type[M],
    mutate: Callable[[M], M | None],
    attempts: int,
) -> M | None:
    """`StoreAPI.update` for any store: read, mutate, write if unchanged, under the retry policy.

    Returns the value now stored, or None when the key does not exist;
    mutate returns None to write nothing.
    """

    async def attempt() -> M | Retry | None:
        current = await store.get(key, message_type)
        if current is None:
            return None
        updated = mutate(current.value)
        if updated is None:
            return current.value
        if await store.put_if_unchanged(key, updated, current.mod_revision) is None:
            return RETRY
        return updated

    return await optimistic(attempt, what=key, attempts=attempts)


def decode(message_type: type[M], key: str, raw: bytes) -> M | None:
    """The message stored at `key`, or None (logged) when the bytes are not one.

    A value that does not decode was not written by Berth (or by a newer,
    incompatible version): it is treated as absent rather than allowed to
    stop every reader of the store.
    """
    try:
        return message_type.FromString(raw)
    except DecodeError as error:
        log.error(
            "event=undecodable_value key=%s type=%s size=%d error=%r",
            key,
            message_type.__name__,
            len(raw),
            str(error),
        )
        return None


def decoded(message_type: type[M], entries: Iterable[Entry]) -> list[Versioned[M]]:
    """The entries that decode as `message_type` (see `decode`), as Versioned values."""
    found = []
    for entry in entries:
        value = decode(message_type, entry.key, entry.value or b"")
        if value is not None:
            found.append(Versioned(entry.key, value, entry.mod_revision))
    return found
