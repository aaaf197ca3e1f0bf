"""Node liveness through etcd leases.

Each replica keeps, for every agent streaming to it, a lease of `grace`
seconds with the key `alive/NODE` attached, refreshed by the agent's
heartbeats over one LeaseKeepAlive stream to etcd. When heartbeats stop
(agent dead, host cut off), etcd deletes the key once the lease runs out;
the leader's node monitor then marks the node DOWN and its tasks lost.
A node that beats again gets a fresh lease and is READY again, in one
transaction, so the monitor never sees it READY without its key.

An agent that stops with SIGTERM says goodbye first (`Goodbye`, restarting):
`goodbye` records on the node when its restart window closes
(`Node.restarting_until`, at most --agent-restart-grace from now), and the
node monitor tolerates its silence until then. The node's next heartbeat
clears it, in the same transaction as its new key, so a later crash without
a goodbye is judged after the normal grace again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from berth.clock import now
from berth.errors import Unavailable
from berth.v1 import resources_pb2 as pb
from controlplane.cache import ClusterCache
from controlplane.store import Condition, KeepAlive, Put, StoreAPI, keys

log = logging.getLogger(__name__)

# Seconds between an agent's heartbeats at most. A third of the grace lets two
# beats be lost before the lease runs out; the cap keeps the spread of lease
# expiries of nodes silenced together (one interval) short, since the node
# monitor waits that long before judging one (controllers/nodes.py).
MAX_HEARTBEAT_INTERVAL = 1.5
# Default --agent-restart-grace: long enough for an agent upgrade (a package
# install, the new process starting and adopting its containers, which takes
# seconds), short enough that a host that said "restarting" on its way down
# (a shutdown stops the agent first) has its tasks replaced within a minute.
DEFAULT_RESTART_GRACE = 60.0


def heartbeat_interval(grace: float) -> float:
    """Seconds between heartbeats the control plane asks of its agents."""
    return min(grace / 3, MAX_HEARTBEAT_INTERVAL)


class NodeLeases:
    def __init__(
        self,
        store: StoreAPI,
        cache: ClusterCache,
        grace: float,
        restart_grace: float = DEFAULT_RESTART_GRACE,
        keep_alive_stream: Callable[[], KeepAlive] | None = None,
    ) -> None:
        self._store = store
        # Where keep-alives go: by default a stream on the store's connection; the control
        # plane gives one driven from a thread of its own (controlplane.keepalive).
        self._new_keep_alive_stream = keep_alive_stream or store.keep_alive_stream
        self._cache = cache
        self._grace = grace
        self._restart_grace = restart_grace
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
            # judged on older state: _renew sets it right, and clears a restart
            # window a node that beats again no longer needs.
            healthy = (
                lease is not None
                and lease not in self._expired
                and not (node is not None and (node.value.status == pb.DOWN or _restarting(node.value)))
            )
            if healthy:
                assert lease is not None
                self._keep_alive(lease)
                return
            await self._renew(node_id)

    async def goodbye(self, node_id: str, restarting: bool, expected_seconds: int) -> None:
        """The node's agent is stopping: when restarting, tolerate its silence for a while.

        The window is the restart grace, or the agent's expected absence when it gives
        one, at least the node grace and at most the restart grace (an agent cannot buy
        itself more).
        """
        if not restarting:
            log.info("event=agent_goodbye node=%s restarting=false", node_id)
            return
        expected = float(expected_seconds) if expected_seconds else self._restart_grace
        window = min(max(expected, self._grace), self._restart_grace)
        for _ in range(3):
            # Read from etcd, not the cache: a goodbye is rare, and must not lose to a stale read.
            node = await self._store.get(keys.node(node_id), pb.Node)
            if node is None or node.value.status == pb.DOWN:
                return
            restarting_node = pb.Node()
            restarting_node.CopyFrom(node.value)
            until = now()
            until.FromNanoseconds(until.ToNanoseconds() + int(window * 1e9))
            restarting_node.restarting_until.CopyFrom(until)
            if await self._store.put_if_unchanged(node.key, restarting_node, node.mod_revision) is not None:
                log.info("event=agent_restarting node=%s window=%.0fs", node_id, window)
                return
            # The record changed between the read and the write: read again.
        log.warning("event=agent_restarting_not_recorded node=%s", node_id)

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
        if node is not None and (node.value.status == pb.DOWN or _restarting(node.value)):
            back = pb.Node()
            back.CopyFrom(node.value)
            if back.status == pb.DOWN:
                back.status = pb.READY
            back.ClearField("restarting_until")
            writes.append(Put(node.key, back))
            conditions.append(Condition(node.key, node.mod_revision))
        if await self._store.commit(writes, conditions) is None:
            # The node record changed under us; the next heartbeat retries.
            await self._store.revoke_lease(lease)
            return
        if len(writes) > 1 and node is not None:
            was = "down" if node.value.status == pb.DOWN else "restarting"
            log.info("event=node_back node=%s was=%s", node_id, was)
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


def _restarting(node: pb.Node) -> bool:
    return node.HasField("restarting_until")
