"""The task driver interface: what the agent needs from a container runtime.

A driver starts, stops, removes and lists the containers of tasks, and says
when any of them changed. Everything it reports is rebuilt from the runtime
itself (labels on the containers), so an agent restarted with no memory
adopts exactly what is running.

The contract is per node: one driver may serve several nodes (hollow agents
share one FakeDriver; test labs may share one engine), so both the listing
and the change feed take the node id, and each node only ever sees, and is
only ever woken by, its own tasks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb

# Labels on every container Berth starts.
LABEL_MANAGED = "berth.managed"
LABEL_TASK_ID = "berth.task-id"
LABEL_CONTAINER = "berth.container-name"
LABEL_ESSENTIAL = "berth.essential"
LABEL_STOP_TIMEOUT = "berth.stop-timeout"
LABEL_CLUSTER = "berth.cluster"
LABEL_SERVICE = "berth.service"
LABEL_TASK_DEFINITION = "berth.task-definition"
LABEL_NODE = "berth.node-id"
# Host network mode only: the ports the container serves on the host itself ("80/tcp,53/udp"),
# which Docker does not list as published.
LABEL_HOST_PORTS = "berth.host-ports"
# The container's place in its task's start order (dependsOn): containers stop in reverse.
LABEL_START_ORDER = "berth.start-order"

DEFAULT_STOP_TIMEOUT = 30


class ContainerPhase(Enum):
    CREATED = "created"  # exists, never started (a start was interrupted)
    RUNNING = "running"
    EXITED = "exited"


class ContainerHealth(Enum):
    """The engine's health of a container; NONE when it has no health check."""

    NONE = "none"
    STARTING = "starting"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


@dataclass(frozen=True)
class ObservedContainer:
    name: str
    runtime_id: str
    phase: ContainerPhase
    essential: bool
    stop_timeout: int = DEFAULT_STOP_TIMEOUT
    exit_code: int | None = None
    # Why it ended, when the runtime knows ("OOMKilled", an error message).
    reason: str = ""
    bindings: tuple[pb.NetworkBinding, ...] = ()
    health: ContainerHealth = ContainerHealth.NONE
    # While unhealthy: what the last failed check said ("exit 1: ..."), when the runtime tells.
    health_output: str = ""
    # Unix times of its last (re)start and, once exited, of its exit (0: unknown), and how often
    # the agent restarted it in place (its restartPolicy; agent/ordering.py).
    started_at: float = 0.0
    finished_at: float = 0.0
    restart_count: int = 0


@dataclass(frozen=True)
class ObservedTask:
    task_id: str
    containers: tuple[ObservedContainer, ...] = field(default_factory=tuple)

    @property
    def any_running(self) -> bool:
        return any(c.phase is ContainerPhase.RUNNING for c in self.containers)

    @property
    def stop_timeout(self) -> int:
        return max((c.stop_timeout for c in self.containers), default=DEFAULT_STOP_TIMEOUT)


@dataclass(frozen=True)
class LogQuery:
    """Which of a container's output to read."""

    follow: bool = False
    # Only output written at or after this Unix time (None: all).
    since: float | None = None
    # Only the last `tail` lines (0: all).
    tail: int = 0


@dataclass(frozen=True)
class ExecSpec:
    """A command to run in a running container (`berth exec`)."""

    command: tuple[str, ...]
    # Allocate a terminal: output then arrives as "stdout" only, stderr merged into it.
    tty: bool = False
    # Keep the command's stdin open for `ExecProcess.write`.
    stdin: bool = False
    rows: int = 0
    columns: int = 0


