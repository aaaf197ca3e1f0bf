"""Node liveness through etcd leases.

Each replica keeps, for every agent streaming to it, a lease of `grace`
seconds with the key `alive/NODE` attached, refreshed by the agent's
heartbeats over one LeaseKeepAlive stream to etcd. When heartbeats stop
(agent dead, host cut off), etcd deletes the key once the lease runs out;
the leader's node monitor then marks the node DOWN and its tasks lost.
A node that beats again gets a fresh lease and is READY again, in one
transaction, so the monitor never sees it READY without its key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from berth.errors import Unavailable
from berth.v1 import resources_pb2 as pb
from controlplane.cache import ClusterCache
from controlplane.store import Condition, KeepAlive, Put, StoreAPI, keys

log = logging.getLogger(__name__)


class NodeLeases:
    def __init__(
        self,
        store: StoreAPI,
        cache: ClusterCache,
        grace: float,
        keep_alive_stream: Callable[[], KeepAlive] | None = None,
    ) -> None:
        self._store = store
        # Where keep-alives go: by default a stream on the store's connection; the control
        # plane gives one driven from a thread of its own (controlplane.keepalive).
        self._new_keep_alive_stream = keep_alive_stream or store.keep_alive_stream
        self._cache = cache
        # etcd leases have whole-second TTLs, and etcd enforces a minimum of ~2 s.
        self._ttl = max(2, round(grace))
        self._leases: dict[str, int] = {}
        self._expired: set[int] = set()
        self._keep_alive_stream: KeepAlive | None = None
        self._stream_task: asyncio.Task[None] | None = None
        self._locks: dict[str, asyncio.Lock] = {}

    async def close(self) -> None:
        if self._stream_task is not None:
            self._stream_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._stream_task

    async def beat(self, node_id: str) -> None:
        """Record a heartbeat: refresh the node's lease, or start a new one."""
        lock = self._locks.setdefault(node_id, asyncio.Lock())
        async with lock:
            lease = self._leases.get(node_id)
            node = self._cache.node(node_id)
            # etcd answers a keep-alive for an expired lease with TTL 0 (see
            # _stream), which sends us to _renew. A node DOWN while beating was
            # judged on older state: _renew sets it right.
            healthy = (
                lease is not None
                and lease not in self._expired
                and not (node is not None and node.value.status == pb.DOWN)
            )
            if healthy:
                assert lease is not None
                self._keep_alive(lease)
                return
            await self._renew(node_id)

    def forget(self, node_id: str) -> None:
        """The stream ended: stop refreshing and let the lease run out on its own."""
        lease = self._leases.pop(node_id, None)
        self._expired.discard(lease or 0)
        self._locks.pop(node_id, None)

    async def _renew(self, node_id: str) -> None:
        lease = await self._store.grant_lease(self._ttl)
        writes: list[Put] = [Put(keys.alive(node_id), b"", lease=lease)]
        conditions: list[Condition] = []
        node = self._cache.node(node_id)
        if node is not None and node.value.status == pb.DOWN:
            back = pb.Node()
            back.CopyFrom(node.value)
            back.status = pb.READY
            writes.append(Put(node.key, back))
            conditions.append(Condition(node.key, node.mod_revision))
        if await self._store.commit(writes, conditions) is None:
            # The node record changed under us; the next heartbeat retries.
            await self._store.revoke_lease(lease)
            return
        if len(writes) > 1:
            log.info("event=node_back node=%s", node_id)
        previous = self._leases.get(node_id)
        if previous is not None:
            self._expired.discard(previous)  # keep the set bounded by live nodes
        self._leases[node_id] = lease

    def _keep_alive(self, lease: int) -> None:
        if self._stream_task is None or self._stream_task.done():
            self._keep_alive_stream = self._new_keep_alive_stream()
            self._stream_task = asyncio.create_task(
                self._stream(self._keep_alive_stream), name="lease-keepalive"
            )
        assert self._keep_alive_stream is not None
        self._keep_alive_stream.refresh(lease)

    async def _stream(self, stream: KeepAlive) -> None:
        """One LeaseKeepAlive stream for all of this replica's node leases."""

        def on_reply(lease: int, ttl: int) -> None:
            # etcd answers a keep-alive for an expired lease with TTL 0; the
            # node's next heartbeat then takes a new lease (beat -> _renew).
            if ttl <= 0:
                self._expired.add(lease)

        try:
            await stream.run(on_reply)
        except Unavailable as error:
            log.warning("event=lease_keepalive_stream_broken error=%r", str(error))
