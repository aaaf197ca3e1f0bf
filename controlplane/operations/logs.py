"""`berth logs`: a task's (or a service's tasks') container output.

A running task's output is read live from its agent (`controlplane.logs`
says how and why over the agent's own stream); a stopped task's containers
are gone, so what is left is the last lines its agent kept when it stopped
(`Task.kept_output`), sent as one chunk marked `kept`. For a service, the
stopped tasks still on record come first (their kept lines: often why a
deployment failed), then every running task's live output, merged as it
arrives; a task whose node cannot be read says so in its own chunk and the
others go on. With `follow`, a service's stream follows the tasks running
when it was opened (not ones started later) and ends when they all have.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator

from berth.errors import BerthError, FailedPrecondition, InvalidArgument
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import operator_pb2 as api
from berth.v1 import resources_pb2 as pb
from controlplane.logs import READER_CHUNKS, LogReader, LogRouter
from controlplane.operations.tasks import Tasks

# `--tail` per task; beyond it, ask for all of it (0).
MAX_TAIL = 100_000
# Live streams one `--service` request may open at once.
MAX_SERVICE_STREAMS = 200
_CONTAINER = re.compile(r"[A-Za-z0-9_-]{1,255}")
# google.protobuf.Timestamp's range: 0001-01-01 to 9999-12-31.
_MIN_SECONDS, _MAX_SECONDS = -62_135_596_800, 253_402_300_799


def check_request(request: api.StreamLogsRequest) -> None:
    if bool(request.task) == bool(request.service):
        raise InvalidArgument("give a task id or a service, not both and not neither")
    if request.container and not _CONTAINER.fullmatch(request.container):
        raise InvalidArgument("container must be a container name of the task definition")
    if request.tail > MAX_TAIL:
        raise InvalidArgument(f"tail {request.tail} is too large: use at most {MAX_TAIL} (or 0 for all)")
    if request.HasField("since") and not (
        _MIN_SECONDS <= request.since.seconds <= _MAX_SECONDS and 0 <= request.since.nanos <= 999_999_999
    ):
        raise InvalidArgument("since is not a valid time")


def kept_chunk(task: pb.Task, request: api.StreamLogsRequest) -> pb.LogChunk:
    """A stopped task's kept lines as one chunk, `tail` and `since` applied (pure)."""
    chunk = pb.LogChunk(task_id=task.id, container=task.kept_output.container, kept=True, end=True)
    lines = list(task.kept_output.lines)
    stopped = (task.stopped_at.seconds, task.stopped_at.nanos)
    if request.HasField("since") and stopped < (request.since.seconds, request.since.nanos):
        lines = []  # all of it was written before the task stopped, so before `since`
    if request.tail:
        lines = lines[-request.tail :]
    chunk.lines.extend(lines)
    return chunk


class Logs:
    def __init__(self, tasks: Tasks, router: LogRouter) -> None:
        self._tasks = tasks
        self.router = router

    async def stream(self, request: api.StreamLogsRequest) -> AsyncIterator[pb.LogChunk]:
        """The chunks to send, in order; errors about the request come before the first chunk."""
        check_request(request)
        if request.task:
            task, _ = await self._tasks.find(request.cluster, request.task)
            if task.last_status == pb.STOPPED:
                yield kept_chunk(task, request)
                return
            if not task.node_id:
                raise FailedPrecondition(f"task {task.id} is not placed on a node yet, so it has no output")
            readers = [self.router.open(task.node_id, self._agent_request(task, request))]
            async for chunk in self._merge(readers):
                yield chunk
            return
        tasks = await self._tasks.all(request.cluster, request.service, include_stopped=True)
        for task in tasks:
            if task.last_status == pb.STOPPED and task.kept_output.lines:
                chunk = kept_chunk(task, request)
                if chunk.lines:
                    yield chunk
        live = [t for t in tasks if t.last_status != pb.STOPPED and t.node_id][:MAX_SERVICE_STREAMS]
        readers = []
        try:
            for task in live:
                try:
                    readers.append(self.router.open(task.node_id, self._agent_request(task, request)))
                except BerthError as error:
                    yield pb.LogChunk(task_id=task.id, error=str(error), end=True)
            async for chunk in self._merge(readers):
                yield chunk
        finally:
            for reader in readers:
                self.router.close(reader)

    @staticmethod
    def _agent_request(task: pb.Task, request: api.StreamLogsRequest) -> agent_pb.LogRequest:
        sent = agent_pb.LogRequest(
            task_id=task.id, container=request.container, follow=request.follow, tail=request.tail
        )
        if request.HasField("since"):
            sent.since.CopyFrom(request.since)
        return sent

    async def _merge(self, readers: list[LogReader]) -> AsyncIterator[pb.LogChunk]:
        """The readers' chunks as they come; a slow consumer backs up into the readers' bounded queues."""
        merged: asyncio.Queue[pb.LogChunk | None] = asyncio.Queue()
        room = asyncio.Semaphore(READER_CHUNKS)  # chunks merged but not yet taken

        async def pump(reader: LogReader) -> None:
            async for chunk in reader.chunks():
                chunk.request_id, chunk.task_id = "", reader.task_id
                await room.acquire()
                merged.put_nowait(chunk)

        pumps = [asyncio.create_task(pump(reader)) for reader in readers]
        waiting = len(pumps)
        for running in pumps:
            running.add_done_callback(lambda _: merged.put_nowait(None))
        try:
            while waiting:
                chunk = await merged.get()
                if chunk is None:
                    waiting -= 1
                else:
                    room.release()
                    yield chunk
        finally:
            for running in pumps:
                running.cancel()
            for running in pumps:
                with contextlib.suppress(asyncio.CancelledError):
                    await running
            for reader in readers:
                self.router.close(reader)
