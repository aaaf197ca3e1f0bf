"""An in-memory task driver: containers that start instantly, exit and change health on script.

Used by unit tests of the supervisor and by hollow agents (`berth-hollow-agents`),
which run hundreds of simulated hosts in one process to load the control
plane the way a big cluster would, with no container engine at all. Those
hosts share one FakeDriver, so tasks and change feeds are kept per node: an
exit wakes only the supervisor of the node that ran the task.

Containers whose definition has a healthCheck start "starting", turn healthy
after `healthy_after` seconds and, with `unhealthy_after`, unhealthy that
many seconds after their start; `set_health` scripts any change.

Every container "writes" one line when it starts (`started_line`), and
`write` scripts more; `container_logs` reads them back like the engine's
log (`--tail`, `--follow` until the container exits; `since` is ignored).

`exec` knows three commands: `echo ARGS...` (prints them), `cat` (copies
stdin to stdout until it ends) and `exit N`; anything else exits 127 with
a line on stderr, as a shell would.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import replace

from agent.runtime.driver import (
    ChangeFeeds,
    ContainerHealth,
    ContainerPhase,
    ExecSpec,
    LogQuery,
    ObservedContainer,
    ObservedTask,
    StartFailed,
)
from berth.errors import Unavailable
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb

_container_ids = itertools.count(1)


class FakeDriver:
    def __init__(
        self,
        exit_after: float | None = None,
        exit_code: int = 0,
        fail_images: frozenset[str] = frozenset(),
        first_host_port: int = 40000,
        healthy_after: float = 0.0,
        unhealthy_after: float | None = None,
    ) -> None:
        """exit_after: seconds after which every started task exits with exit_code.

        healthy_after, unhealthy_after: seconds after its start at which a
        container with a health check turns healthy, and unhealthy (None: never).
        """
        self._exit_after = exit_after
        self._healthy_after = healthy_after
        self._unhealthy_after = unhealthy_after
        self._exit_code = exit_code
        self._fail_images = fail_images
        self._ports = itertools.count(first_host_port)
        self._tasks: dict[str, dict[str, ObservedTask]] = {}  # node -> task id -> task
        # node -> the queues of its open change feeds (a feed lives while its reader iterates).
        self._feeds = ChangeFeeds()
        self.started: list[str] = []
        # runtime id -> the lines its container wrote, and a wake-up for followers.
        self._output: dict[str, list[str]] = {}
        self._written: dict[str, asyncio.Event] = {}
        self.execs: list[ExecSpec] = []

    async def list_tasks(self, node_id: str) -> dict[str, ObservedTask]:
        return dict(self._tasks.get(node_id, {}))

    def _owner(self, task_id: str) -> str | None:
        for node_id, tasks in self._tasks.items():
            if task_id in tasks:
                return node_id
        return None

    def _changed(self, node_id: str, task_id: str) -> None:
        self._feeds.publish(node_id, task_id)

    async def start_task(self, assignment: agent_pb.TaskAssignment, node_id: str) -> None:
        containers = []
        for definition in assignment.task_definition.container_definitions:
            if definition.image in self._fail_images:
                raise StartFailed(f"CannotPullContainerError: {definition.image}: not found")
            bindings = tuple(
                pb.NetworkBinding(
                    container_name=definition.name,
                    container_port=p.container_port,
                    host_port=p.host_port or next(self._ports),
                    protocol=p.protocol,
                    bind_ip="0.0.0.0",
                )
                for p in definition.port_mappings
            )
            containers.append(
                ObservedContainer(
                    definition.name,
                    f"fake-{next(_container_ids)}",
                    ContainerPhase.RUNNING,
                    definition.essential,
                    definition.stop_timeout or 30,
                    bindings=bindings,
                    health=(
                        ContainerHealth.STARTING
                        if definition.HasField("health_check")
                        else ContainerHealth.NONE
                    ),
                    started_at=time.time(),
                )
            )
        self._tasks.setdefault(node_id, {})[assignment.task_id] = ObservedTask(
            assignment.task_id, tuple(containers)
        )
        for container in containers:
            self._output[container.runtime_id] = [started_line(container.name, assignment.task_id)]
            self._written[container.runtime_id] = asyncio.Event()
        self.started.append(assignment.task_id)
        loop = asyncio.get_running_loop()
        if self._exit_after is not None:
            loop.call_later(self._exit_after, self.exit_task, assignment.task_id, self._exit_code)
        if any(c.health is ContainerHealth.STARTING for c in containers):
            loop.call_later(self._healthy_after, self.set_health, assignment.task_id, ContainerHealth.HEALTHY)
            if self._unhealthy_after is not None:
                loop.call_later(
                    self._unhealthy_after, self.set_health, assignment.task_id, ContainerHealth.UNHEALTHY
                )

    def set_health(self, task_id: str, health: ContainerHealth, container: str = "") -> None:
        """Script a health change of the task's running containers that have a check (or of one)."""
        node_id = self._owner(task_id)
        if node_id is None:
            return
        tasks = self._tasks[node_id]
        tasks[task_id] = ObservedTask(
            task_id,
            tuple(
                replace(c, health=health)
                if c.phase is ContainerPhase.RUNNING
                and c.health is not ContainerHealth.NONE
                and container in ("", c.name)
                else c
                for c in tasks[task_id].containers
            ),
        )
        self._changed(node_id, task_id)

    def exit_task(
        self, task_id: str, exit_code: int, container: str = "", ran_for: float | None = None
    ) -> None:
        """Script an exit, as if the task's processes (or one container's) ended by themselves;
        ran_for: seconds they ran since their last (re)start (default: as long as they did)."""
        now = time.time()
        node_id = self._owner(task_id)
        if node_id is None:
            return
        tasks = self._tasks[node_id]
        task = tasks[task_id]
        tasks[task_id] = ObservedTask(
            task_id,
            tuple(
                replace(
                    c,
                    phase=ContainerPhase.EXITED,
                    exit_code=exit_code,
                    bindings=(),
                    started_at=c.started_at if ran_for is None else now - ran_for,
                    finished_at=now,
                )
                if c.phase is ContainerPhase.RUNNING and container in ("", c.name)
                else c
                for c in task.containers
            ),
        )
        for c in task.containers:
            self._wake_readers(c.runtime_id)
        self._changed(node_id, task_id)

    async def restart_container(self, task_id: str, runtime_id: str) -> None:
        """Start an exited container again, in place (its restart counted)."""
        node_id = self._owner(task_id)
        if node_id is None:
            raise Unavailable(f"no such task: {task_id}")
        tasks = self._tasks[node_id]
        tasks[task_id] = ObservedTask(
            task_id,
            tuple(
                replace(
                    c,
                    phase=ContainerPhase.RUNNING,
                    exit_code=None,
                    reason="",
                    started_at=time.time(),
                    finished_at=0.0,
                    restart_count=c.restart_count + 1,
                )
                if c.runtime_id == runtime_id and c.phase is ContainerPhase.EXITED
                else c
                for c in tasks[task_id].containers
            ),
        )
        self._changed(node_id, task_id)

    async def stop_task(self, task_id: str, timeout: int) -> None:
        self.exit_task(task_id, 143)

    async def remove_task(self, task_id: str, timeout: int = 30) -> None:
        node_id = self._owner(task_id)
        if node_id is not None:
            for c in self._tasks[node_id].pop(task_id).containers:
                self._output.pop(c.runtime_id, None)
                self._wake_readers(c.runtime_id)
                self._written.pop(c.runtime_id, None)
            self._changed(node_id, task_id)

    # -- output ----------------------------------------------------------------

    def _container(self, runtime_id: str) -> ObservedContainer | None:
        for tasks in self._tasks.values():
            for task in tasks.values():
                for c in task.containers:
                    if c.runtime_id == runtime_id:
                        return c
        return None

    def _wake_readers(self, runtime_id: str) -> None:
        written = self._written.get(runtime_id)
        if written is not None:
            written.set()

    def write(self, task_id: str, line: str, container: str = "") -> None:
        """Script output: every container of the task (or the one named) writes a line."""
        node_id = self._owner(task_id)
        if node_id is None:
            return
        for c in self._tasks[node_id][task_id].containers:
            if container in ("", c.name) and c.runtime_id in self._output:
                self._output[c.runtime_id].append(line)
                self._wake_readers(c.runtime_id)

    async def container_logs(self, runtime_id: str, query: LogQuery) -> AsyncIterator[list[str]]:
        if runtime_id not in self._output:
            raise Unavailable(f"no such container: {runtime_id}")
        lines = self._output[runtime_id]
        start = max(0, len(lines) - query.tail) if query.tail else 0
        if lines[start:]:
            yield list(lines[start:])
        read = len(lines)
        while query.follow:
            container = self._container(runtime_id)
            if container is None or container.phase is not ContainerPhase.RUNNING:
                return
            written = self._written[runtime_id]
            written.clear()
            await written.wait()
            lines = self._output.get(runtime_id, [])
            if lines[read:]:
                yield list(lines[read:])
            read = len(lines)

    async def exec(self, runtime_id: str, spec: ExecSpec) -> FakeExec:
        container = self._container(runtime_id)
        if container is None or container.phase is not ContainerPhase.RUNNING:
            raise Unavailable(f"container {runtime_id} is not running")
        self.execs.append(spec)
        return FakeExec(spec)

    async def changes(self, node_id: str) -> AsyncIterator[str]:
        async for task_id in self._feeds.follow(node_id):
            yield task_id

    async def close(self) -> None:
        return None


