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

With several endpoints (the members of one etcd cluster) the store fails
over: a call a member cannot serve moves to the next member, and watches and
keep-alive streams resume there (`failover` says when, and why retrying a
write is safe).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

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
from controlplane.store.failover import REQUIRE_LEADER, Rotation, fails_over
from controlplane.store.retry import ATTEMPTS
from controlplane.store.tls import EtcdTLS

log = logging.getLogger(__name__)

T = TypeVar("T")


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


# gRPC's reconnect backoff grows to two minutes by default: a member that
# comes back would stay skipped that long. etcd allows a client ping every 5 s.
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
]


class _Connection:
    """A gRPC channel to one etcd member (TLS when `tls` is given) and etcd's stubs on it."""

    def __init__(self, target: str, channel: grpc.aio.Channel, timeout: float) -> None:
        self.target = target
        self.channel = channel
        # etcd's own user/password authentication is not used: with TLS, the
        # client certificate is the credential. No per-call metadata.
        self.metadata: Any = None
        self.kv = etcd_rpc.KVStub(channel)
        self.lease = etcd_rpc.LeaseStub(channel)
        self.watch = etcd_rpc.WatchStub(channel)
        self.maintenance = etcd_rpc.MaintenanceStub(channel)
        self.timeout = timeout

    @classmethod
    def open(cls, host: str, port: int, timeout: float, tls: EtcdTLS | None) -> _Connection:
        """The channel connects lazily; the first call proves the member answers."""
        target = f"{host}:{port}"
        channel = (
            grpc.aio.secure_channel(target, tls.credentials(), options=_CHANNEL_OPTIONS)
            if tls is not None
            else grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS)
        )
        return cls(target, channel, timeout)

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
        self._connections: list[_Connection] | None = None
        self._rotation = Rotation(max(1, len(self._endpoints)))

    @property
    def current_endpoint(self) -> str:
        """host:port of the member calls go to first now (for logs and tests)."""
        host, port = self._endpoints[self._rotation.current]
        return f"{host}:{port}"

    async def connect(self) -> None:
        # The client library logs at info level about what we log ourselves.
        logging.getLogger("aetcd").setLevel(logging.WARNING)
        if not self._endpoints:
            raise Unavailable("no etcd endpoint given")
        self._connections = [
            _Connection.open(host, port, self._timeout, self._tls) for host, port in self._endpoints
        ]
        # One call proves a member answers (and, with TLS, that the handshake
        # passed). A member that has just started accepts connections a
        # moment before it speaks TLS: ask again until the timeout.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        while True:
            try:
                await self._call(
                    "status",
                    lambda etcd: etcd.maintenance.Status(etcd_rpc.StatusRequest(), timeout=etcd.timeout),
                )
                return
            except (Unavailable, grpc.aio.AioRpcError) as error:
                if isinstance(error, Unavailable) and loop.time() < deadline:
                    await asyncio.sleep(0.2)
                    continue
                await self.close()
                detail = error.details() if isinstance(error, grpc.aio.AioRpcError) else str(error)
                raise Unavailable(f"no etcd endpoint answered: {detail}") from error

    async def close(self) -> None:
        connections, self._connections = self._connections, None
        for connection in connections or ():
            await connection.close()

    def _connection(self, index: int) -> _Connection:
        if self._connections is None:
            raise RuntimeError("Store.connect() was not called")
        return self._connections[index]

    async def _call(self, what: str, call: Callable[[_Connection], Awaitable[T]]) -> T:
        """Run `call` on the current member, failing over to each other member once.

        A gRPC error that is not the member's fault (see `failover.fails_over`)
        is raised as it is, for the caller to translate.
        """
        failures: list[str] = []
        for index in self._rotation.order():
            etcd = self._connection(index)
            try:
                result = await call(etcd)
            except grpc.aio.AioRpcError as error:
                if not fails_over(error.code()):
                    raise
                self._rotation.failed(index)
                failures.append(f"{etcd.target}: {error.details()}")
                if len(self._endpoints) > 1:
                    log.warning(
                        "event=etcd_member_failed member=%s call=%s error=%r next=%s",
                        etcd.target,
                        what,
                        error.details(),
                        self.current_endpoint,
                    )
                continue
            self._rotation.succeeded(index)
            return result
        raise Unavailable(f"etcd: {'; '.join(failures)}")

    async def _ask(self, what: str, call: Callable[[_Connection], Awaitable[T]]) -> T:
        """`_call` with every gRPC error translated to Unavailable."""
        try:
            return await self._call(what, call)
        except grpc.aio.AioRpcError as error:
            raise Unavailable(f"etcd: {error.details()}") from error

    async def member_status(self) -> tuple[int, int]:
        """(member id, raft leader's member id) of the member answering now (for tests and tools)."""
        reply = await self._ask(
            "status", lambda etcd: etcd.maintenance.Status(etcd_rpc.StatusRequest(), timeout=etcd.timeout)
        )
        return int(reply.header.member_id), int(reply.leader)

    def _full(self, key: str) -> bytes:
        return (self.prefix + key).encode()

    def relative(self, full_key: bytes) -> str:
        return full_key.decode()[len(self.prefix) :]

    # -- reads -------------------------------------------------------------

    async def _range(self, key: str, prefix: bool) -> etcd_rpc.RangeResponse:
        full = self._full(key)
        request = etcd_rpc.RangeRequest(key=full, range_end=_range_end(full) if prefix else b"")
        if prefix:
            request.sort_order = etcd_rpc.RangeRequest.ASCEND
            request.sort_target = etcd_rpc.RangeRequest.KEY
        return await self._ask(
            "range", lambda etcd: etcd.kv.Range(request, timeout=etcd.timeout, metadata=etcd.metadata)
        )

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
        request = etcd_rpc.TxnRequest(
            compare=[self._compare(c) for c in conditions],
            success=[self._operation(w) for w in writes],
        )
        # Retried on another member when one fails: safe, see `failover`.
        response = await self._ask(
            "txn", lambda etcd: etcd.kv.Txn(request, timeout=etcd.timeout, metadata=etcd.metadata)
        )
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
        request = etcd_rpc.LeaseGrantRequest(TTL=ttl)
        reply = await self._ask(
            "lease-grant",
            lambda etcd: etcd.lease.LeaseGrant(request, timeout=etcd.timeout, metadata=etcd.metadata),
        )
        return int(reply.ID)

    async def refresh_lease(self, lease_id: int) -> int:
        """Keep one lease alive; returns its remaining TTL (0 or less: it expired)."""
        # A member that hangs (rather than refusing) must not eat the whole
        # budget: each member gets its share before the next one is asked.
        stream = self.keep_alive_stream(attempt_timeout=max(1.0, self._timeout / len(self._endpoints)))
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
        request = etcd_rpc.LeaseRevokeRequest(ID=lease_id)
        try:
            await self._call(
                "lease-revoke",
                lambda etcd: etcd.lease.LeaseRevoke(request, timeout=etcd.timeout, metadata=etcd.metadata),
            )
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:  # already expired: nothing to revoke
                raise Unavailable(f"etcd: {error.details()}") from error

    def keep_alive_stream(self, attempt_timeout: float | None = None) -> KeepAliveStream:
        """One LeaseKeepAlive stream on which many leases can be refreshed.

        With `attempt_timeout`, a member's stream that has not ended by then
        counts as failed (for one-shot refreshes; long-lived streams have none).
        """
        return KeepAliveStream(self, attempt_timeout)

    # -- watch -------------------------------------------------------------

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[list[Entry]]:
        """Batches of changes under prefix from start_revision on, one per etcd response.

        When the member serving the watch fails (or loses its leader), the
        watch resumes on the next member from the last delivered revision
        plus one, so the caller sees one unbroken sequence. Raises
        Unavailable when every member failed in a row without delivering, or
        the revision was compacted away; the caller relists. This speaks
        etcd's Watch stream directly: taking a whole response at a time costs
        far less than one callback and queue hop per event, which matters at
        tens of thousands of events.
        """
        full = self._full(prefix)
        next_revision = start_revision
        failures: list[str] = []
        while True:
            index = self._rotation.order()[0]
            etcd = self._connection(index)
            try:
                async with contextlib.aclosing(self._watch_member(etcd, full, next_revision)) as batches:
                    async for batch in batches:
                        failures.clear()
                        next_revision = max(entry.mod_revision for entry in batch) + 1
                        yield batch
                raise Unavailable("etcd watch ended")
            except grpc.aio.AioRpcError as error:
                self.leave_member(index, etcd.target, error, failures, "etcd watch")
                log.warning(
                    "event=etcd_watch_resumed from_member=%s member=%s revision=%d error=%r",
                    etcd.target,
                    self.current_endpoint,
                    next_revision,
                    error.details(),
                )

    def leave_member(
        self, index: int, target: str, error: grpc.aio.AioRpcError, failures: list[str], what: str
    ) -> None:
        """A stream (`what`) on member `index` broke: mark the member failed so the next attempt
        goes elsewhere. Raises Unavailable instead when the error is the member's own answer
        (nothing another member would say otherwise) or every member failed in a row."""
        if not fails_over(error.code()):
            raise Unavailable(f"{what} broke: {error.details()}") from error
        self._rotation.failed(index)
        failures.append(f"{target}: {error.details()}")
        if len(failures) >= len(self._endpoints):
            raise Unavailable(f"{what} broke: {'; '.join(failures)}") from error

    async def _watch_member(
        self, etcd: _Connection, full: bytes, start_revision: int
    ) -> AsyncGenerator[list[Entry], None]:
        """One member's watch stream; its gRPC errors are raised as they are."""
        create = etcd_rpc.WatchRequest(
            create_request=etcd_rpc.WatchCreateRequest(
                key=full, range_end=_range_end(full), start_revision=start_revision
            )
        )
        hold_open: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def requests() -> AsyncIterator[etcd_rpc.WatchRequest]:
            yield create
            await hold_open  # etcd ends the watch when the request stream closes

        call = etcd.watch.Watch(requests(), metadata=REQUIRE_LEADER)
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
        finally:
            hold_open.cancel()
            call.cancel()


