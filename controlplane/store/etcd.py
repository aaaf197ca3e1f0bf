"""Typed, transactional access to etcd (through aetcd) under one key prefix.

Every read-modify-write goes through `Store.commit`: one etcd transaction
whose conditions compare each key's `mod_revision`, so a writer that raced
another simply loses and retries on fresh state (optimistic concurrency).
aetcd's errors are translated into `berth.errors.Unavailable` here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import aetcd
import aetcd.exceptions
import grpc
from aetcd import rpc as etcd_rpc
from aetcd.utils import prefix_range_end
from google.protobuf.message import Message

from berth.errors import Unavailable

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)
T = TypeVar("T")


@dataclass(frozen=True)
class Versioned(Generic[M]):
    """A decoded value and the etcd revision that last modified its key."""

    key: str
    value: M
    mod_revision: int


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


@dataclass(frozen=True)
class WatchEvent:
    key: str
    value: bytes | None  # None: deleted
    mod_revision: int


def parse_endpoint(url: str) -> tuple[str, int]:
    """Accept "http://host:port", "host:port" or "host" (port 2379)."""
    rest = url.split("://", 1)[-1].rstrip("/")
    host, sep, port = rest.rpartition(":")
    if not sep:
        return rest, 2379
    if not port.isdigit():
        raise ValueError(f"etcd endpoint {url!r} has no numeric port")
    return host, int(port)


async def _translated(call: Awaitable[T]) -> T:
    try:
        return await call
    except aetcd.exceptions.ClientError as error:
        raise Unavailable(f"etcd: {error}") from error


class Store:
    """Connection to etcd that speaks protobuf messages and relative keys."""

    def __init__(self, endpoints: Sequence[str], prefix: str = "/berth/", timeout: float = 10.0) -> None:
        self.prefix = prefix
        self._endpoints = [parse_endpoint(url) for url in endpoints]
        self._timeout = timeout
        self._client: aetcd.Client | None = None

    @property
    def client(self) -> aetcd.Client:
        if self._client is None:
            raise RuntimeError("Store.connect() was not called")
        return self._client

    async def connect(self) -> None:
        # aetcd talks to one endpoint; with several we take the first that
        # answers. (A gRPC load-balancing target would be the next step.)
        last_error: Exception | None = None
        for host, port in self._endpoints:
            client = aetcd.Client(host=host, port=port, timeout=self._timeout)
            try:
                await client.connect()
                await client.status()
            except aetcd.exceptions.ClientError as error:
                last_error = error
                await client.close()
                continue
            self._client = client
            return
        raise Unavailable(f"no etcd endpoint answered: {last_error}")

    async def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.close()
            self._client = None

    def _full(self, key: str) -> bytes:
        return (self.prefix + key).encode()

    def relative(self, full_key: bytes) -> str:
        return full_key.decode()[len(self.prefix) :]

    async def get(self, key: str, message_type: type[M]) -> Versioned[M] | None:
        result = await _translated(self.client.get(self._full(key)))
        if result is None:
            return None
        return Versioned(key, message_type.FromString(result.value), result.mod_revision)

    async def scan(self, prefix: str, message_type: type[M]) -> tuple[list[Versioned[M]], int]:
        """All values under prefix, sorted by key, and the store revision they were read at."""
        result = await _translated(self.client.get_prefix(self._full(prefix), sort_order="ascend"))
        items = [
            Versioned(self.relative(kv.key), message_type.FromString(kv.value), kv.mod_revision)
            for kv in result.kvs
        ]
        return items, result.header.revision

    async def list_raw(self, prefix: str = "") -> tuple[list[WatchEvent], int]:
        result = await _translated(self.client.get_prefix(self._full(prefix)))
        items = [WatchEvent(self.relative(kv.key), kv.value, kv.mod_revision) for kv in result.kvs]
        return items, result.header.revision

    async def commit(self, writes: Sequence[Write], conditions: Sequence[Condition] = ()) -> int | None:
        """Apply all writes atomically if every condition holds.

        Returns the new store revision, or None when a condition failed.
        """
        client = self.client
        txns = client.transactions
        compare = [(txns.mod(self._full(c.key)) == c.mod_revision).build_message() for c in conditions]
        success: list[Any] = []
        for write in writes:
            if isinstance(write, Put):
                raw = write.value if isinstance(write.value, bytes) else write.value.SerializeToString()
                success.append(txns.put(self._full(write.key), raw, lease=write.lease or None))
            else:
                success.append(txns.delete(self._full(write.key)))
        # The raw Txn call, unlike aetcd's wrapper, gives us the header's revision.
        request = etcd_rpc.TxnRequest(compare=compare, success=client._ops_to_requests(success))
        try:
            response = await client.kvstub.Txn(request, timeout=self._timeout, metadata=client.metadata)
        except grpc.aio.AioRpcError as error:
            raise Unavailable(f"etcd: {error.details()}") from error
        return int(response.header.revision) if response.succeeded else None

    async def update(
        self,
        key: str,
        message_type: type[M],
        mutate: Callable[[M], M | None],
        attempts: int = 20,
    ) -> M | None:
        """Read-modify-write one key with retries; mutate returns None to write nothing."""
        for _ in range(attempts):
            current = await self.get(key, message_type)
            if current is None:
                return None
            updated = mutate(current.value)
            if updated is None:
                return current.value
            if await self.commit([Put(key, updated)], [Condition(key, current.mod_revision)]) is not None:
                return updated
        raise Unavailable(f"gave up updating {key} after {attempts} conflicting writes")

    async def grant_lease(self, ttl: int) -> int:
        lease = await _translated(self.client.lease(ttl))
        return int(lease.id)

    async def refresh_lease(self, lease_id: int) -> int:
        """Keep a lease alive; returns its remaining TTL (0 or less: it expired)."""
        reply = await _translated(self.client.refresh_lease(lease_id))
        return int(reply.TTL) if reply is not None else 0

    async def revoke_lease(self, lease_id: int) -> None:
        await _translated(self.client.revoke_lease(lease_id))

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[list[WatchEvent]]:
        """Batches of events under prefix from start_revision on, one per etcd response.

        Raises Unavailable when the watch breaks or its revision was compacted
        away; the caller relists. This speaks etcd's Watch stream directly:
        taking a whole response at a time costs far less than one callback
        and queue hop per event, which matters at tens of thousands of events.
        """
        client = self.client
        full = self._full(prefix)
        create = etcd_rpc.WatchRequest(
            create_request=etcd_rpc.WatchCreateRequest(
                key=full, range_end=prefix_range_end(full), start_revision=start_revision
            )
        )
        hold_open: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def requests() -> AsyncIterator[etcd_rpc.WatchRequest]:
            yield create
            await hold_open  # etcd ends the watch when the request stream closes

        call = etcd_rpc.WatchStub(client.channel).Watch(requests(), metadata=client.metadata)
        try:
            async for response in call:
                if response.compact_revision:
                    raise Unavailable(f"etcd watch: revision {start_revision} was compacted")
                if response.canceled:
                    raise Unavailable(f"etcd watch canceled: {response.cancel_reason}")
                if response.events:
                    yield [
                        WatchEvent(
                            self.relative(event.kv.key),
                            None if event.type == etcd_rpc.Event.DELETE else event.kv.value,
                            event.kv.mod_revision,
                        )
                        for event in response.events
                    ]
        except grpc.aio.AioRpcError as error:
            raise Unavailable(f"etcd watch broke: {error.details()}") from error
        finally:
            hold_open.cancel()
            call.cancel()
