"""`berth exec`: run a command in a running task's container, its output streamed back.

The caller's first message says what to run (ExecStart: task, container,
command, terminal); it is checked here, the task found and required to be
RUNNING, and the command started through the node's agent
(`controlplane.execs`). The caller's later messages (stdin, its end, window
sizes) are checked one by one and relayed; a bad one ends the command with
an error saying why. When the caller closes its side, stdin ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator

from berth import execlimits
from berth.errors import FailedPrecondition, InvalidArgument
from berth.v1 import resources_pb2 as pb
from controlplane.execs import ExecRelay, ExecRouter
from controlplane.operations.tasks import Tasks

_CONTAINER = re.compile(r"[A-Za-z0-9_-]{1,255}")


def check_start(first: pb.ExecInput | None) -> pb.ExecStart:
    """The start message's checked content (pure); InvalidArgument says what to fix."""
    if first is None or not first.HasField("start"):
        raise InvalidArgument("the first message of an exec must be `start`: what to run where")
    start = first.start
    if start.request_id:
        raise InvalidArgument("request_id is the control plane's to set: leave it empty")
    if start.container and not _CONTAINER.fullmatch(start.container):
        raise InvalidArgument("container must be a container name of the task definition")
    problem = execlimits.command_problem(list(start.command))
    if problem:
        raise InvalidArgument(problem)
    if start.HasField("size"):
        problem = execlimits.terminal_problem(start.size.rows, start.size.columns)
        if problem:
            raise InvalidArgument(problem)
    return start


def input_problem(message: pb.ExecInput, stdin_open: bool) -> str:
    """Why a later message cannot be relayed (pure), or "" when it can."""
    body = message.WhichOneof("body")
    if body == "stdin":
        if not stdin_open:
            return "stdin was not opened for this command (ask for it with stdin or tty at the start)"
        if len(message.stdin) > execlimits.MAX_CHUNK:
            return f"a stdin message holds {len(message.stdin)} bytes: at most {execlimits.MAX_CHUNK}"
        return ""
    if body == "stdin_end":
        return ""
    if body == "resize":
        return execlimits.terminal_problem(message.resize.rows, message.resize.columns)
    return f"after `start`, send stdin, stdin_end or resize (not {body or 'an empty message'})"


class Execs:
    def __init__(self, tasks: Tasks, router: ExecRouter) -> None:
        self._tasks = tasks
        self.router = router

    async def run(self, inputs: AsyncIterator[pb.ExecInput]) -> AsyncIterator[pb.ExecOutput]:
        """The outputs to send, `exit` last; errors about the start come before the first."""
        start = check_start(await anext(inputs, None))
        task, _ = await self._tasks.find(start.cluster, start.task)
        if task.last_status != pb.RUNNING:
            raise FailedPrecondition(
                f"task {task.id} is {pb.TaskStatus.Name(task.last_status)}: exec needs a RUNNING task"
            )
        if not task.node_id:
            raise FailedPrecondition(f"task {task.id} is not placed on a node")
        sent = pb.ExecStart()
        sent.CopyFrom(start)
        sent.task = task.id
        sent.cluster = task.cluster
        relay = self.router.open(task.node_id, sent)
        feeder = asyncio.create_task(self._feed(relay, inputs, start.stdin or start.tty))
        try:
            async for output in relay.outputs():
                output.request_id = ""
                yield output
        finally:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await feeder
            self.router.close(relay)

    async def _feed(self, relay: ExecRelay, inputs: AsyncIterator[pb.ExecInput], stdin_open: bool) -> None:
        """Relay the caller's messages until it closes its side (then stdin ends)."""
        async for message in inputs:
            problem = input_problem(message, stdin_open)
            if problem:
                self.router.fail(relay, problem)
                return
            await self.router.room(relay)
            self.router.send(relay, message)
            if message.HasField("stdin_end"):
                stdin_open = False
        if stdin_open:
            self.router.send(relay, pb.ExecInput(stdin_end=True))
