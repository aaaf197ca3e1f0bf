"""Clean-up the other controllers leave: orphaned and expired tasks."""

from __future__ import annotations

import logging
import time

from berth.v1 import resources_pb2 as pb
from controlplane import lifecycle
from controlplane.cache import ClusterCache
from controlplane.controllers.barrier import Barrier
from controlplane.store import Condition, Delete, StoreAPI, Versioned

log = logging.getLogger(__name__)


class Housekeeper:
    def __init__(
        self, store: StoreAPI, cache: ClusterCache, stopped_task_retention: float, interval: float = 5.0
    ) -> None:
        self._store = store
        self._cache = cache
        self._retention = stopped_task_retention
        # Clean-up is never urgent; a full scan on every pass would dominate
        # the loop in a big cluster.
        self._interval = interval
        self._next_run = 0.0
        self._barrier = Barrier(type(self).__name__)

    async def reconcile(self) -> int:
        if time.monotonic() < self._next_run:
            return 0
        self._next_run = time.monotonic() + self._interval
        written = 0
        cutoff = time.time() - self._retention
        node_ids = {n.value.id for n in self._cache.nodes()}
        for task in list(self._cache.tasks()):
            try:
                written = max(written, await self._tidy(task, cutoff, node_ids))
            except Exception as error:
                self._barrier.note("task", task.value.id, error)
        return written

    async def _tidy(self, task: Versioned[pb.Task], cutoff: float, node_ids: set[str]) -> int:
        value = task.value
        if value.last_status == pb.STOPPED:
            # Like ECS, stopped tasks stay visible for a while, then go.
            if value.stopped_at.seconds and value.stopped_at.seconds < cutoff:
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
