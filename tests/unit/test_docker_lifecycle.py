"""The Docker driver's ordered start, restart in place and ordered stop, against the fake
engine client of test_docker_driver; and the ledger's facts about restarts (pure)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import docker.errors
import pytest

from agent.runtime import docker_lifecycle
from agent.runtime.docker_driver import DockerDriver
from agent.runtime.docker_events import ContainerEvent
from agent.runtime.docker_state import ContainerLedger, ListedContainer, unix_time
from agent.runtime.driver import ContainerHealth, ContainerPhase, ObservedContainer, StartFailed
from berth.errors import Unavailable
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb
from tests.unit.test_docker_driver import FakeApi, FakeClient, FakeEngine, FakeEvents

D = pb.ContainerDependency
T0 = datetime(2026, 11, 27, 5, 0, 0, tzinfo=UTC).timestamp()


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
async def driver(engine: FakeEngine) -> AsyncIterator[DockerDriver]:
    client: Any = FakeClient(engine)
    docker_driver = DockerDriver("unix:///fake.sock", client=client, open_events=FakeEvents())
    yield docker_driver
    await docker_driver.close()


def ordered_task(condition: pb.ContainerDependency.Condition.ValueType, start_timeout: int = 0) -> Any:
    containers = [
        pb.ContainerDefinition(
            name="app",
            image="app:1",
            essential=True,
            start_timeout=start_timeout,
            depends_on=[D(container_name="init", condition=condition)],
        ),
        pb.ContainerDefinition(name="init", image="init:1", essential=False),
    ]
    return agent_pb.TaskAssignment(
        task_id="t1",
        task_definition=pb.TaskDefinition(family="f", revision=1, container_definitions=containers),
    )


def started(engine: FakeEngine) -> list[str]:
    return [c.id for c in engine.created if c.attrs]


async def until(check: Any, within: float = 5.0) -> None:
    for _ in range(int(within / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not within {within}s")


async def test_a_container_starts_only_once_its_dependency_completed(
    driver: DockerDriver, engine: FakeEngine
) -> None:
    engine.states["c2"] = {"Status": "running"}  # init, the second created (definition order)
    starting = asyncio.create_task(driver.start_task(ordered_task(D.COMPLETE), "n1"))
    try:
        await until(lambda: len(engine.created) == 2)
        app, init = engine.created  # created in definition order, started in dependency order
        assert init.id == "c2"
        await until(lambda: started(engine) == [init.id])
        await asyncio.sleep(1.2)  # a few looks at the dependency: still running, app waits
        assert started(engine) == [init.id]
        assert {"berth.start-order": "1"}.items() <= app.kwargs["labels"].items()
        assert {"berth.start-order": "0"}.items() <= init.kwargs["labels"].items()
        engine.states[init.id] = {"Status": "exited", "ExitCode": 0}
        await asyncio.wait_for(starting, 5)
        assert sorted(started(engine)) == sorted([init.id, app.id])
        assert engine.removed == []
    finally:
        starting.cancel()


async def test_a_dependency_that_can_never_succeed_fails_the_start_and_removes_everything(
    driver: DockerDriver, engine: FakeEngine
) -> None:
    engine.states["c2"] = {"Status": "exited", "ExitCode": 1}
    starting = asyncio.create_task(driver.start_task(ordered_task(D.SUCCESS), "n1"))
    await until(lambda: len(engine.created) == 2)
    app, init = engine.created
    with pytest.raises(StartFailed) as failed:
        await asyncio.wait_for(starting, 5)
    assert str(failed.value) == (
        "DependencyError: container app needs init to be SUCCESS, but init exited with code 1"
    )
    assert sorted(engine.removed) == sorted([app.id, init.id])
    assert started(engine) == [init.id]


async def test_waiting_past_the_start_timeout_fails_the_start(
    driver: DockerDriver, engine: FakeEngine
) -> None:
    engine.states["c2"] = {"Status": "running"}
    starting = asyncio.create_task(driver.start_task(ordered_task(D.COMPLETE, start_timeout=2), "n1"))
    with pytest.raises(
        StartFailed, match=r"^DependencyTimeout: container app waited 2s .* for init to be COMPLETE$"
    ):
        await asyncio.wait_for(starting, 10)
    assert len(engine.removed) == 2


async def test_other_work_goes_on_while_a_task_waits(driver: DockerDriver, engine: FakeEngine) -> None:
    """The wait holds no worker thread: the loop and other engine calls are not held up."""
    engine.states["c2"] = {"Status": "running"}
    starting = asyncio.create_task(driver.start_task(ordered_task(D.COMPLETE), "n1"))
    try:
        await until(lambda: len(engine.created) == 2)
        for _ in range(20):  # far more engine calls than the driver's 8 worker slots
            await asyncio.wait_for(driver.list_tasks("n1"), 1)
        assert not starting.done()
    finally:
        starting.cancel()


@pytest.mark.parametrize(
    ("state", "seen"),
    [
        ({"Status": "created"}, (ContainerPhase.CREATED, None, ContainerHealth.NONE)),
        (
            {"Status": "running", "Health": {"Status": "healthy"}},
            (ContainerPhase.RUNNING, None, ContainerHealth.HEALTHY),
        ),
        ({"Status": "exited", "ExitCode": 2}, (ContainerPhase.EXITED, 2, ContainerHealth.NONE)),
        ({"Status": "dead", "ExitCode": 137}, (ContainerPhase.EXITED, 137, ContainerHealth.NONE)),
    ],
)
def test_a_dependency_as_inspect_shows_it(state: dict[str, Any], seen: tuple[Any, ...]) -> None:
    found = docker_lifecycle.seen(state)
    assert (found.phase, found.exit_code, found.health) == seen


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2026-11-27T05:00:00Z", T0),
        ("2026-11-27T05:00:00.5Z", T0 + 0.5),
        ("2026-11-27T05:00:00.123456789Z", T0 + 0.123456789),
        ("2026-11-27T06:00:00+01:00", T0),
        ("0001-01-01T00:00:00Z", 0.0),
        ("", 0.0),
        (None, 0.0),
        ("yesterday", 0.0),
        ("2026-13-45T05:00:00Z", 0.0),
    ],
)
def test_docker_times_as_unix_seconds(text: Any, seconds: float) -> None:
    assert unix_time(text) == pytest.approx(seconds, abs=1e-6)


def listed(state: str) -> ListedContainer:
    return ListedContainer("c1", "t1", "n1", "web", True, 5, state)


def test_a_restart_revives_a_dead_container_and_is_counted() -> None:
    ledger = ContainerLedger()
    ledger.record(ContainerEvent("die", "c1", "t1", "n1", exit_code=1))
    dead = ledger.observe(listed("running"))  # the list lags the event
    assert dead is not None and dead.phase is ContainerPhase.EXITED
    assert ledger.lacks_times(dead)
    ledger.inspected_times("c1", {"StartedAt": "2026-11-27T05:00:00Z", "FinishedAt": "2026-11-27T05:01:30Z"})
    dead = ledger.with_lifecycle(dead)
    assert dead.finished_at - dead.started_at == 90.0 and not ledger.lacks_times(dead)

    ledger.restarted("n1", ObservedContainer("web", "c1", ContainerPhase.RUNNING, True, 5, started_at=1.0))
    for state in ("exited", "running"):  # the list lagging our restart, then caught up
        alive = ledger.observe(listed(state))
        assert alive is not None and alive.phase is ContainerPhase.RUNNING
        assert ledger.with_lifecycle(alive).restart_count == 1


def test_a_stale_die_event_after_a_restart_is_dropped_once_inspect_says_running() -> None:
    ledger = ContainerLedger()
    ledger.restarted("n1", ObservedContainer("web", "c1", ContainerPhase.RUNNING, True, 5))
    ledger.record(ContainerEvent("die", "c1", "t1", "n1", exit_code=1))  # of the previous run
    stale = ledger.observe(listed("running"))
    assert stale is not None and ledger.lacks_times(stale)
    ledger.inspected_times("c1", {"Running": True, "StartedAt": "2026-11-27T05:00:00Z"})
    again = ledger.observe(listed("running"))
    assert again is not None and again.phase is ContainerPhase.RUNNING


def test_a_refused_restart_reads_as_an_exit_that_ran_no_time() -> None:
    ledger = ContainerLedger()
    exited = ObservedContainer(
        "web", "c1", ContainerPhase.EXITED, True, 5, 1, started_at=100.0, finished_at=500.0
    )
    ledger.restart_refused("c1")
    refused = ledger.with_lifecycle(exited)
    assert refused.finished_at - refused.started_at == 0.0


def test_the_ledger_forgets_restart_facts_with_the_container() -> None:
    ledger = ContainerLedger()
    ledger.restarted("n1", ObservedContainer("web", "c1", ContainerPhase.RUNNING, True, 5))
    ledger.restart_refused("c1")
    ledger.forget_missing("n1", set(), ledger.mark())
    assert len(ledger) == 0
    exited = ObservedContainer(
        "web", "c1", ContainerPhase.EXITED, True, 5, 1, started_at=1.0, finished_at=9.0
    )
    assert ledger.with_lifecycle(exited) == exited


class RestartingApi(FakeApi):
    """The fake engine's API, plus `start` (refused for ids in `refuse`) and labels in inspect."""

    def __init__(self, engine: FakeEngine, refuse: set[str]) -> None:
        super().__init__(engine)
        self._fake_engine = engine
        self.refuse = refuse
        self.starts: list[str] = []

    def start(self, container_id: str) -> None:
        if container_id in self.refuse:
            raise docker.errors.APIError("cannot start")
        self.starts.append(container_id)
        self._fake_engine.states[container_id] = {"Running": True, "StartedAt": "2026-11-27T05:10:00Z"}

    def inspect_container(self, container_id: str) -> dict[str, Any]:
        details = super().inspect_container(container_id)
        labels = {"berth.task-id": "t1", "berth.node-id": "n1", "berth.container-name": "web"}
        return {**details, "Config": {"Labels": labels}}


