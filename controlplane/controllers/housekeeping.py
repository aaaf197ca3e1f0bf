"""Clean-up the other controllers leave: orphaned and expired tasks, long-DOWN nodes.

What bounds etcd's growth from tasks: a STOPPED task keeps its exit code, stop
code and reason for `--stopped-task-retention` seconds (3 days by default),
then `purge_stopped` deletes it, at most `PURGE_PER_PASS` a pass in
transactions of `PURGE_BATCH`, oldest first, so a backlog (a crash loop's
thousands of attempts) drains over a few passes without one huge transaction
or a pass that never ends. Old revisions of deleted and rewritten keys are
etcd's to compact: the embedded etcd runs with revision auto-compaction
(`store/embedded.py`); an external etcd needs its own `--auto-compaction-*`.

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

# etcd refuses transactions of more than --max-txn-ops (128 by default).
PURGE_BATCH = 100
# A pass deletes at most this many stopped tasks; the rest wait for the next.
PURGE_PER_PASS = 1_000
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
        tasks = list(self._cache.tasks())
        surplus = surplus_failures((t.value for t in tasks), self._keep_failed)
        written = max(written, await self.purge_stopped(time.time(), surplus))
        node_ids = {n.value.id for n in self._cache.nodes()}
        for task in tasks:
            try:
                written = max(written, await self._tidy(task, node_ids))
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

    async def purge_stopped(self, now: float, surplus: set[str] | None = None) -> int:
        """Delete STOPPED tasks stopped more than the retention ago, oldest first, bounded per pass.

        `surplus` names older failed attempts of crash loops, purged before
        their retention ends. Each batch compares every task's revision: if
        one changed since the cache saw it, the batch is left for the next
        pass, which sees it fresh.
        """
        cutoff = now - self._retention
        early = surplus or set()
        candidates = sorted(
            (
                t
                for t in self._cache.tasks()
                if _stopped_before(t.value, cutoff)
                or (t.value.id in early and t.value.last_status == pb.STOPPED)
            ),
            key=lambda t: _stopped_seconds(t.value),
        )
        expired = candidates[:PURGE_PER_PASS]
        written = purged = 0
        for start in range(0, len(expired), PURGE_BATCH):
            batch = expired[start : start + PURGE_BATCH]
            try:
                result = await self._store.commit(
                    [Delete(t.key) for t in batch], [Condition(t.key, t.mod_revision) for t in batch]
                )
            except Exception as error:
                self._barrier.note("task", batch[0].value.id, error)
                continue
            if result is not None:
                written = max(written, result)
                purged += len(batch)
        if purged:
            log.info(
                "event=stopped_tasks_purged count=%d left=%d retention=%.0fs",
                purged,
                len(candidates) - purged,
                self._retention,
            )
        return written

    async def _tidy(self, task: Versioned[pb.Task], node_ids: set[str]) -> int:
        value = task.value
        if value.last_status == pb.STOPPED:
            return 0  # kept for the retention, then purged by `purge_stopped`
        if value.node_id and value.node_id not in node_ids:
            updated = lifecycle.mark_stopped(value, pb.NODE_LOST, f"Node {value.node_id} no longer exists")
            if updated is not None:
                result = await self._store.put_if_unchanged(task.key, updated, task.mod_revision)
                log.warning("event=task_orphaned task=%s node=%s", value.id, value.node_id)
                return result or 0
        return 0


def _stopped_seconds(task: pb.Task) -> int:
    # A STOPPED task without `stopped_at` (written by an older version) ages
    # from its creation, so it is purged too instead of kept forever.
    return task.stopped_at.seconds or task.created_at.seconds


def _stopped_before(task: pb.Task, cutoff: float) -> bool:
    return task.last_status == pb.STOPPED and 0 < _stopped_seconds(task) < cutoff
