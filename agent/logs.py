"""The agent's answers to log requests, and the last lines it keeps of a stopped task.

The control plane asks for a task's output down the agent's stream
(LogRequest; see controlplane/logs.py for why there and not on a port of
the agent's own); `LogStreams` reads it through the driver and sends it back
up as LogChunks (the first one at once, empty: "answering"), at most
MAX_STREAMS at a time, until the output ends, the
request is cancelled (LogCancel) or the stream to the control plane goes.
Which container answers is decided here, purely: the one named, or the
task's first essential container (in task definition order).

When a task stops, `kept_output` reads the last lines of the container
that explains the stop (see `kept_container`) before its containers are
removed, so `berth task describe` and `berth logs` can still show why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping

from agent.runtime.driver import ContainerPhase, LogQuery, ObservedContainer, ObservedTask, TaskDriver
from berth import loglines
from berth.errors import Unavailable
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb

log = logging.getLogger(__name__)

MAX_STREAMS = 16
# Seconds a stopped task's last lines may take to read; past it, the report goes without them.
KEPT_READ_TIMEOUT = 5.0

SendChunk = Callable[[pb.LogChunk], Awaitable[None]]


def _in_definition_order(
    observed: ObservedTask, assignment: agent_pb.TaskAssignment | None
) -> list[ObservedContainer]:
    order = (
        {c.name: i for i, c in enumerate(assignment.task_definition.container_definitions)}
        if assignment is not None
        else {}
    )
    return sorted(observed.containers, key=lambda c: (order.get(c.name, len(order)), c.name))


def pick_container(
    observed: ObservedTask | None, assignment: agent_pb.TaskAssignment | None, name: str
) -> ObservedContainer | str:
    """The container whose output a request means, or why there is none (pure)."""
    if observed is None or not observed.containers:
        return "the task has no containers on this host (it has not started, or they were removed)"
    containers = _in_definition_order(observed, assignment)
    if name:
        for c in containers:
            if c.name == name:
                return c
        return f"the task has no container named {name!r} (it has: {', '.join(c.name for c in containers)})"
    essential = [c for c in containers if c.essential]
    return (essential or containers)[0]


# Exit codes of a container stopped by a signal from outside (SIGTERM, SIGKILL): when one
# essential container fails, the agent stops the others with these.
_STOPPED_BY_SIGNAL = (143, 137)


def kept_container(
    observed: ObservedTask | None, assignment: agent_pb.TaskAssignment | None
) -> ObservedContainer | None:
    """Whose last lines to keep when a task stops (pure): the first essential container that
    failed by itself (non-zero, not 143/137: those were stopped), else the first essential one
    that exited non-zero, else the first essential one that exited, else the first one."""
    if observed is None or not observed.containers:
        return None
    containers = _in_definition_order(observed, assignment)
    exited = [c for c in containers if c.essential and c.phase is ContainerPhase.EXITED]
    failed = [c for c in exited if c.exit_code not in (None, 0)]
    by_itself = [c for c in failed if c.exit_code not in _STOPPED_BY_SIGNAL]
    return (by_itself or failed or exited or containers)[0]


async def kept_output(driver: TaskDriver, container: ObservedContainer) -> pb.KeptOutput | None:
    """The container's last lines, bounded as `berth.loglines.keep_last` says; None if unreadable."""
    lines: list[str] = []

    async def read() -> None:
        query = LogQuery(tail=loglines.KEPT_LINES)
        async for batch in driver.container_logs(container.runtime_id, query):
            lines.extend(batch)

    try:
        await asyncio.wait_for(read(), KEPT_READ_TIMEOUT)
    except (Unavailable, TimeoutError) as error:
        log.warning("event=kept_output_unread container=%s error=%r", container.runtime_id[:12], str(error))
        return None
    kept, truncated = loglines.keep_last(lines)
    # The engine's tail was exactly KEPT_LINES: older output may exist.
    truncated = truncated or len(lines) >= loglines.KEPT_LINES
    return pb.KeptOutput(container=container.name, lines=kept, truncated=truncated)


class LogStreams:
    """The log requests being answered on one control-plane stream."""

    def __init__(
        self,
        driver: TaskDriver,
        observed: Callable[[], Mapping[str, ObservedTask]],
        assignment: Callable[[str], agent_pb.TaskAssignment | None],
        send: SendChunk,
    ) -> None:
        self._driver = driver
        self._observed = observed
        self._assignment = assignment
        self._send = send
        self._running: dict[str, asyncio.Task[None]] = {}

    def handle(self, message: agent_pb.ControlMessage) -> None:
        if message.HasField("log_request"):
            self.start(message.log_request)
        elif message.HasField("log_cancel"):
            self.cancel(message.log_cancel.request_id)

    def start(self, request: agent_pb.LogRequest) -> None:
        if request.request_id in self._running:
            return  # idempotent: already answering it
        if len(self._running) >= MAX_STREAMS:
            error = f"this host already streams {MAX_STREAMS} outputs; try again when one ends"
            self._spawn(request.request_id, self._refuse(request, error))
            return
        self._spawn(request.request_id, self._answer(request))

    def cancel(self, request_id: str) -> None:
        running = self._running.get(request_id)
        if running is not None:
            running.cancel()

    async def close(self) -> None:
        """The stream is gone: stop every answer."""
        running = list(self._running.values())
        for task in running:
            task.cancel()
        for task in running:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def active(self) -> int:
        return len(self._running)

    def _spawn(self, request_id: str, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._running[request_id] = task
        task.add_done_callback(lambda _: self._running.pop(request_id, None))

    async def _refuse(self, request: agent_pb.LogRequest, error: str) -> None:
        await self._send(
            pb.LogChunk(request_id=request.request_id, task_id=request.task_id, end=True, error=error)
        )

    async def _answer(self, request: agent_pb.LogRequest) -> None:
        chosen = pick_container(
            self._observed().get(request.task_id), self._assignment(request.task_id), request.container
        )
        if isinstance(chosen, str):
            await self._refuse(request, chosen)
            return
        query = LogQuery(
            follow=request.follow,
            # The engine takes only a positive time; anything earlier means all of it.
            since=(request.since.seconds + request.since.nanos / 1e9) if request.since.seconds > 0 else None,
            tail=request.tail,
        )
        log.info(
            "event=log_stream_started request=%s task=%s container=%s",
            request.request_id,
            request.task_id,
            chosen.name,
        )
        # An empty first chunk says the request is being answered, however quiet the container.
        await self._send(
            pb.LogChunk(request_id=request.request_id, task_id=request.task_id, container=chosen.name)
        )
        error, ended = "", "cancelled"
        try:
            async for batch in self._driver.container_logs(chosen.runtime_id, query):
                for lines in loglines.chunked(loglines.cut_line(line) for line in batch):
                    await self._send(
                        pb.LogChunk(
                            request_id=request.request_id,
                            task_id=request.task_id,
                            container=chosen.name,
                            lines=lines,
                        )
                    )
            ended = "output_ended"
        except Unavailable as failure:
            error, ended = str(failure), "unreadable"
        except Exception:  # a bug here must still end the reader's wait
            log.exception("event=log_stream_crashed request=%s task=%s", request.request_id, request.task_id)
            error, ended = "the agent failed reading the output; see its log", "crashed"
        finally:
            log.info(
                "event=log_stream_ended request=%s task=%s why=%s", request.request_id, request.task_id, ended
            )
        await self._send(
            pb.LogChunk(
                request_id=request.request_id,
                task_id=request.task_id,
                container=chosen.name,
                end=True,
                error=error,
            )
        )
