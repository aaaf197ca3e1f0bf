"""Clean-up the other controllers leave: orphaned and expired tasks, long-DOWN nodes.

A crash loop creates a stopped task per attempt; only the newest
`keep_failed_per_service` failed ones of each service are kept for
inspection, older ones go before their retention ends, so a loop can never
fill etcd.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable

from berth.v1 import resources_pb2 as pb
from controlplane import backoff, lifecycle
from controlplane.cache import ClusterCache
from controlplane.controllers.barrier import Barrier
from controlplane.store import Condition, Delete, StoreAPI, Versioned, keys

log = logging.getLogger(__name__)

KEEP_FAILED_PER_SERVICE = 10


def surplus_failures(tasks: Iterable[pb.Task], keep: int) -> set[str]:
    """Failed stopped tasks of a service beyond its newest `keep`: purged early."""
    failed: dict[tuple[str, str], list[pb.Task]] = defaultdict(list)
    for task in tasks:
        if task.service and backoff.is_failure(task):
            failed[(task.cluster, task.service)].append(task)
    surplus: set[str] = set()
    for group in failed.values():
        group.sort(key=lambda t: (backoff.seconds(t.stopped_at), t.id), reverse=True)
        surplus.update(t.id for t in group[keep:])
    return surplus


class Housekeeper:
    def __init__(
        self,
        store: StoreAPI,
        cache: ClusterCache,
        stopped_task_retention: float,
        interval: float = 5.0,
        node_gc_after: float = 0.0,
        keep_failed_per_service: int = KEEP_FAILED_PER_SERVICE,
    ) -> None:
        self._keep_failed = keep_failed_per_service
        self._store = store
        self._cache = cache
        self._retention = stopped_task_retention
        # Seconds a node stays DOWN before its record goes; 0: kept forever.
        self._node_gc_after = node_gc_after
        # When this leader first saw a DOWN node without `down_since` (marked
        # DOWN by an older version): its clock starts then.
        self._down_first_seen: dict[str, float] = {}
        # Clean-up is never urgent; a full scan on every pass would dominate
        # the loop in a big cluster.
        self._interval = interval
        self._next_run = 0.0
        self._barrier = Barrier(type(self).__name__)

    async def reconcile(self) -> int:
        if time.monotonic() < self._next_run:
            return 0
        self._next_run = time.monotonic() + self._interval
        written = await self.collect_down_nodes(time.time())
        cutoff = time.time() - self._retention
        node_ids = {n.value.id for n in self._cache.nodes()}
        tasks = list(self._cache.tasks())
        surplus = surplus_failures((t.value for t in tasks), self._keep_failed)
        for task in tasks:
            try:
                written = max(written, await self._tidy(task, cutoff, node_ids, surplus))
            except Exception as error:
                self._barrier.note("task", task.value.id, error)
        return written

    async def collect_down_nodes(self, now: float) -> int:
        """Remove nodes DOWN for longer than `node_gc_after`, with their keys.

        Their tasks were recorded as lost when they went DOWN; a node that
        still has a task not STOPPED is left for the next pass. If its agent
        ever comes back, it registers again as a new record.
        """
        if self._node_gc_after <= 0:
            return 0
        written = 0
        down_ids = set()
        for versioned in self._cache.nodes():
            if versioned.value.status != pb.DOWN:
                continue
            down_ids.add(versioned.value.id)
            try:
                written = max(written, await self._collect(versioned, now))
            except Exception as error:
                self._barrier.note("node", versioned.value.id, error)
        for node_id in set(self._down_first_seen) - down_ids:
            del self._down_first_seen[node_id]
        return written

    async def _collect(self, versioned: Versioned[pb.Node], now: float) -> int:
        node = versioned.value
        since = node.down_since.seconds or self._down_first_seen.setdefault(node.id, now)
        if now - since < self._node_gc_after:
            return 0
        if any(t.value.last_status != pb.STOPPED for t in self._cache.tasks_on_node(node.id)):
            return 0
        counter = self._cache.raw(keys.placements(node.id))
        result = await self._store.commit(
            [Delete(versioned.key), Delete(keys.alive(node.id)), Delete(keys.placements(node.id))],
            [
                Condition(versioned.key, versioned.mod_revision),
                Condition(keys.placements(node.id), counter.mod_revision if counter else 0),
                Condition(keys.alive(node.id), 0),
            ],
        )
        if result is None:
            return 0
        log.warning("event=node_collected node=%s name=%s down_for=%.0fs", node.id, node.name, now - since)
        return result

    async def _tidy(
        self, task: Versioned[pb.Task], cutoff: float, node_ids: set[str], surplus: set[str]
    ) -> int:
        value = task.value
        if value.last_status == pb.STOPPED:
            # Like ECS, stopped tasks stay visible for a while, then go; the
            # older attempts of a crash loop go early.
            expired = bool(value.stopped_at.seconds) and value.stopped_at.seconds < cutoff
            if expired or value.id in surplus:
                deleted = [Delete(task.key)]
                result = await self._store.commit(deleted, [Condition(task.key, task.mod_revision)])
                return result or 0
            return 0
        if value.node_id and value.node_id not in node_ids:
            updated = lifecycle.mark_stopped(value, pb.NODE_LOST, f"Node {value.node_id} no longer exists")
            if updated is not None:
                result = await self._store.put_if_unchanged(task.key, updated, task.mod_revision)
                log.warning("event=task_orphaned task=%s node=%s", value.id, value.node_id)
                return result or 0
        return 0
