"""Typed, transactional access to etcd under one key prefix: the only door to etcd.

`Store` is the real implementation of `StoreAPI` (`controlplane.store.api`,
with the value types); `MemoryStore` is its fake for unit tests.
Every read-modify-write goes through `Store.commit`: one etcd transaction
whose conditions compare each key's `mod_revision`, so a writer that raced
another simply loses and retries on fresh state (optimistic concurrency;
`controlplane.store.retry` is the one retry policy for that). Values are
protobuf messages, except a few keys that hold raw bytes (`alive/`,
`placements/`, `vips/`, `leader`: see `keys`).

The seam to etcd is `_Connection`: a gRPC channel (mutual TLS with the
files of `controlplane.store.tls` when given: aetcd's own Client has no TLS)
on which every request is built from etcd's own generated messages
(`aetcd.rpc`, etcd's public API). No other module imports aetcd, and
nothing here uses aetcd's private helpers. gRPC errors become
`berth.errors.Unavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc
from aetcd import rpc as etcd_rpc
from google.protobuf.message import Message

from berth.errors import Unavailable
from controlplane.store.api import (
    Condition,
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
from controlplane.store.tls import EtcdTLS

log = logging.getLogger(__name__)


def parse_endpoint(url: str) -> tuple[str, int]:
    """Accept "http://host:port", "host:port" or "host" (port 2379)."""
    rest = url.split("://", 1)[-1].rstrip("/")
    host, sep, port = rest.rpartition(":")
    if not sep:
        return rest, 2379
    if not port.isdigit():
        raise ValueError(f"etcd endpoint {url!r} has no numeric port")
    return host, int(port)


def _range_end(prefix: bytes) -> bytes:
    """etcd's range end for "every key starting with prefix": the prefix plus one."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"  # every key


class _Connection:
    """A gRPC channel to one etcd endpoint (TLS when `tls` is given) and etcd's stubs on it."""

    def __init__(self, channel: grpc.aio.Channel, timeout: float) -> None:
        self.channel = channel
        # etcd's own user/password authentication is not used: with TLS, the
        # client certificate is the credential. No per-call metadata.
        self.metadata: Any = None
        self.kv = etcd_rpc.KVStub(channel)
        self.lease = etcd_rpc.LeaseStub(channel)
        self.watch = etcd_rpc.WatchStub(channel)
        self.timeout = timeout

    @classmethod
    async def open(cls, host: str, port: int, timeout: float, tls: EtcdTLS | None) -> _Connection:
        target = f"{host}:{port}"
        channel = (
            grpc.aio.secure_channel(target, tls.credentials())
            if tls is not None
            else grpc.aio.insecure_channel(target)
        )
        try:
            # One call proves the endpoint answers (and, with TLS, that the handshake passed).
            await etcd_rpc.MaintenanceStub(channel).Status(etcd_rpc.StatusRequest(), timeout=timeout)
        except grpc.aio.AioRpcError:
            await channel.close(None)
            raise
        return cls(channel, timeout)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.channel.close(None)


