"""The Docker driver's ordered start, restart in place and ordered stop, against the fake
engine client of test_docker_driver; and the ledger's facts about restarts (pure)."""

from __future__ import annotations

import asyncio
import threading
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
from tests.unit.test_docker_driver import (
    FakeApi,
    FakeClient,
    FakeContainer,
    FakeContainers,
    FakeEngine,
    FakeEvents,
)

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


def ordered_task(condition: pb.ContainerDependency.Condition.ValueType, init_timeout: int = 0) -> Any:
    """app waits for init (whose startTimeout is `init_timeout`)."""
    containers = [
        pb.ContainerDefinition(
            name="app",
            image="app:1",
            essential=True,
            depends_on=[D(container_name="init", condition=condition)],
        ),
        pb.ContainerDefinition(name="init", image="init:1", essential=False, start_timeout=init_timeout),
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


async def test_a_dependency_past_its_own_start_timeout_fails_the_start(
    driver: DockerDriver, engine: FakeEngine
) -> None:
    engine.states["c2"] = {"Status": "running"}
    starting = asyncio.create_task(driver.start_task(ordered_task(D.COMPLETE, init_timeout=2), "n1"))
    with pytest.raises(StartFailed) as failed:
        await asyncio.wait_for(starting, 10)
    assert str(failed.value) == (
        "DependencyTimeout: container app waited for init to be COMPLETE, which init did not reach "
        "within 2s of its start (its startTimeout)"
    )
    assert len(engine.removed) == 2


async def test_containers_whose_dependencies_are_met_do_not_wait_behind_a_waiting_one(
    driver: DockerDriver, engine: FakeEngine
) -> None:
    """app waits for migrate's SUCCESS; migrate needs db up: db starts at once, beside migrate."""
    containers = [
        pb.ContainerDefinition(
            name="app",
            image="app:1",
            essential=True,
            depends_on=[D(container_name="migrate", condition=D.SUCCESS)],
        ),
        pb.ContainerDefinition(name="migrate", image="migrate:1", essential=False),
        pb.ContainerDefinition(name="db", image="db:1", essential=True),
    ]
    assignment = agent_pb.TaskAssignment(
        task_id="t1",
        task_definition=pb.TaskDefinition(family="f", revision=1, container_definitions=containers),
    )
    engine.states["c2"] = {"Status": "running"}
    starting = asyncio.create_task(driver.start_task(assignment, "n1"))
    try:
        await until(lambda: len(engine.created) == 3)
        app, migrate, db = engine.created
        await until(lambda: sorted(started(engine)) == sorted([migrate.id, db.id]))
        await asyncio.sleep(1.2)
        assert app.id not in started(engine)
        engine.states[migrate.id] = {"Status": "exited", "ExitCode": 0}
        await asyncio.wait_for(starting, 5)
        assert sorted(started(engine)) == sorted([app.id, migrate.id, db.id])
        assert engine.removed == []
    finally:
        starting.cancel()


async def test_a_start_cancelled_while_it_waits_leaves_nothing_behind(
    driver: DockerDriver, engine: FakeEngine
) -> None:
    """The task was stopped while its app waited: every container it made is removed."""
    engine.states["c2"] = {"Status": "running"}
    starting = asyncio.create_task(driver.start_task(ordered_task(D.COMPLETE), "n1"))
    await until(lambda: len(engine.created) == 2)
    app, init = engine.created
    await until(lambda: started(engine) == [init.id])
    await asyncio.sleep(0.7)  # waiting: a look or two at init
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    assert sorted(engine.removed) == sorted([app.id, init.id])
    assert driver._starting == set()


async def test_a_start_cancelled_while_its_containers_are_created_removes_them_once_made(
    engine: FakeEngine,
) -> None:
    """The cancel comes while the create runs in its thread: the clean-up waits for it to end."""
    created = threading.Event()
    release = threading.Event()

    class SlowContainers(FakeContainers):
        def create(self, image: str, **kwargs: Any) -> FakeContainer:
            container = super().create(image, **kwargs)
            created.set()
            release.wait(5)
            return container

    client: Any = FakeClient(engine)
    client.containers = SlowContainers(engine)
    slow = DockerDriver("unix:///fake.sock", client=client, open_events=FakeEvents())
    try:
        starting = asyncio.create_task(slow.start_task(ordered_task(D.COMPLETE), "n1"))
        await until(created.is_set)
        starting.cancel()
        await asyncio.sleep(0.1)
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await starting
        await until(lambda: len(engine.removed) == 2)
        assert sorted(engine.removed) == sorted(c.id for c in engine.created)
        assert started(engine) == []
    finally:
        release.set()
        await slow.close()


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

    since = ledger.mark()  # taken before the engine is asked to start it again
    ledger.restarted(
        "n1", ObservedContainer("web", "c1", ContainerPhase.RUNNING, True, 5, started_at=1.0), since
    )
    for state in ("exited", "running"):  # the list lagging our restart, then caught up
        alive = ledger.observe(listed(state))
        assert alive is not None and alive.phase is ContainerPhase.RUNNING
        assert ledger.with_lifecycle(alive).restart_count == 1


def test_the_new_run_dying_before_the_restart_is_noted_is_kept() -> None:
    """The race: the restarted container dies, and its die event arrives, before the driver
    notes the restart. The death is the new run's: the container reads exited, not running."""
    ledger = ContainerLedger()
    ledger.record(ContainerEvent("die", "c1", "t1", "n1", exit_code=1))  # the previous run
    since = ledger.mark()
    ledger.record(ContainerEvent("oom", "c1", "t1", "n1"))
    ledger.record(ContainerEvent("die", "c1", "t1", "n1", exit_code=137))  # the new run, at once
    ledger.restarted(
        "n1", ObservedContainer("web", "c1", ContainerPhase.RUNNING, True, 5, started_at=1.0), since
    )
    for state in ("exited", "running"):
        dead = ledger.observe(listed(state))
        if dead is None:  # the list caught up: inspect tells
            dead = ledger.inspected(listed(state), {"ExitCode": 137, "OOMKilled": True})
        assert (dead.phase, dead.exit_code, dead.reason) == (ContainerPhase.EXITED, 137, "OOMKilled")
        assert ledger.with_lifecycle(dead).restart_count == 1


def test_a_restarted_container_inspect_shows_exited_is_not_shown_running() -> None:
    """The new run died before the driver's inspect: it is what the container finished as."""
    ledger = ContainerLedger()
    since = ledger.mark()
    exited = ObservedContainer(
        "web", "c1", ContainerPhase.EXITED, True, 5, 1, started_at=100.0, finished_at=100.2
    )
    ledger.restarted("n1", exited, since)
    dead = ledger.observe(listed("exited"))
    assert dead is not None and (dead.phase, dead.exit_code) == (ContainerPhase.EXITED, 1)
    assert ledger.with_lifecycle(dead).restart_count == 1


def test_a_stale_die_event_after_a_restart_is_dropped_once_inspect_says_running() -> None:
    ledger = ContainerLedger()
    ledger.restarted("n1", ObservedContainer("web", "c1", ContainerPhase.RUNNING, True, 5), ledger.mark())
    ledger.record(ContainerEvent("die", "c1", "t1", "n1", exit_code=1))  # of the previous run, late
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
    ledger.restarted("n1", ObservedContainer("web", "c1", ContainerPhase.RUNNING, True, 5), ledger.mark())
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
        self.unreachable: set[str] = set()
        self.starts: list[str] = []

    def start(self, container_id: str) -> None:
        if container_id in self.refuse:
            raise docker.errors.APIError("cannot start")
        if container_id in self.unreachable:
            raise docker.errors.DockerException("Error while fetching server API version")
        self.starts.append(container_id)
        state: dict[str, Any] = {"Running": True, "StartedAt": "2026-11-27T05:10:00Z"}
        code = self._fake_engine.dies_at_once.get(container_id)
        if code is not None:  # dead before the driver's inspect
            state = {**state, "Running": False, "ExitCode": code, "FinishedAt": "2026-11-27T05:10:00.2Z"}
        self._fake_engine.states[container_id] = state

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


async def test_an_unreachable_engine_is_no_refusal_and_the_next_pass_restarts(engine: FakeEngine) -> None:
    client: Any = FakeClient(engine)
    api = client.api = RestartingApi(engine, refuse=set())
    api.unreachable.add("c1")
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
        assert dead.finished_at - dead.started_at == 65.0  # still due for its restart
        api.unreachable.clear()
        await driver.restart_container("t1", "c1")
        (alive,) = (await driver.list_tasks("n1"))["t1"].containers
        assert (alive.phase, alive.restart_count) == (ContainerPhase.RUNNING, 1)
    finally:
        await driver.close()


async def test_a_restarted_container_that_dies_before_inspect_is_not_shown_running(
    engine: FakeEngine,
) -> None:
    client: Any = FakeClient(engine)
    client.api = RestartingApi(engine, refuse=set())
    driver = DockerDriver("unix:///fake.sock", client=client, open_events=FakeEvents())
    try:
        engine.row("c1", "t1", "n1", "exited")
        engine.states["c1"] = {
            "ExitCode": 1,
            "StartedAt": "2026-11-27T05:00:00Z",
            "FinishedAt": "2026-11-27T05:01:05Z",
        }
        await driver.list_tasks("n1")
        engine.dies_at_once["c1"] = 3
        await driver.restart_container("t1", "c1")
        (dead,) = (await driver.list_tasks("n1"))["t1"].containers
        assert (dead.phase, dead.exit_code, dead.restart_count) == (ContainerPhase.EXITED, 3, 1)
        assert dead.finished_at - dead.started_at == pytest.approx(0.2)  # an early exit: not again
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
        "State": {"Running": True, "StartedAt": "2026-11-27T05:00:00Z"},
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