async def test_a_restart_starts_the_same_container_and_is_believed_before_the_list_catches_up(
    engine: FakeEngine,
) -> None:
    client: Any = FakeClient(engine)
    api = RestartingApi(engine, refuse=set())
    client.api = api
    driver = DockerDriver("unix:///fake.sock", client=client, open_events=FakeEvents())
    try:
        engine.row("c1", "t1", "n1", "exited")
        engine.states["c1"] = {
            "ExitCode": 1,
            "StartedAt": "2026-11-27T05:00:00Z",
            "FinishedAt": "2026-11-27T05:01:05Z",
        }
        (dead,) = (await driver.list_tasks("n1"))["t1"].containers
        assert (dead.phase, dead.finished_at - dead.started_at) == (ContainerPhase.EXITED, 65.0)

        await driver.restart_container("t1", "c1")
        assert api.starts == ["c1"]
        (alive,) = (await driver.list_tasks("n1"))["t1"].containers  # the list still says exited
        assert (alive.runtime_id, alive.phase, alive.restart_count) == ("c1", ContainerPhase.RUNNING, 1)
    finally:
        await driver.close()


async def test_a_refused_restart_is_final(engine: FakeEngine) -> None:
    client: Any = FakeClient(engine)
    client.api = RestartingApi(engine, refuse={"c1"})
    driver = DockerDriver("unix:///fake.sock", client=client, open_events=FakeEvents())
    try:
        engine.row("c1", "t1", "n1", "exited")
        engine.states["c1"] = {
            "ExitCode": 1,
            "StartedAt": "2026-11-27T05:00:00Z",
            "FinishedAt": "2026-11-27T05:01:05Z",
        }
        await driver.list_tasks("n1")
        with pytest.raises(Unavailable):
            await driver.restart_container("t1", "c1")
        (dead,) = (await driver.list_tasks("n1"))["t1"].containers
        assert dead.phase is ContainerPhase.EXITED and dead.finished_at == dead.started_at
    finally:
        await driver.close()


