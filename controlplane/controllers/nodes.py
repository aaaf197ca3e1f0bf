"""The node monitor: a READY or DRAINING node whose liveness key expired is DOWN.

Its tasks are recorded as lost (STOPPED, stop code NODE_LOST) so the service
controller replaces them elsewhere at once. When the node's agent comes
back it gets a snapshot without those tasks and stops its old copies, so
exactly one copy of each survives.

A newly elected leader waits `startup_hold` seconds before judging: agents
streaming to a restarted control plane need a moment to reconnect.
"""

from __future__ import annotations

import logging
import time

from berth.v1 import resources_pb2 as pb
from controlplane import lifecycle
from controlplane.cache import ClusterCache
from controlplane.controllers.barrier import Barrier
from controlplane.metrics import NODES_DOWN
from controlplane.store import Condition, Put, StoreAPI, Versioned, keys

log = logging.getLogger(__name__)

BATCH = 100
# Seconds a liveness key must be seen missing before the node is judged.
CONFIRM = 0.5


class NodeMonitor:
    def __init__(self, store: StoreAPI, cache: ClusterCache, grace: float, startup_hold: float) -> None:
        self._store = store
        self._cache = cache
        self._grace = grace
        self._judging_from = time.monotonic() + startup_hold
        self._missing_since: dict[str, float] = {}
        self._next_run = 0.0
        self._barrier = Barrier(type(self).__name__)

    async def reconcile(self) -> int:
        if time.monotonic() < max(self._judging_from, self._next_run):
            return 0
        # A few looks a second are plenty against a grace of seconds, and
        # cheap next to a full pass over a thousand nodes on every change.
        self._next_run = time.monotonic() + CONFIRM / 2
        written = 0
        now = time.monotonic()
        for versioned in self._cache.nodes():
            try:
                written = max(written, await self._judge(versioned, now))
            except Exception as error:
                self._barrier.note("node", versioned.value.id, error)
        return written

    async def _judge(self, versioned: Versioned[pb.Node], now: float) -> int:
        """Mark one node DOWN (and its tasks lost) once its liveness key stayed missing."""
        node = versioned.value
        if node.status == pb.DOWN or self._cache.raw(keys.alive(node.id)) is not None:
            self._missing_since.pop(node.id, None)
            return 0
        # The key must stay missing for a moment: the cache may show a
        # node's record an instant before the liveness key written after it.
        if now - self._missing_since.setdefault(node.id, now) < CONFIRM:
            return 0
        self._missing_since.pop(node.id, None)
        down = pb.Node()
        down.CopyFrom(node)
        down.status = pb.DOWN
        down.down_since.GetCurrentTime()  # for garbage collection (housekeeping)
        result = await self._store.put_if_unchanged(versioned.key, down, versioned.mod_revision)
        if result is None:
            return 0
        NODES_DOWN.inc()
        log.warning("event=node_down node=%s name=%s grace=%.0fs", node.id, node.name, self._grace)
        return max(result, await self._lose_tasks(node))

    async def _lose_tasks(self, node: pb.Node) -> int:
        reason = f"Node {node.name} ({node.id}) stopped sending heartbeats for {self._grace:.0f}s"
        lost = [t for t in self._cache.tasks_on_node(node.id) if t.value.last_status != pb.STOPPED]
        written = 0
        for offset in range(0, len(lost), BATCH):
            writes, conditions = [], []
            for task in lost[offset : offset + BATCH]:
                updated = lifecycle.mark_stopped(task.value, pb.NODE_LOST, reason)
                if updated is not None:
                    writes.append(Put(task.key, updated))
                    conditions.append(Condition(task.key, task.mod_revision))
            if writes and (result := await self._store.commit(writes, conditions)):
                written = result
                log.warning("event=tasks_lost node=%s count=%d", node.id, len(writes))
        return written
