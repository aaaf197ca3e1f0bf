"""Clean-up the other controllers leave: orphaned and expired tasks."""

from __future__ import annotations

import logging
import time

from berth.v1 import resources_pb2 as pb
from controlplane import lifecycle
from controlplane.cache import ClusterCache
from controlplane.store import Condition, Delete, StoreAPI

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

    async def reconcile(self) -> int:
        if time.monotonic() < self._next_run:
            return 0
        self._next_run = time.monotonic() + self._interval
        written = 0
        cutoff = time.time() - self._retention
        node_ids = {n.value.id for n in self._cache.nodes()}
        for task in list(self._cache.tasks()):
            value = task.value
            if value.last_status == pb.STOPPED:
                # Like ECS, stopped tasks stay visible for a while, then go.
                if value.stopped_at.seconds and value.stopped_at.seconds < cutoff:
                    result = await self._store.commit(
                        [Delete(task.key)], [Condition(task.key, task.mod_revision)]
                    )
                    written = max(written, result or 0)
                continue
            if value.node_id and value.node_id not in node_ids:
                updated = lifecycle.mark_stopped(
                    value, pb.NODE_LOST, f"Node {value.node_id} no longer exists"
                )
                if updated is not None:
                    result = await self._store.put_if_unchanged(task.key, updated, task.mod_revision)
                    written = max(written, result or 0)
                    log.warning("event=task_orphaned task=%s node=%s", value.id, value.node_id)
        return written
