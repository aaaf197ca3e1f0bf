"""The Docker driver's thin I/O against a fake engine client and a fake event stream.

The real engine is exercised by the integration and end-to-end suites; these
tests pin the wiring: events read on their own thread reach the loop, wake
only their node's feed and beat the lagging list; our own start is believed
until the list catches up; an exited container is inspected once.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import AsyncIterator, Iterator
from typing import Any

import docker.errors
import pytest

from agent.runtime.docker_driver import DockerDriver
from agent.runtime.docker_spec import container_specs
from agent.runtime.driver import ContainerPhase, LogQuery
from berth.errors import Unavailable
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb


class FakeEvents:
    """An event source fed by the test; iterated by the driver's event thread."""

    def __init__(self) -> None:
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.filters: dict[str, list[str]] = {}

    def __call__(self, base_url: str, filters: dict[str, list[str]]) -> FakeEvents:
        self.filters = filters
        return self

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while (event := self._queue.get()) is not None:
            yield event

    def close(self) -> None:
        self._queue.put(None)

    def push(self, action: str, container_id: str, task_id: str, node_id: str, **attributes: str) -> None:
        labels = {"berth.task-id": task_id, "berth.node-id": node_id, **attributes}
        self._queue.put({"Action": action, "id": container_id, "Actor": {"Attributes": labels}})


class FakeContainer:
    def __init__(self, engine: FakeEngine, container_id: str, kwargs: dict[str, Any]) -> None:
        self.id = container_id
        self.kwargs = kwargs
        self.attrs: dict[str, Any] = {}
        self._engine = engine

    def start(self) -> None:
        """Inspect's view once started: running, or exited already (`FakeEngine.dies_at_once`)."""
        code = self._engine.dies_at_once.get(self.id)
        state: dict[str, Any] = {"Running": True, "StartedAt": "2026-11-27T05:00:00Z"}
        if code is not None:
            state = {**state, "Running": False, "ExitCode": code, "FinishedAt": "2026-11-27T05:00:00.1Z"}
        self.attrs = {
            "State": state,
            "NetworkSettings": {"Ports": {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "32768"}]}},
        }

    def reload(self) -> None:
        pass

    def remove(self, force: bool = False) -> None:
        self._engine.removed.append(self.id)


class FakeEngine:
    """What the engine holds; `rows` is what its (lagging) container list says."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.states: dict[str, dict[str, Any]] = {}
        self.inspected: list[str] = []
        self.created: list[FakeContainer] = []
        self.removed: list[str] = []
        # Container id -> the exit code it dies with as soon as it is started.
        self.dies_at_once: dict[str, int] = {}
        # Container id -> its output stream, and the arguments each logs call had.
        self.outputs: dict[str, FakeLogStream] = {}
        self.log_calls: list[dict[str, Any]] = []

    def row(self, container_id: str, task_id: str, node_id: str, state: str) -> None:
        labels = {"berth.task-id": task_id, "berth.node-id": node_id, "berth.container-name": "web"}
        self.rows = [r for r in self.rows if r["Id"] != container_id]
        self.rows.append({"Id": container_id, "State": state, "Labels": labels, "Ports": []})


class FakeLogStream:
    """A container's output as the SDK streams it: byte frames split anywhere; fed by the test."""

    def __init__(self, *frames: bytes, ends: bool = True) -> None:
        self._queue: queue.Queue[bytes | None] = queue.Queue()
        for frame in frames:
            self._queue.put(frame)
        if ends:
            self._queue.put(None)
        self.closed = False

    def push(self, frame: bytes) -> None:
        self._queue.put(frame)

    def __iter__(self) -> Iterator[bytes]:
        while (frame := self._queue.get()) is not None:
            yield frame

    def close(self) -> None:
        self.closed = True
        self._queue.put(None)


class FakeApi:
    """docker's low-level APIClient: list and inspect."""

    def __init__(self, engine: FakeEngine) -> None:
        self._engine = engine

    def containers(self, all: bool, filters: dict[str, list[str]]) -> list[dict[str, Any]]:
        wanted = {f for f in filters["label"] if f.startswith("berth.node-id=")}
        return [r for r in self._engine.rows if f"berth.node-id={r['Labels']['berth.node-id']}" in wanted]

    def logs(self, container_id: str, **options: Any) -> FakeLogStream:
        self._engine.log_calls.append({"container": container_id, **options})
        if container_id not in self._engine.outputs:
            raise docker.errors.NotFound(f"No such container: {container_id}")
        return self._engine.outputs[container_id]

    def inspect_container(self, container_id: str) -> dict[str, Any]:
        self._engine.inspected.append(container_id)
        if container_id not in self._engine.states:
            raise docker.errors.NotFound(f"No such container: {container_id}")  # as the engine says
        return {"State": self._engine.states[container_id]}


class FakeImages:
    def get(self, image: str) -> None:
        return None


class FakeContainers:
    def __init__(self, engine: FakeEngine) -> None:
        self._engine = engine

    def create(self, image: str, **kwargs: Any) -> FakeContainer:
        container = FakeContainer(self._engine, f"c{len(self._engine.created) + 1}", kwargs)
        self._engine.created.append(container)
        return container


