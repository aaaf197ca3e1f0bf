"""Agents' task status reports, folded into etcd many per transaction.

Reports are queued as they arrive on the agents' streams and written by a
few workers, each taking up to STATUS_BATCH reports at a time. A report is
applied to the task as `lifecycle.apply_report` says (STOPPED is terminal,
so a late report never resurrects a task); a batch whose cache view was
stale is applied again report by report on fresh reads. A write that fails
is only logged: agents re-report what etcd lacks on their next resync.
"""

from __future__ import annotations

import asyncio
import logging

from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb
from controlplane import lifecycle
from controlplane.cache import ClusterCache
from controlplane.metrics import STATUS_REPORTS
from controlplane.store import Condition, Put, StoreAPI, keys

log = logging.getLogger(__name__)

STATUS_BATCH = 100


class StatusWriter:
    """Folds agents' status reports into etcd, many per transaction."""

    def __init__(self, store: StoreAPI, cache: ClusterCache) -> None:
        self._store = store
        self._cache = cache
        self._queue: asyncio.Queue[tuple[str, agent_pb.TaskStatusReport]] = asyncio.Queue()
        self._runners: list[asyncio.Task[None]] = []

    def start(self, workers: int = 4) -> None:
        # Several writers, so one transaction's round trip does not hold up
        # the reports queued behind it.
        self._runners = [asyncio.create_task(self._run(), name=f"status-writer-{i}") for i in range(workers)]

    async def stop(self) -> None:
        for runner in self._runners:
            runner.cancel()
        await asyncio.gather(*self._runners, return_exceptions=True)

    def submit(self, node_id: str, report: agent_pb.TaskStatusReport) -> None:
        STATUS_REPORTS.inc()
        self._queue.put_nowait((node_id, report))

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty() and len(batch) < STATUS_BATCH:
                batch.append(self._queue.get_nowait())
            try:
                await self._write(batch)
            except Exception as error:  # the agent re-reports what etcd lacks
                log.warning("event=status_write_failed count=%d error=%r", len(batch), str(error))

    async def _write(self, batch: list[tuple[str, agent_pb.TaskStatusReport]]) -> None:
        writes, conditions, pending = [], [], []
        seen: set[str] = set()
        for node_id, report in batch:
            if report.task_id in seen:
                pending.append((node_id, report))  # two reports for one task: apply in order
                continue
            current = self._cache.task(report.task_id)
            if current is None:
                continue
            updated = lifecycle.apply_report(current.value, node_id, report)
            if updated is None:
                continue
            seen.add(report.task_id)
            writes.append(Put(current.key, updated))
            conditions.append(Condition(current.key, current.mod_revision))
        if writes and await self._store.commit(writes, conditions) is None:
            # The cache trailed etcd for some task: apply one by one on fresh reads.
            pending = batch
        for node_id, report in pending:
            await self._store.update(
                keys.task(report.task_id),
                pb.Task,
                lambda task, n=node_id, r=report: lifecycle.apply_report(task, n, r),  # type: ignore[misc]
            )
        for node_id, report in batch:
            log.info(
                "event=task_status task=%s node=%s status=%s",
                report.task_id,
                node_id,
                pb.TaskStatus.Name(report.last_status),
            )