class Store:
    """Connection to etcd that speaks protobuf messages and relative keys."""

    def __init__(
        self,
        endpoints: Sequence[str],
        prefix: str = "/berth/",
        timeout: float = 10.0,
        tls: EtcdTLS | None = None,
    ) -> None:
        self.prefix = prefix
        self._endpoints = [parse_endpoint(url) for url in endpoints]
        # An https:// endpoint without files given trusts the system's roots.
        if tls is None and any(url.startswith("https://") for url in endpoints):
            tls = EtcdTLS(ca=None)
        self._tls = tls
        self._timeout = timeout
        self._connection: _Connection | None = None

    @property
    def _etcd(self) -> _Connection:
        if self._connection is None:
            raise RuntimeError("Store.connect() was not called")
        return self._connection

    async def connect(self) -> None:
        # The client library logs at info level about what we log ourselves.
        logging.getLogger("aetcd").setLevel(logging.WARNING)
        # One endpoint at a time: with several we take the first that answers.
        # (A gRPC load-balancing target would be the next step.)
        last_error: Exception | None = None
        for host, port in self._endpoints:
            try:
                self._connection = await _Connection.open(host, port, self._timeout, self._tls)
                return
            except grpc.aio.AioRpcError as error:
                last_error = error
        detail = last_error.details() if isinstance(last_error, grpc.aio.AioRpcError) else last_error
        raise Unavailable(f"no etcd endpoint answered: {detail}")

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    def _full(self, key: str) -> bytes:
        return (self.prefix + key).encode()

    def relative(self, full_key: bytes) -> str:
        return full_key.decode()[len(self.prefix) :]

    # -- reads -------------------------------------------------------------

    async def _range(self, key: str, prefix: bool) -> etcd_rpc.RangeResponse:
        etcd = self._etcd
        full = self._full(key)
        request = etcd_rpc.RangeRequest(key=full, range_end=_range_end(full) if prefix else b"")
        if prefix:
            request.sort_order = etcd_rpc.RangeRequest.ASCEND
            request.sort_target = etcd_rpc.RangeRequest.KEY
        try:
            return await etcd.kv.Range(request, timeout=etcd.timeout, metadata=etcd.metadata)
        except grpc.aio.AioRpcError as error:
            raise Unavailable(f"etcd: {error.details()}") from error

    async def get_raw(self, key: str) -> Entry | None:
        """One key's bytes, revision and lease (for keys that hold no message)."""
        response = await self._range(key, prefix=False)
        if not response.kvs:
            return None
        kv = response.kvs[0]
        return Entry(key, kv.value, kv.mod_revision, kv.lease)

    async def get(self, key: str, message_type: type[M]) -> Versioned[M] | None:
        entry = await self.get_raw(key)
        if entry is None or entry.value is None:
            return None
        value = decode(message_type, key, entry.value)
        return None if value is None else Versioned(key, value, entry.mod_revision)

    async def scan(self, prefix: str, message_type: type[M]) -> tuple[list[Versioned[M]], int]:
        """All values under prefix, sorted by key, and the store revision they were read at."""
        response = await self._range(prefix, prefix=True)
        entries = (Entry(self.relative(kv.key), kv.value, kv.mod_revision) for kv in response.kvs)
        return decoded(message_type, entries), response.header.revision

    async def scan_raw(self, prefix: str = "") -> tuple[list[Entry], int]:
        """Every key under prefix as raw entries, and the store revision they were read at."""
        response = await self._range(prefix, prefix=True)
        items = [Entry(self.relative(kv.key), kv.value, kv.mod_revision, kv.lease) for kv in response.kvs]
        return items, response.header.revision

    # -- writes ------------------------------------------------------------

    def _operation(self, write: Write) -> etcd_rpc.RequestOp:
        if isinstance(write, Put):
            raw = write.value if isinstance(write.value, bytes) else write.value.SerializeToString()
            return etcd_rpc.RequestOp(
                request_put=etcd_rpc.PutRequest(key=self._full(write.key), value=raw, lease=write.lease)
            )
        return etcd_rpc.RequestOp(request_delete_range=etcd_rpc.DeleteRangeRequest(key=self._full(write.key)))

    def _compare(self, condition: Condition) -> etcd_rpc.Compare:
        return etcd_rpc.Compare(
            key=self._full(condition.key),
            result=etcd_rpc.Compare.EQUAL,
            target=etcd_rpc.Compare.MOD,
            mod_revision=condition.mod_revision,
        )

    async def commit(self, writes: Sequence[Write], conditions: Sequence[Condition] = ()) -> int | None:
        """Apply all writes atomically if every condition holds.

        Returns the new store revision, or None when a condition failed.
        """
        etcd = self._etcd
        request = etcd_rpc.TxnRequest(
            compare=[self._compare(c) for c in conditions],
            success=[self._operation(w) for w in writes],
        )
        try:
            response = await etcd.kv.Txn(request, timeout=etcd.timeout, metadata=etcd.metadata)
        except grpc.aio.AioRpcError as error:
            raise Unavailable(f"etcd: {error.details()}") from error
        return int(response.header.revision) if response.succeeded else None

    async def put_if_unchanged(self, key: str, value: Message | bytes, mod_revision: int) -> int | None:
        """Write one key if it still has `mod_revision` (0: if it is absent).

        Returns the new store revision, or None when the key had changed.
        """
        return await self.commit([Put(key, value)], [Condition(key, mod_revision)])

    async def update(
        self,
        key: str,
        message_type: type[M],
        mutate: Callable[[M], M | None],
        attempts: int = ATTEMPTS,
    ) -> M | None:
        """Read-modify-write one key under the retry policy; mutate returns None to write nothing.

        Returns the value now stored, or None when the key does not exist.
        """
        return await read_modify_write(self, key, message_type, mutate, attempts)

    # -- leases ------------------------------------------------------------

    async def grant_lease(self, ttl: int) -> int:
        etcd = self._etcd
        try:
            reply = await etcd.lease.LeaseGrant(
                etcd_rpc.LeaseGrantRequest(TTL=ttl), timeout=etcd.timeout, metadata=etcd.metadata
            )
        except grpc.aio.AioRpcError as error:
            raise Unavailable(f"etcd: {error.details()}") from error
        return int(reply.ID)

    async def refresh_lease(self, lease_id: int) -> int:
        """Keep one lease alive; returns its remaining TTL (0 or less: it expired)."""
        stream = self.keep_alive_stream()
        stream.refresh(lease_id)
        replies: list[int] = []

        def first(_: int, ttl: int) -> None:
            replies.append(ttl)
            raise _Done

        try:
            await asyncio.wait_for(stream.run(first), self._timeout)
        except _Done:
            pass
        except TimeoutError as error:
            raise Unavailable(f"etcd did not answer a keep-alive within {self._timeout:.0f}s") from error
        return replies[0] if replies else 0

    async def revoke_lease(self, lease_id: int) -> None:
        etcd = self._etcd
        try:
            await etcd.lease.LeaseRevoke(
                etcd_rpc.LeaseRevokeRequest(ID=lease_id), timeout=etcd.timeout, metadata=etcd.metadata
            )
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:  # already expired: nothing to revoke
                raise Unavailable(f"etcd: {error.details()}") from error

    def keep_alive_stream(self) -> KeepAliveStream:
        """One LeaseKeepAlive stream on which many leases can be refreshed."""
        return KeepAliveStream(self._etcd)

    # -- watch -------------------------------------------------------------

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[list[Entry]]:
        """Batches of changes under prefix from start_revision on, one per etcd response.

        Raises Unavailable when the watch breaks or its revision was compacted
        away; the caller relists. This speaks etcd's Watch stream directly:
        taking a whole response at a time costs far less than one callback
        and queue hop per event, which matters at tens of thousands of events.
        """
        etcd = self._etcd
        full = self._full(prefix)
        create = etcd_rpc.WatchRequest(
            create_request=etcd_rpc.WatchCreateRequest(
                key=full, range_end=_range_end(full), start_revision=start_revision
            )
        )
        hold_open: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def requests() -> AsyncIterator[etcd_rpc.WatchRequest]:
            yield create
            await hold_open  # etcd ends the watch when the request stream closes

        call = etcd.watch.Watch(requests(), metadata=etcd.metadata)
        try:
            async for response in call:
                if response.compact_revision:
                    raise Unavailable(f"etcd watch: revision {start_revision} was compacted")
                if response.canceled:
                    raise Unavailable(f"etcd watch canceled: {response.cancel_reason}")
                if response.events:
                    yield [
                        Entry(
                            self.relative(event.kv.key),
                            None if event.type == etcd_rpc.Event.DELETE else event.kv.value,
                            event.kv.mod_revision,
                            event.kv.lease,
                        )
                        for event in response.events
                    ]
        except grpc.aio.AioRpcError as error:
            raise Unavailable(f"etcd watch broke: {error.details()}") from error
        finally:
            hold_open.cancel()
            call.cancel()