class FakeClient:
    """The parts of docker.DockerClient the driver uses."""

    def __init__(self, engine: FakeEngine) -> None:
        self.api = FakeApi(engine)
        self.images = FakeImages()
        self.containers = FakeContainers(engine)

    def close(self) -> None:
        pass


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
async def driver(engine: FakeEngine) -> AsyncIterator[tuple[DockerDriver, FakeEvents]]:
    events = FakeEvents()
    client: Any = FakeClient(engine)
    docker_driver = DockerDriver("unix:///fake.sock", client=client, open_events=events)
    yield docker_driver, events
    await docker_driver.close()


async def next_task_id(feed: AsyncIterator[str], within: float = 1.0) -> str:
    """The next task id the feed yields, skipping resync markers."""
    while True:
        task_id = await asyncio.wait_for(anext(feed), within)
        if task_id:
            return task_id


async def test_a_die_event_wakes_only_its_node_and_beats_the_lagging_list(
    driver: tuple[DockerDriver, FakeEvents], engine: FakeEngine
) -> None:
    docker_driver, events = driver
    engine.row("c1", "t1", "n1", "running")
    engine.row("c2", "t2", "n2", "running")
    feed_a, feed_b = docker_driver.changes("n1"), docker_driver.changes("n2")
    assert await anext(feed_a) == "" and await anext(feed_b) == ""

    events.push("oom", "c1", "t1", "n1")
    events.push("die", "c1", "t1", "n1", exitCode="137")

    assert await next_task_id(feed_a) == "t1"
    with pytest.raises(TimeoutError):
        await next_task_id(feed_b, within=0.1)
    (c1,) = (await docker_driver.list_tasks("n1"))["t1"].containers  # the list still says running
    assert (c1.phase, c1.exit_code, c1.reason) == (ContainerPhase.EXITED, 137, "OOMKilled")
    (c2,) = (await docker_driver.list_tasks("n2"))["t2"].containers
    assert c2.phase is ContainerPhase.RUNNING
    assert events.filters == {"type": ["container"], "label": ["berth.managed=true"]}


async def test_an_exited_container_is_inspected_once(
    driver: tuple[DockerDriver, FakeEvents], engine: FakeEngine
) -> None:
    docker_driver, _ = driver
    engine.row("c1", "t1", "n1", "exited")
    engine.states["c1"] = {"ExitCode": 3, "Error": "", "OOMKilled": False}
    for _ in range(3):
        (c1,) = (await docker_driver.list_tasks("n1"))["t1"].containers
        assert (c1.phase, c1.exit_code) == (ContainerPhase.EXITED, 3)
    assert engine.inspected == ["c1"]


async def test_our_start_is_believed_until_the_list_catches_up(
    driver: tuple[DockerDriver, FakeEvents], engine: FakeEngine
) -> None:
    docker_driver, _ = driver
    definition = pb.ContainerDefinition(
        name="web", image="web:1", essential=True, port_mappings=[pb.PortMapping(container_port=80)]
    )
    assignment = agent_pb.TaskAssignment(
        task_id="t1",
        task_definition=pb.TaskDefinition(family="web", revision=1, container_definitions=[definition]),
    )
    await docker_driver.start_task(assignment, "n1")
    await asyncio.sleep(0)  # the start is handed to the loop with call_soon_threadsafe
    (created,) = engine.created
    (spec,) = container_specs(assignment, "n1")
    assert created.kwargs == spec.create_kwargs()

    engine.row(created.id, "t1", "n1", "created")  # the list lags our start
    (c1,) = (await docker_driver.list_tasks("n1"))["t1"].containers
    assert c1.phase is ContainerPhase.RUNNING
    assert [(b.container_port, b.host_port) for b in c1.bindings] == [(80, 32768)]


async def test_output_is_read_off_the_loop_as_whole_lines(
    driver: tuple[DockerDriver, FakeEvents], engine: FakeEngine
) -> None:
    docker_driver, _ = driver
    engine.outputs["c1"] = FakeLogStream(b"one\ntw", b"o\n\xc3", b"\xa9\nno newline")
    batches = [b async for b in docker_driver.container_logs("c1", LogQuery(tail=0, since=12.5))]
    assert [line for batch in batches for line in batch] == ["one", "two", "\u00e9", "no newline"]
    (call,) = engine.log_calls
    assert call == {
        "container": "c1", "stdout": True, "stderr": True, "stream": True, "follow": False,
        "since": 12.5, "tail": "all",
    }  # fmt: skip


async def test_a_follower_that_goes_away_closes_the_engine_stream(
    driver: tuple[DockerDriver, FakeEvents], engine: FakeEngine
) -> None:
    docker_driver, _ = driver
    stream = engine.outputs["c1"] = FakeLogStream(b"first\n", ends=False)
    follower: Any = docker_driver.container_logs("c1", LogQuery(follow=True, tail=5))  # an async generator
    assert await asyncio.wait_for(anext(follower), 2) == ["first"]
    stream.push(b"second\n")
    assert await asyncio.wait_for(anext(follower), 2) == ["second"]
    await follower.aclose()  # the reader is gone
    assert stream.closed
    assert engine.log_calls[0]["tail"] == 5 and engine.log_calls[0]["follow"] is True


async def test_output_of_a_gone_container_is_unavailable(driver: tuple[DockerDriver, FakeEvents]) -> None:
    docker_driver, _ = driver
    with pytest.raises(Unavailable, match="is gone"):
        async for _ in docker_driver.container_logs("missing", LogQuery()):
            pass
