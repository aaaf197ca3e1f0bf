"""Health checks, piece by piece (pure): the Docker spec, the list/event merge, ECS's
aggregation, the agent's reports, the lifecycle, the boundary, endpoints and replacement."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agent.reconciler import Report, plan, task_health
from agent.runtime.docker_events import ContainerEvent, parse_event
from agent.runtime.docker_spec import container_specs
from agent.runtime.docker_state import (
    ContainerLedger,
    ListedContainer,
    from_summary,
    health_from_status,
    health_output,
)
from agent.runtime.driver import ContainerHealth, ContainerPhase, ObservedContainer, ObservedTask
from agent.runtime.fake import FakeDriver
from agent.supervisor import TaskSupervisor
from berth import deployment_defaults
from berth.errors import InvalidArgument
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb
from controlplane import lifecycle
from controlplane.cache import ClusterCache
from controlplane.controllers.scheduling import SchedulingController
from controlplane.controllers.services import HEALTH_CHECK_FAILED, ServiceController, decide
from controlplane.endpoints import endpoints, not_ready
from controlplane.events import EventLog
from controlplane.store import keys
from controlplane.store.memory import MemoryStore
from controlplane.validation import agent_reports
from tests.unit.conftest import caught_up, put

H = ContainerHealth
CHECK = pb.HealthCheck(command=["CMD-SHELL", "test -f /tmp/ok"], interval=5, timeout=2, retries=1)
TASK_ID = "0123456789abcdef0123456789abcdef"


# -- Docker spec ---------------------------------------------------------------


def _assignment(
    *definitions: pb.ContainerDefinition, health: int = pb.HEALTH_UNKNOWN
) -> agent_pb.TaskAssignment:
    return agent_pb.TaskAssignment(
        task_id="t1",
        last_status=pb.RUNNING,
        desired_status=pb.DESIRED_RUNNING,
        health_status=health,  # type: ignore[arg-type]
        task_definition=pb.TaskDefinition(family="web", revision=1, container_definitions=definitions),
    )


@pytest.mark.parametrize(
    ("check", "expected"),
    [
        (None, None),
        (
            CHECK,
            {
                "test": ["CMD-SHELL", "test -f /tmp/ok"],
                "interval": 5_000_000_000,
                "timeout": 2_000_000_000,
                "retries": 1,
                "start_period": 0,
            },
        ),
        (
            pb.HealthCheck(
                command=["CMD", "curl", "-f", "http://localhost/"],
                interval=30,
                timeout=5,
                retries=3,
                start_period=60,
            ),
            {
                "test": ["CMD", "curl", "-f", "http://localhost/"],
                "interval": 30_000_000_000,
                "timeout": 5_000_000_000,
                "retries": 3,
                "start_period": 60_000_000_000,
            },
        ),
    ],
    ids=["no check: no healthcheck option", "CMD-SHELL in nanoseconds", "CMD with a start period"],
)  # fmt: skip
def test_the_health_check_becomes_dockers_healthcheck_option(
    check: pb.HealthCheck | None, expected: dict[str, Any] | None
) -> None:
    definition = pb.ContainerDefinition(name="web", image="web:1", essential=True, health_check=check)
    (spec,) = container_specs(_assignment(definition), "node-1")
    assert spec.create_kwargs().get("healthcheck") == expected


# -- Docker list and events ------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "health"),
    [
        ("Up 5 seconds", H.NONE),
        ("Up 5 seconds (health: starting)", H.STARTING),
        ("Up 2 minutes (healthy)", H.HEALTHY),
        ("Up 2 minutes (unhealthy)", H.UNHEALTHY),
        ("Up 2 minutes (Paused)", H.NONE),
        ("Exited (1) 3 seconds ago", H.NONE),
        ("", H.NONE),
    ],
)
def test_health_is_read_from_the_list_status(status: str, health: ContainerHealth) -> None:
    assert health_from_status(status) is health


def test_a_health_event_is_parsed_and_wins_over_the_list_until_the_stream_reconnects() -> None:
    raw = {
        "Action": "health_status: unhealthy",
        "id": "c1",
        "Actor": {"Attributes": {"berth.task-id": "t1", "berth.node-id": "n1"}},
    }
    event = parse_event(raw)
    assert (event.action, event.health, event.task_id) == ("health_status", "unhealthy", "t1")
    labels = {"berth.task-id": "t1", "berth.node-id": "n1", "berth.container-name": "web"}
    summary = {"Id": "c1", "State": "running", "Status": "Up 9 seconds (healthy)", "Labels": labels}
    listed = from_summary(summary)
    assert listed is not None and listed.health is H.HEALTHY
    ledger = ContainerLedger()
    ledger.record(event)
    observed = ledger.observe(listed)
    assert observed is not None and observed.health is H.UNHEALTHY
    ledger.forget_health()
    observed = ledger.observe(listed)
    assert observed is not None and observed.health is H.HEALTHY


def test_a_health_event_right_after_our_start_updates_the_started_container() -> None:
    ledger = ContainerLedger()
    ledger.started("n1", ObservedContainer("web", "c1", ContainerPhase.RUNNING, True, health=H.STARTING))
    ledger.record(ContainerEvent("health_status", "c1", "t1", "n1", health="healthy"))
    observed = ledger.observe(ListedContainer("c1", "t1", "n1", "web", True, 30, "created"))
    assert observed is not None and observed.health is H.HEALTHY


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ({}, ""),
        ({"Health": {"Status": "unhealthy", "Log": []}}, ""),
        ({"Health": {"Log": [{"ExitCode": 0, "Output": "ok"}, {"ExitCode": 1, "Output": ""}]}}, "exit 1"),
        (
            {"Health": {"Log": [{"ExitCode": 7, "Output": "curl: connection refused\nmore\n"}]}},
            "exit 7: curl: connection refused",
        ),
        ({"Health": {"Log": [{"ExitCode": 1, "Output": "x" * 500}]}}, "exit 1: " + "x" * 189 + "..."),
    ],
    ids=["no health", "no checks yet", "no output", "first line only", "bounded"],
)
def test_the_last_failed_check_becomes_one_short_line(state: dict[str, Any], expected: str) -> None:
    assert health_output(state) == expected


def test_an_unhealthy_containers_output_is_inspected_once_per_unhealthy_spell() -> None:
    ledger = ContainerLedger()
    sick = ObservedContainer("web", "c1", ContainerPhase.RUNNING, True, health=H.UNHEALTHY)
    assert ledger.lacks_health_output(sick)
    ledger.inspected_health("c1", {"Health": {"Log": [{"ExitCode": 1, "Output": "down"}]}})
    assert not ledger.lacks_health_output(sick)
    assert ledger.with_health_output(sick).health_output == "exit 1: down"
    ledger.record(ContainerEvent("health_status", "c1", "t1", "n1", health="healthy"))
    assert ledger.lacks_health_output(sick), "a new spell is inspected again"
    healthy = ObservedContainer("web", "c1", ContainerPhase.RUNNING, True, health=H.HEALTHY)
    assert not ledger.lacks_health_output(healthy)


# -- ECS's aggregation ---------------------------------------------------------------


def _c(
    name: str, health: ContainerHealth, essential: bool = True, phase: ContainerPhase = ContainerPhase.RUNNING
) -> ObservedContainer:
    return ObservedContainer(name, f"id-{name}", phase, essential, health=health)  # fmt: skip


@pytest.mark.parametrize(
    ("containers", "checked", "expected"),
    [
        ([_c("a", H.NONE)], set(), pb.HEALTH_UNKNOWN),
        ([_c("a", H.STARTING)], {"a"}, pb.HEALTH_UNKNOWN),
        ([_c("a", H.HEALTHY)], {"a"}, pb.HEALTHY),
        ([_c("a", H.UNHEALTHY)], {"a"}, pb.UNHEALTHY),
        ([_c("a", H.HEALTHY), _c("b", H.STARTING)], {"a", "b"}, pb.HEALTH_UNKNOWN),
        ([_c("a", H.HEALTHY), _c("b", H.UNHEALTHY)], {"a", "b"}, pb.UNHEALTHY),
        ([_c("a", H.STARTING), _c("b", H.UNHEALTHY)], {"a", "b"}, pb.UNHEALTHY),
        ([_c("a", H.HEALTHY), _c("b", H.HEALTHY)], {"a", "b"}, pb.HEALTHY),
        # Containers without a check do not count; nor do non-essential ones.
        ([_c("a", H.HEALTHY), _c("b", H.NONE)], {"a"}, pb.HEALTHY),
        ([_c("a", H.HEALTHY), _c("b", H.UNHEALTHY, essential=False)], {"a", "b"}, pb.HEALTHY),
        ([_c("a", H.NONE), _c("b", H.HEALTHY, essential=False)], {"b"}, pb.HEALTH_UNKNOWN),
        # An image's own HEALTHCHECK is not the task definition's: ignored, as ECS does.
        ([_c("a", H.UNHEALTHY)], set(), pb.HEALTH_UNKNOWN),
        # An exited container has no health.
        ([_c("a", H.HEALTHY, phase=ContainerPhase.EXITED)], {"a"}, pb.HEALTH_UNKNOWN),
    ],
)
def test_task_health_follows_ecs(
    containers: list[ObservedContainer], checked: set[str], expected: int
) -> None:
    assert task_health(ObservedTask("t1", tuple(containers)), frozenset(checked)) == expected


# -- the agent's reports ------------------------------------------------------------------

CHECKED = pb.ContainerDefinition(name="web", essential=True, health_check=CHECK)


@pytest.mark.parametrize(
    ("recorded", "observed", "reported"),
    [
        (pb.HEALTH_UNKNOWN, H.STARTING, None),
        (pb.HEALTH_UNKNOWN, H.HEALTHY, pb.HEALTHY),
        (pb.HEALTHY, H.HEALTHY, None),
        (pb.HEALTHY, H.UNHEALTHY, pb.UNHEALTHY),
        (pb.UNHEALTHY, H.HEALTHY, pb.HEALTHY),
    ],
)
def test_a_running_task_is_reported_when_its_health_differs_from_etcd(
    recorded: int, observed: ContainerHealth, reported: int | None
) -> None:
    actions = plan(
        {"t1": _assignment(CHECKED, health=recorded)},
        {"t1": ObservedTask("t1", (_c("web", observed),))},
        set(),
        {},
    )
    if reported is None:
        assert actions == []
        return
    (action,) = actions
    assert isinstance(action, Report)
    assert (action.report.last_status, action.report.health_status) == (pb.RUNNING, reported)
    assert action.report.containers[0].health_status == reported


def test_an_unhealthy_container_reports_what_its_last_check_said() -> None:
    sick = ObservedContainer(
        "web", "c1", ContainerPhase.RUNNING, True, health=H.UNHEALTHY, health_output="exit 1: no"
    )
    (action,) = plan(
        {"t1": _assignment(CHECKED, health=pb.HEALTHY)}, {"t1": ObservedTask("t1", (sick,))}, set(), {}
    )
    assert isinstance(action, Report)
    assert action.report.containers[0].health_output == "exit 1: no"


async def test_the_supervisor_reports_each_health_change_at_once() -> None:
    driver = FakeDriver(healthy_after=0.01)
    supervisor = TaskSupervisor(driver, "n1", resync_interval=3600)
    reports: list[agent_pb.TaskStatusReport] = []
    supervisor.attach(reports.append)
    worker = asyncio.create_task(supervisor.run())
    pending = _assignment(CHECKED)
    pending.task_id, pending.last_status = "t1", pb.PENDING
    pending.task_definition.container_definitions[0].image = "web:1"

    async def seen(health: int) -> None:
        for _ in range(400):
            if any(r.health_status == health for r in reports):
                return
            await asyncio.sleep(0.005)
        raise AssertionError(f"no report with health {health}: {reports}")

    try:
        supervisor.set_desired(agent_pb.DesiredState(revision=1, tasks=[pending]))
        await seen(pb.HEALTHY)  # within the same snapshot revision: health is part of the dedupe key
        driver.set_health("t1", H.UNHEALTHY)
        await seen(pb.UNHEALTHY)
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)


# -- control plane: lifecycle and the boundary ---------------------------------------------


def _placed(checked: bool = True) -> pb.Task:
    definition = pb.ContainerDefinition(name="web", memory=64, essential=True)
    if checked:
        definition.health_check.CopyFrom(CHECK)
    task = lifecycle.new_task(
        "default", pb.TaskDefinition(family="web", revision=1, container_definitions=[definition]), "web"
    )
    task.node_id = "n1"
    return task


def test_a_task_records_whether_an_essential_container_is_health_checked() -> None:
    assert _placed(checked=True).health_checked
    assert not _placed(checked=False).health_checked


def test_health_changes_of_a_running_task_are_written_and_kept_once_stopped() -> None:
    running = lifecycle.apply_report(_placed(), "n1", agent_pb.TaskStatusReport(last_status=pb.RUNNING))
    assert running is not None and running.health_status == pb.HEALTH_UNKNOWN
    again = agent_pb.TaskStatusReport(last_status=pb.RUNNING)
    assert lifecycle.apply_report(running, "n1", again) is None
    healthy = lifecycle.apply_report(
        running, "n1", agent_pb.TaskStatusReport(last_status=pb.RUNNING, health_status=pb.HEALTHY)
    )
    assert healthy is not None and healthy.health_status == pb.HEALTHY
    assert healthy.started_at == running.started_at
    unhealthy = lifecycle.apply_report(
        healthy, "n1", agent_pb.TaskStatusReport(last_status=pb.RUNNING, health_status=pb.UNHEALTHY)
    )
    assert unhealthy is not None and unhealthy.health_status == pb.UNHEALTHY
    stopped = lifecycle.apply_report(unhealthy, "n1", agent_pb.TaskStatusReport(last_status=pb.STOPPED))
    assert stopped is not None and stopped.health_status == pb.UNHEALTHY


@pytest.mark.parametrize(
    ("report", "message"),
    [
        (agent_pb.TaskStatusReport(task_id=TASK_ID, last_status=pb.RUNNING, health_status=pb.HEALTHY), None),
        (
            agent_pb.TaskStatusReport(task_id=TASK_ID, last_status=pb.RUNNING, health_status=7),  # type: ignore[arg-type]
            "health_status 7 is invalid",
        ),
        (
            agent_pb.TaskStatusReport(
                task_id=TASK_ID,
                last_status=pb.RUNNING,
                containers=[pb.ContainerState(name="w", health_status=-1)],  # type: ignore[arg-type]
            ),
            r"containers\[0\]\.health_status -1 is invalid",
        ),
    ],
)
def test_reported_health_is_checked_at_the_boundary(
    report: agent_pb.TaskStatusReport, message: str | None
) -> None:
    if message is None:
        agent_reports.check_status_report(report)
        return
    with pytest.raises(InvalidArgument, match=message):
        agent_reports.check_status_report(report)


# -- endpoints and replacement -------------------------------------------------------------


def _task(task_id: str, health: int, checked: bool = True, desired: int = pb.DESIRED_RUNNING) -> pb.Task:
    return pb.Task(
        id=task_id,
        last_status=pb.RUNNING,
        desired_status=desired,  # type: ignore[arg-type]
        node_id="n1",
        health_checked=checked,
        health_status=health,  # type: ignore[arg-type]
        network_bindings=[pb.NetworkBinding(container_port=8080, host_port=32768 + len(task_id))],
    )


def test_only_healthy_tasks_and_tasks_without_a_check_are_endpoints() -> None:
    service = pb.Service(name="web", ports=[pb.ServicePort(port=80, container_port=8080)])
    nodes = {"n1": pb.Node(id="n1", address="10.0.0.1", status=pb.READY)}
    tasks = [
        _task("healthy", pb.HEALTHY),
        _task("unchecked", pb.HEALTH_UNKNOWN, checked=False),
        _task("starting", pb.HEALTH_UNKNOWN),
        _task("sick", pb.UNHEALTHY),
        _task("replaced", pb.UNHEALTHY, desired=pb.DESIRED_STOPPED),
    ]
    serving = endpoints(service, tasks, nodes)
    assert sorted(e.task_id for e in serving) == ["healthy", "unchecked"]
    assert not_ready(tasks, nodes, serving) == {
        "starting": "health unknown",
        "sick": "unhealthy",
        "replaced": "stopping",
    }


WEB_PORT = [pb.ServicePort(port=80, container_port=8080)]


def _leaving(task: pb.Task, at: float, health_check: bool = True) -> pb.Task:
    """`task` as the service left it: deregistered at `at` (seconds) for failing its check."""
    task.deregistered_at.FromSeconds(int(at))
    task.failed_health_check = health_check
    task.stopped_reason = HEALTH_CHECK_FAILED if health_check else "Replaced by deployment 2"
    return task


@pytest.mark.parametrize(
    ("ports", "delay", "tasks", "start", "unhealthy", "stop", "deregister", "steady"),
    [
        (WEB_PORT, 5, [_task("a", pb.HEALTHY), _task("b", pb.HEALTHY)], 0, [], [], [], True),
        # A checked task still in its start period serves nobody yet: not steady.
        (WEB_PORT, 5, [_task("a", pb.HEALTHY), _task("b", pb.HEALTH_UNKNOWN)], 0, [], [], [], False),
        # No endpoints, or no delay: stopped at once, as the same pass replaces it.
        ([], 5, [_task("a", pb.HEALTHY), _task("b", pb.UNHEALTHY)], 1, ["b"], ["b"], [], False),
        (WEB_PORT, 0, [_task("a", pb.HEALTHY), _task("b", pb.UNHEALTHY)], 1, ["b"], ["b"], [], False),
        ([], 5, [_task("a", pb.UNHEALTHY), _task("b", pb.UNHEALTHY)], 2, ["a", "b"], ["a", "b"], [], False),
        # Endpoints and a delay: out of the endpoints and replaced now, stopped after the delay.
        (WEB_PORT, 5, [_task("a", pb.HEALTHY), _task("b", pb.UNHEALTHY)], 1, ["b"], [], ["b"], False),
        (
            WEB_PORT,
            5,
            [_task("a", pb.UNHEALTHY), _task("b", pb.UNHEALTHY)],
            2,
            ["a", "b"],
            [],
            ["a", "b"],
            False,
        ),
        # Once asked to stop, it no longer counts, and its replacement is there: nothing more.
        (
            [],
            5,
            [_task("a", pb.HEALTHY), _task("b", pb.UNHEALTHY, desired=pb.DESIRED_STOPPED), _task("c", 0)],
            0,
            [],
            [],
            [],
            False,
        ),
        # Deregistered 2 s ago (now is 100): it waits; its replacement is there, so no second
        # replacement and no second "replaced" (as a restarted or new leader sees the record).
        (
            WEB_PORT,
            5,
            [_task("a", pb.HEALTHY), _leaving(_task("b", pb.UNHEALTHY), 98), _task("c", 0)],
            0,
            [],
            [],
            [],
            False,
        ),
        # Healthy again during its delay: it still leaves; it was replaced already.
        (
            WEB_PORT,
            5,
            [_task("a", pb.HEALTHY), _leaving(_task("b", pb.HEALTHY), 98), _task("c", pb.HEALTHY)],
            0,
            [],
            [],
            [],
            False,
        ),
        # The delay is over: stopped now (as a failed health check, by its record).
        (
            WEB_PORT,
            5,
            [_task("a", pb.HEALTHY), _leaving(_task("b", pb.UNHEALTHY), 95), _task("c", pb.HEALTHY)],
            0,
            [],
            ["b"],
            [],
            False,
        ),
        # A deployment's leaver that turns UNHEALTHY during its delay is not replaced again.
        (
            WEB_PORT,
            5,
            [
                _task("a", pb.HEALTHY),
                _leaving(_task("b", pb.UNHEALTHY), 98, health_check=False),
                _task("c", pb.HEALTHY),
            ],
            0,
            [],
            [],
            [],
            False,
        ),
    ],
)
def test_an_unhealthy_service_task_leaves_the_endpoints_is_replaced_and_stopped_after_the_delay(
    ports: list[pb.ServicePort],
    delay: int,
    tasks: list[pb.Task],
    start: int,
    unhealthy: list[str],
    stop: list[str],
    deregister: list[str],
    steady: bool,
) -> None:
    service = pb.Service(name="web", desired_count=2, status=pb.SERVICE_ACTIVE, ports=ports)
    service.deployment_configuration.CopyFrom(deployment_defaults.defaults())
    service.deployment_configuration.deregistration_delay = delay
    decision = decide(service, tasks, now=100.0)
    assert (decision.start, decision.unhealthy, decision.stop, decision.deregister, decision.steady) == (
        start,
        unhealthy,
        stop,
        deregister,
        steady,
    )
    for task_id in decision.unhealthy + [t.id for t in tasks if t.failed_health_check and t.id in stop]:
        assert decision.reasons[task_id] == HEALTH_CHECK_FAILED
    assert decision.waiting == any(t.HasField("deregistered_at") and t.id not in stop for t in tasks)


def test_an_unhealthy_task_on_a_down_node_is_stopped_at_once() -> None:
    # Nobody reaches it through the endpoints (its node is DOWN), and no agent would honour a delay.
    service = pb.Service(name="web", desired_count=1, status=pb.SERVICE_ACTIVE, ports=WEB_PORT)
    decision = decide(service, [_task("a", pb.UNHEALTHY)], frozenset({"n1"}), down=frozenset({"n1"}))
    assert (decision.start, decision.unhealthy, decision.stop, decision.deregister) == (1, ["a"], ["a"], [])


async def test_the_service_controller_stops_an_unhealthy_task_replaces_it_and_says_why(
    store: MemoryStore, cache: ClusterCache
) -> None:
    node = pb.Node(id="n1", name="n1", status=pb.READY, cpu_units=4096, memory_mib=4096)
    await put(store, keys.node(node.id), node)
    await put(store, keys.alive(node.id), b"1")
    td = pb.TaskDefinition(family="web", revision=1, status=pb.ACTIVE, container_definitions=[CHECKED])
    td.container_definitions[0].memory = 64
    await put(store, keys.taskdef("web", 1), td)
    await put(
        store,
        keys.service("default", "web"),
        pb.Service(
            cluster="default", name="web", task_definition="web:1", desired_count=1, status=pb.SERVICE_ACTIVE
        ),
    )
    await caught_up(cache, store)
    events = EventLog(store)
    services = ServiceController(store, cache, events, SchedulingController(store, cache, events))
    await services.reconcile()
    await caught_up(cache, store)
    (first,) = [t.value for t in cache.tasks_of_service("default", "web")]
    assert first.health_checked

    sick = pb.Task()
    sick.CopyFrom(first)
    sick.last_status = pb.RUNNING
    sick.health_status = pb.UNHEALTHY
    sick.containers.append(
        pb.ContainerState(name="web", health_status=pb.UNHEALTHY, health_output="exit 1: no\x1b[2J")
    )
    await put(store, keys.task(first.id), sick)
    await caught_up(cache, store)
    await services.reconcile()
    await caught_up(cache, store)

    tasks = {t.value.id: t.value for t in cache.tasks_of_service("default", "web")}
    assert len(tasks) == 2
    stopped = tasks.pop(first.id)
    assert (stopped.desired_status, stopped.stop_code, stopped.stopped_reason) == (
        pb.DESIRED_STOPPED,
        pb.SERVICE_SCHEDULER_INITIATED,
        "Task failed container health checks",
    )
    (replacement,) = tasks.values()
    assert replacement.desired_status == pb.DESIRED_RUNNING
    found = await store.get(keys.events("default", "web"), pb.ServiceEvents)
    assert found is not None
    assert f"task {first.id[:12]} failed its health check (exit 1: no\\x1b[2J) and was replaced" in [
        e.message for e in found.value.events
    ]


async def test_an_unhealthy_task_with_endpoints_waits_out_its_delay_even_across_a_restart(
    store: MemoryStore, cache: ClusterCache
) -> None:
    node = pb.Node(id="n1", name="n1", status=pb.READY, cpu_units=4096, memory_mib=4096)
    await put(store, keys.node(node.id), node)
    await put(store, keys.alive(node.id), b"1")
    td = pb.TaskDefinition(family="web", revision=1, status=pb.ACTIVE, container_definitions=[CHECKED])
    td.container_definitions[0].memory = 64
    await put(store, keys.taskdef("web", 1), td)
    service = pb.Service(
        cluster="default",
        name="web",
        task_definition="web:1",
        desired_count=1,
        status=pb.SERVICE_ACTIVE,
        ports=WEB_PORT,
    )
    await put(store, keys.service("default", "web"), service)
    await caught_up(cache, store)
    events = EventLog(store)

    def controller() -> ServiceController:
        return ServiceController(store, cache, events, SchedulingController(store, cache, events))

    async def reconcile(services: ServiceController) -> dict[str, pb.Task]:
        await services.reconcile()
        await caught_up(cache, store)
        return {t.value.id: t.value for t in cache.tasks_of_service("default", "web")}

    async def said() -> list[str]:
        found = await store.get(keys.events("default", "web"), pb.ServiceEvents)
        return [e.message for e in found.value.events if "health check" in e.message] if found else []

    services = controller()
    (first,) = (await reconcile(services)).values()
    sick = pb.Task()
    sick.CopyFrom(first)
    sick.last_status = pb.RUNNING
    sick.health_status = pb.UNHEALTHY
    sick.containers.append(pb.ContainerState(name="web", health_status=pb.UNHEALTHY, health_output="exit 1"))
    await put(store, keys.task(first.id), sick)
    await caught_up(cache, store)

    tasks = await reconcile(services)
    assert len(tasks) == 2, "replaced at once"
    leaving = tasks[first.id]
    # Out of the endpoints (deregistered) but not asked to stop: connections in flight finish.
    assert leaving.HasField("deregistered_at") and leaving.desired_status == pb.DESIRED_RUNNING
    assert (leaving.failed_health_check, leaving.stopped_reason) == (True, HEALTH_CHECK_FAILED)
    assert await said() == [f"task {first.id[:12]} failed its health check (exit 1) and was replaced"]

    # A restart (a new controller) in the middle of the delay: nothing more happens.
    after_restart = await reconcile(controller())
    assert after_restart.keys() == tasks.keys(), "no second replacement"
    assert after_restart[first.id].desired_status == pb.DESIRED_RUNNING
    assert first.node_id and after_restart[first.id].node_id == first.node_id

    # The delay (5 s by default) has passed: the stop, as a failed health check.
    record = cache.task(first.id)
    assert record is not None
    earlier = pb.Task()
    earlier.CopyFrom(record.value)
    earlier.deregistered_at.FromSeconds(earlier.deregistered_at.seconds - 6)
    await put(store, record.key, earlier)
    await caught_up(cache, store)
    tasks = await reconcile(controller())
    assert len(tasks) == 2, "replaced once"
    stopped = tasks[first.id]
    assert (stopped.desired_status, stopped.stop_code, stopped.stopped_reason) == (
        pb.DESIRED_STOPPED,
        pb.SERVICE_SCHEDULER_INITIATED,
        HEALTH_CHECK_FAILED,
    )
    assert stopped.failed_health_check
    assert len(await said()) == 1, "said once"