class _Done(Exception):
    """Ends a keep-alive stream from its reply callback."""


class KeepAliveStream:
    """Refreshes for many leases over one etcd LeaseKeepAlive stream.

    `refresh` queues a keep-alive for a lease; `run` carries the queue to
    etcd and hands each reply (lease id, remaining TTL; 0 or less: expired)
    to a callback until the stream breaks (Unavailable) or is cancelled.
    """

    def __init__(self, etcd: _Connection) -> None:
        self._etcd = etcd
        self._requests: asyncio.Queue[int] = asyncio.Queue()

    def refresh(self, lease_id: int) -> None:
        self._requests.put_nowait(lease_id)

    async def run(self, on_reply: Callable[[int, int], None]) -> None:
        async def outgoing() -> AsyncIterator[etcd_rpc.LeaseKeepAliveRequest]:
            while True:
                yield etcd_rpc.LeaseKeepAliveRequest(ID=await self._requests.get())

        call = self._etcd.lease.LeaseKeepAlive(outgoing(), metadata=self._etcd.metadata)
        try:
            async for response in call:
                on_reply(int(response.ID), int(response.TTL))
        except grpc.aio.AioRpcError as error:
            raise Unavailable(f"etcd lease keep-alive broke: {error.details()}") from error
        finally:
            call.cancel()


if TYPE_CHECKING:
    _satisfies_the_protocol: StoreAPI = Store([])  # checked by mypy, never run
