"""The agent's side of `berth exec`: commands started, fed and relayed for the control plane.

An ExecInput with `start` (a request id, the task, container, command and
terminal) starts the command through the driver, in the container named or
the task's first essential one (`agent.logs.pick_container`), which must be
running; the answer is `started` at once, then the output as it comes, then
`exit` with the command's exit code (or an error saying why there is none).
Later inputs with the same request id carry stdin, its end and window sizes;
`cancel` (the caller went away) stops the relay without an answer. At most
MAX_PER_HOST commands run at once; one more is refused in its `exit`.

The control plane checked the request already; it is checked again here,
since an agent runs what it is told inside its host's containers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from agent.logs import pick_container
from agent.runtime.driver import ContainerPhase, ExecProcess, ExecSpec, ObservedTask, TaskDriver
from berth import execlimits
from berth.errors import Unavailable
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb

log = logging.getLogger(__name__)

MAX_PER_HOST = execlimits.MAX_PER_HOST
# Inputs (stdin, resizes) waiting for one command; the control plane sends at most a few dozen.
INPUT_QUEUE = 256

SendOutput = Callable[[pb.ExecOutput], Awaitable[None]]


@dataclass
class _Running:
    task: asyncio.Task[None]
    inputs: asyncio.Queue[pb.ExecInput] = field(default_factory=lambda: asyncio.Queue(INPUT_QUEUE))


def start_problem(start: pb.ExecStart) -> str:
    """Why the agent will not run this (pure), or "" when it will."""
    problem = execlimits.command_problem(list(start.command))
    if problem:
        return problem
    if start.HasField("size"):
        return execlimits.terminal_problem(start.size.rows, start.size.columns)
    return ""


def _close_when_started(starting: asyncio.Future[ExecProcess]) -> None:
    if not starting.cancelled() and starting.exception() is None:
        closing = asyncio.ensure_future(starting.result().close())
        _closing.add(closing)
        closing.add_done_callback(_closing.discard)


# Closes in flight, kept referenced until done.
_closing: set[asyncio.Future[None]] = set()


class ExecSessions:
    """The commands being run for one control-plane stream."""

    def __init__(
        self,
        driver: TaskDriver,
        observed: Callable[[], Mapping[str, ObservedTask]],
        assignment: Callable[[str], agent_pb.TaskAssignment | None],
        send: SendOutput,
    ) -> None:
        self._driver = driver
        self._observed = observed
        self._assignment = assignment
        self._send = send
        self._running: dict[str, _Running] = {}

    def handle(self, message: agent_pb.ControlMessage) -> None:
        if not message.HasField("exec_input"):
            return
        given = message.exec_input
        body = given.WhichOneof("body")
        if body == "start":
            self._start(given.request_id, given.start)
            return
        running = self._running.get(given.request_id)
        if running is None:
            return
        if body == "cancel":
            running.task.cancel()
        elif running.inputs.full():
            running.task.cancel()
            log.warning("event=exec_input_overflow request=%s", given.request_id)
        else:
            running.inputs.put_nowait(given)

    def active(self) -> int:
        return len(self._running)

    async def close(self) -> None:
        """The stream is gone: stop every relay."""
        running = dict(self._running)
        for each in running.values():
            each.task.cancel()
        for request_id, each in running.items():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await each.task
            self._running.pop(request_id, None)  # its done callback may not have run yet

    def _start(self, request_id: str, start: pb.ExecStart) -> None:
        if request_id in self._running:
            return  # idempotent: already running it
        problem = start_problem(start)
        if not problem and len(self._running) >= MAX_PER_HOST:
            problem = f"this host already runs {MAX_PER_HOST} exec commands; try again when one ends"
        if problem:
            self._spawn(request_id, self._exit(request_id, -1, problem))
            return
        self._spawn(request_id, self._run(request_id, start))

    def _spawn(self, request_id: str, work: Awaitable[None]) -> None:
        running = _Running(asyncio.ensure_future(work))
        self._running[request_id] = running
        running.task.add_done_callback(lambda _: self._running.pop(request_id, None))

    async def _exit(self, request_id: str, code: int, error: str = "") -> None:
        await self._send(pb.ExecOutput(request_id=request_id, exit=pb.ExecExit(code=code, error=error)))

    async def _run(self, request_id: str, start: pb.ExecStart) -> None:
        chosen = pick_container(
            self._observed().get(start.task), self._assignment(start.task), start.container
        )
        if isinstance(chosen, str):
            await self._exit(request_id, -1, chosen)
            return
        if chosen.phase is not ContainerPhase.RUNNING:
            await self._exit(request_id, -1, f"container {chosen.name} of the task is not running")
            return
        spec = ExecSpec(
            command=tuple(start.command),
            tty=start.tty,
            stdin=start.stdin or start.tty,
            rows=start.size.rows,
            columns=start.size.columns,
        )
        starting = asyncio.ensure_future(self._driver.exec(chosen.runtime_id, spec))
        try:
            process = await asyncio.shield(starting)
        except Unavailable as error:
            await self._exit(request_id, -1, str(error))
            return
        except asyncio.CancelledError:
            # Cancelled while the engine starts it: close the command once it has started.
            starting.add_done_callback(_close_when_started)
            raise
        log.info(
            "event=exec_started request=%s task=%s container=%s tty=%s",
            request_id,
            start.task,
            chosen.name,
            spec.tty,
        )
        feeder = asyncio.create_task(self._feed(process, self._running[request_id].inputs))
        outcome = "cancelled"
        try:
            await self._send(pb.ExecOutput(request_id=request_id, started=chosen.name))
            async for stream, data in process.output():
                if stream == "stderr":
                    await self._send(pb.ExecOutput(request_id=request_id, stderr=data))
                else:
                    await self._send(pb.ExecOutput(request_id=request_id, stdout=data))
            code = await process.exit_code()
            outcome = f"exit_{code}"
            await self._exit(request_id, code)
        except Unavailable as error:
            outcome = "unreadable"
            await self._exit(request_id, -1, str(error))
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must still end the caller's wait
            log.exception("event=exec_crashed request=%s task=%s", request_id, start.task)
            outcome = "crashed"
            await self._exit(request_id, -1, "the agent failed running the command; see its log")
        finally:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await feeder
            await process.close()
            log.info("event=exec_ended request=%s task=%s outcome=%s", request_id, start.task, outcome)

    @staticmethod
    async def _feed(process: ExecProcess, inputs: asyncio.Queue[pb.ExecInput]) -> None:
        while True:
            given = await inputs.get()
            body = given.WhichOneof("body")
            if body == "stdin" and len(given.stdin) <= execlimits.MAX_CHUNK:
                await process.write(given.stdin)
            elif body == "stdin_end":
                await process.close_stdin()
            elif body == "resize" and not execlimits.terminal_problem(
                given.resize.rows, given.resize.columns
            ):
                await process.resize(given.resize.rows, given.resize.columns)