class FakeExec:
    """A command of the fake driver's (see the module docstring)."""

    def __init__(self, spec: ExecSpec) -> None:
        self.spec = spec
        self.sizes: list[tuple[int, int]] = []
        self.closed = False
        self._stdin: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._code = 0

    async def output(self) -> AsyncIterator[tuple[str, bytes]]:
        program, *args = self.spec.command
        if program == "echo":
            yield "stdout", (" ".join(args) + "\n").encode()
        elif program == "cat":
            while (data := await self._stdin.get()) is not None:
                yield "stdout", data
        elif program == "exit" and len(args) == 1 and args[0].isdigit():
            self._code = int(args[0]) % 256
        else:
            yield ("stdout" if self.spec.tty else "stderr"), f"{program}: not found\n".encode()
            self._code = 127

    async def write(self, data: bytes) -> None:
        if self.spec.stdin:
            self._stdin.put_nowait(data)

    async def close_stdin(self) -> None:
        self._stdin.put_nowait(None)

    async def resize(self, rows: int, columns: int) -> None:
        self.sizes.append((rows, columns))

    async def exit_code(self) -> int:
        return self._code

    async def close(self) -> None:
        self.closed = True
        self._stdin.put_nowait(None)


def started_line(container: str, task_id: str) -> str:
    """What every fake container writes when it starts."""
    return f"hollow container {container} of task {task_id} started (no real output)"