class _Done(Exception):
    """Ends a keep-alive stream from its reply callback."""


class KeepAliveStream:
    """Refreshes for many leases over one etcd LeaseKeepAlive stream.

    `refresh` queues a keep-alive for a lease; `run` carries the queue to
    etcd and hands each reply (lease id, remaining TTL; 0 or less: expired)
    to a callback until the stream breaks on every member in a row
    (Unavailable) or is cancelled. When the member carrying the stream fails,
    the stream moves to the next member and sends again the refreshes that
    had no answer yet: leases belong to the cluster, not to a member.
    """

    def __init__(self, store: Store, attempt_timeout: float | None = None) -> None:
        self._store = store
        self._attempt_timeout = attempt_timeout
        self._requests: asyncio.Queue[int] = asyncio.Queue()
        self._unanswered: set[int] = set()

    def refresh(self, lease_id: int) -> None:
        self._requests.put_nowait(lease_id)

    async def run(self, on_reply: Callable[[int, int], None]) -> None:
        store = self._store
        failures: list[str] = []
        while True:
            index = store._rotation.order()[0]
            etcd = store._connection(index)
            try:
                await self._run_on(etcd, on_reply, failures)
                raise Unavailable("etcd lease keep-alive stream ended")
            except grpc.aio.AioRpcError as error:
                store.leave_member(index, etcd.target, error, failures, "etcd lease keep-alive")
                log.warning(
                    "event=etcd_keepalive_resumed from_member=%s member=%s error=%r",
                    etcd.target,
                    store.current_endpoint,
                    error.details(),
                )
                for lease in self._unanswered:
                    self._requests.put_nowait(lease)
                self._unanswered.clear()

    async def _run_on(
        self, etcd: _Connection, on_reply: Callable[[int, int], None], failures: list[str]
    ) -> None:
        async def outgoing() -> AsyncIterator[etcd_rpc.LeaseKeepAliveRequest]:
            while True:
                lease = await self._requests.get()
                self._unanswered.add(lease)
                yield etcd_rpc.LeaseKeepAliveRequest(ID=lease)

        call = etcd.lease.LeaseKeepAlive(outgoing(), metadata=REQUIRE_LEADER, timeout=self._attempt_timeout)
        try:
            async for response in call:
                failures.clear()
                self._unanswered.discard(int(response.ID))
                on_reply(int(response.ID), int(response.TTL))
        finally:
            call.cancel()


if TYPE_CHECKING:
    _satisfies_the_protocol: StoreAPI = Store([])  # checked by mypy, never run