@pytest.mark.parametrize(
    ("labels", "timeout", "own"),
    [
        ({"berth.stop-timeout": "2"}, 30, 2),
        ({"berth.stop-timeout": "90"}, 30, 30),  # never longer than the task's
        ({"berth.stop-timeout": "-1"}, 30, 30),
        ({}, 30, 30),
        (None, 5, 5),
    ],
)
def test_each_container_stops_with_its_own_timeout(
    labels: dict[str, str] | None, timeout: int, own: int
) -> None:
    assert docker_lifecycle.own_timeout(labels, timeout) == own


def test_a_restarted_container_is_read_from_inspect() -> None:
    labels = {
        "berth.task-id": "t1",
        "berth.node-id": "n1",
        "berth.container-name": "web",
        "berth.essential": "false",
        "berth.stop-timeout": "7",
    }
    attrs = {
        "Config": {"Labels": labels, "Healthcheck": {"Test": ["CMD", "true"]}},
        "State": {"StartedAt": "2026-11-27T05:00:00Z"},
        "NetworkSettings": {"Ports": {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "32770"}]}},
    }
    node, container = docker_lifecycle.restarted("c1", attrs)
    assert node == "n1"
    assert (container.name, container.phase, container.essential, container.stop_timeout) == (
        "web",
        ContainerPhase.RUNNING,
        False,
        7,
    )
    assert container.health is ContainerHealth.STARTING and container.started_at == T0
    assert [(b.container_port, b.host_port) for b in container.bindings] == [(80, 32770)]