class ExecProcess(Protocol):
    """A command running in a container; every method is safe to call after it ended."""

    def output(self) -> AsyncIterator[tuple[str, bytes]]:
        """("stdout" or "stderr", at most berth.execlimits.MAX_CHUNK bytes) as written, until
        the command's output ends; raises Unavailable when it cannot be read."""

    async def write(self, data: bytes) -> None:
        """Bytes for the command's stdin (dropped once stdin is closed)."""

    async def close_stdin(self) -> None:
        """The command reads end of file."""

    async def resize(self, rows: int, columns: int) -> None:
        """The terminal's new size (with a tty; ignored without)."""

    async def exit_code(self) -> int:
        """Once the output ended: the command's exit code; raises Unavailable when unknown."""

    async def close(self) -> None:
        """Stop relaying (the caller went away); idempotent."""


class StartFailed(Exception):
    """The task could not be started; the message is the ECS-style stopped reason."""


class TaskDriver(Protocol):
    async def list_tasks(self, node_id: str) -> dict[str, ObservedTask]:
        """Every task of this node with a container in the runtime, running or not.

        Filtering by node matters: several agents may share one engine (test
        labs, hollow agents), and each must only ever touch its own.
        """

    async def start_task(self, assignment: agent_pb.TaskAssignment, node_id: str) -> None:
        """Create and start all containers of the task, or raise StartFailed (and leave none
        of them, nor its task volumes; a cancelled start leaves none either).

        Each container starts as soon as its dependsOn conditions are met (agent/ordering.py),
        those without any at once; waiting never blocks the event loop or other tasks' starts."""

    async def stop_task(self, task_id: str, timeout: int) -> None:
        """SIGTERM every running container, SIGKILL after `timeout` seconds (dependents first)."""

    async def remove_task(self, task_id: str, timeout: int) -> None:
        """Remove the task's containers (stopping them first if needed)."""

    async def restart_container(self, task_id: str, runtime_id: str) -> None:
        """Start one exited container of the task again, in place (same container); raises
        Unavailable when it cannot."""

    def container_logs(self, runtime_id: str, query: LogQuery) -> AsyncIterator[list[str]]:
        """One container's output as whole lines (`berth.loglines`: decoded, cut), stdout and
        stderr merged as the runtime keeps them, a batch at a time; with `follow`, until the
        container stops or the caller stops iterating. Raises Unavailable when it cannot be read
        (the container is gone). Blocking reads never run on the event loop.
        """

    async def exec(self, runtime_id: str, spec: ExecSpec) -> ExecProcess:
        """Start a command in a running container; raises Unavailable when it cannot be started.
        Blocking calls never run on the event loop."""

    def changes(self, node_id: str) -> AsyncIterator[str]:
        """Yields the id of one of this node's tasks each time a container of it starts, dies,
        goes away or changes health.

        An empty string means "events may have been missed" (the feed was just
        opened, or reconnected): the subscriber should look at everything again.
        Changes of other nodes' tasks are never yielded.
        """

    async def close(self) -> None: ...


class ChangeFeeds:
    """The open `changes(node_id)` feeds of a driver, by node.

    A driver publishes a task id to its node's feeds when one of the task's
    containers changes, or "" to every feed when it may have missed changes
    (each reader then looks at everything again). Used on the event loop only.
    """

    def __init__(self) -> None:
        self._feeds: dict[str, set[asyncio.Queue[str]]] = {}

    def nodes(self) -> list[str]:
        return list(self._feeds)

    def publish(self, node_id: str, task_id: str) -> None:
        for feed in self._feeds.get(node_id, ()):
            feed.put_nowait(task_id)

    def publish_all(self, task_id: str = "") -> None:
        for node_id in self.nodes():
            self.publish(node_id, task_id)

    async def follow(self, node_id: str) -> AsyncIterator[str]:
        """One feed of the node's changes, open until the caller stops iterating."""
        feed: asyncio.Queue[str] = asyncio.Queue()
        self._feeds.setdefault(node_id, set()).add(feed)
        try:
            yield ""  # whatever changed before the feed opened was not seen
            while True:
                yield await feed.get()
        finally:
            self._feeds[node_id].discard(feed)
            if not self._feeds[node_id]:
                del self._feeds[node_id]
