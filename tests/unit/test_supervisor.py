"""The task supervisor against the FakeDriver: the seam between the reconciler's plans and a runtime."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable

import pytest

from agent import supervisor as supervisor_module
from agent.runtime.driver import ObservedTask
from agent.runtime.fake import FakeDriver
from agent.supervisor import TaskSupervisor
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb


class CountingDriver(FakeDriver):
    """A FakeDriver that counts how often each node looked at its tasks."""

    def __init__(self, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.lists: Counter[str] = Counter()

    async def list_tasks(self, node_id: str) -> dict[str, ObservedTask]:
        self.lists[node_id] += 1
        return await super().list_tasks(node_id)


def assignment(
    task_id: str,
    last: pb.TaskStatus.ValueType = pb.PENDING,
    desired: pb.DesiredStatus.ValueType = pb.DESIRED_RUNNING,
    image: str = "web:1",
    port: int = 0,
) -> agent_pb.TaskAssignment:
    definition = pb.ContainerDefinition(name="web", image=image, essential=True)
    if port:
        definition.port_mappings.append(pb.PortMapping(container_port=port))
    return agent_pb.TaskAssignment(
        task_id=task_id,
        desired_status=desired,
        last_status=last,
        cluster="default",
        service="web",
        task_definition=pb.TaskDefinition(family="web", revision=1, container_definitions=[definition]),
    )


def snapshot(revision: int, *tasks: agent_pb.TaskAssignment) -> agent_pb.DesiredState:
    return agent_pb.DesiredState(revision=revision, tasks=tasks)


async def eventually(condition: Callable[[], bool], within: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


@pytest.fixture
async def running() -> AsyncIterator[Callable[[TaskSupervisor], None]]:
    """Runs supervisors in the background for the test's duration."""
    workers: list[asyncio.Task[None]] = []
    yield lambda supervisor: workers.append(asyncio.create_task(supervisor.run()))
    for worker in workers:
        worker.cancel()
    await asyncio.gather(*workers, return_exceptions=True)


def statuses(reports: list[agent_pb.TaskStatusReport], task_id: str) -> list[int]:
    return [r.last_status for r in reports if r.task_id == task_id]


# -- the change feed is per node (one FakeDriver shared, as hollow agents do) --


async def test_an_exit_wakes_the_supervisor_of_its_own_node_and_no_other(
    running: Callable[[TaskSupervisor], None],
) -> None:
    driver = CountingDriver()
    # A resync far beyond the test: only the change feed can wake a supervisor.
    a = TaskSupervisor(driver, "node-a", resync_interval=60.0)
    b = TaskSupervisor(driver, "node-b", resync_interval=60.0)
    reports: dict[str, list[agent_pb.TaskStatusReport]] = {"a": [], "b": []}
    a.attach(reports["a"].append)
    b.attach(reports["b"].append)
    a.set_desired(snapshot(1, assignment("task-a")))
    b.set_desired(snapshot(1, assignment("task-b")))
    running(a)
    running(b)
    await eventually(lambda: statuses(reports["a"], "task-a") == [pb.RUNNING])
    await eventually(lambda: statuses(reports["b"], "task-b") == [pb.RUNNING])
    await asyncio.sleep(0.05)  # let both loops go quiet
    looks_of_b = driver.lists["node-b"]

    driver.exit_task("task-a", 3)

    await eventually(lambda: statuses(reports["a"], "task-a") == [pb.RUNNING, pb.STOPPED], within=1.0)
    (stopped,) = [r for r in reports["a"] if r.last_status == pb.STOPPED]
    assert (stopped.has_exit_code, stopped.exit_code, stopped.stop_code) == (
        True,
        3,
        pb.ESSENTIAL_CONTAINER_EXITED,
    )
    await asyncio.sleep(0.05)
    assert driver.lists["node-b"] == looks_of_b, "node B was woken by node A's task"
    assert statuses(reports["b"], "task-b") == [pb.RUNNING]


async def test_a_supervisor_follows_its_node_once_registered_and_again_after_a_new_id(
    running: Callable[[TaskSupervisor], None],
) -> None:
    driver = FakeDriver()
    supervisor = TaskSupervisor(driver, "", resync_interval=60.0)
    reports: list[agent_pb.TaskStatusReport] = []
    supervisor.attach(reports.append)
    supervisor.set_desired(snapshot(1, assignment("t1")))
    running(supervisor)
    await asyncio.sleep(0.05)
    assert driver.started == [], "an unregistered agent cannot tell its containers from others'"

    supervisor.node_id = "node-old"
    await eventually(lambda: statuses(reports, "t1") == [pb.RUNNING])
    supervisor.node_id = "node-new"  # re-registered: the old node's record is gone
    supervisor.set_desired(snapshot(2, assignment("t2")))
    await eventually(lambda: statuses(reports, "t2") == [pb.RUNNING])
    await asyncio.sleep(0.05)

    driver.exit_task("t2", 0)

    await eventually(lambda: statuses(reports, "t2") == [pb.RUNNING, pb.STOPPED], within=1.0)


# -- the supervisor's duties, one at a time -----------------------------------


async def test_with_no_snapshot_yet_it_touches_nothing_and_reports_nothing(
    running: Callable[[TaskSupervisor], None],
) -> None:
    driver = FakeDriver()
    await driver.start_task(assignment("left-by-a-previous-agent"), "n1")
    supervisor = TaskSupervisor(driver, "n1", resync_interval=0.01)
    reports: list[agent_pb.TaskStatusReport] = []
    supervisor.attach(reports.append)
    running(supervisor)
    await asyncio.sleep(0.05)
    assert set(await driver.list_tasks("n1")) == {"left-by-a-previous-agent"}
    assert reports == []


async def test_it_starts_an_assigned_task_once_and_reports_it_running_with_its_ports(
    running: Callable[[TaskSupervisor], None],
) -> None:
    driver = FakeDriver(first_host_port=41000)
    supervisor = TaskSupervisor(driver, "n1", resync_interval=0.01)
    reports: list[agent_pb.TaskStatusReport] = []
    supervisor.attach(reports.append)
    supervisor.set_desired(snapshot(1, assignment("t1", port=8080)))
    running(supervisor)
    await eventually(lambda: statuses(reports, "t1") == [pb.RUNNING])
    await asyncio.sleep(0.05)  # many resyncs later, the snapshot still says PENDING
    assert driver.started == ["t1"]
    assert statuses(reports, "t1") == [pb.RUNNING], "one report per snapshot"
    (binding,) = reports[0].network_bindings
    assert (binding.container_port, binding.host_port) == (8080, 41000)

    supervisor.set_desired(snapshot(2, assignment("t1", port=8080)))  # still PENDING at revision 2
    await eventually(lambda: statuses(reports, "t1") == [pb.RUNNING, pb.RUNNING])
    assert driver.started == ["t1"]


async def test_it_adopts_what_is_running_instead_of_starting_a_duplicate(
    running: Callable[[TaskSupervisor], None],
) -> None:
    driver = FakeDriver()
    await driver.start_task(assignment("t1"), "n1")  # before the agent restarted
    supervisor = TaskSupervisor(driver, "n1", resync_interval=0.01)
    reports: list[agent_pb.TaskStatusReport] = []
    supervisor.attach(reports.append)
    supervisor.set_desired(snapshot(1, assignment("t1", last=pb.RUNNING), assignment("t2")))
    running(supervisor)
    await eventually(lambda: statuses(reports, "t2") == [pb.RUNNING])
    await asyncio.sleep(0.05)
    assert driver.started == ["t1", "t2"]
    assert statuses(reports, "t1") == [], "etcd already says RUNNING: nothing to report"


async def test_it_stops_a_task_desired_stopped_and_reports_why(
    running: Callable[[TaskSupervisor], None],
) -> None:
    driver = FakeDriver()
    supervisor = TaskSupervisor(driver, "n1", resync_interval=60.0)
    reports: list[agent_pb.TaskStatusReport] = []
    supervisor.attach(reports.append)
    supervisor.set_desired(snapshot(1, assignment("t1")))
    running(supervisor)
    await eventually(lambda: statuses(reports, "t1") == [pb.RUNNING])

    stopping = assignment("t1", last=pb.RUNNING, desired=pb.DESIRED_STOPPED)
    stopping.stop_code = pb.USER_INITIATED
    stopping.stopped_reason = "Scaled down"
    supervisor.set_desired(snapshot(2, stopping))

    await eventually(lambda: statuses(reports, "t1") == [pb.RUNNING, pb.STOPPED])
    stopped = reports[-1]
    assert (stopped.stop_code, stopped.stopped_reason, stopped.exit_code) == (
        pb.USER_INITIATED,
        "Scaled down",
        143,
    )
    assert not (await driver.list_tasks("n1"))["t1"].any_running


async def test_it_removes_a_task_the_snapshot_no_longer_holds(
    running: Callable[[TaskSupervisor], None],
) -> None:
    driver = FakeDriver()
    supervisor = TaskSupervisor(driver, "n1", resync_interval=60.0)
    supervisor.set_desired(snapshot(1, assignment("t1"), assignment("t2")))
    running(supervisor)
    await eventually(lambda: driver.started == ["t1", "t2"] or driver.started == ["t2", "t1"])
    supervisor.set_desired(snapshot(2, assignment("t2", last=pb.RUNNING)))
    await eventually(lambda: "t1" not in supervisor.observed and bool(supervisor.observed))
    assert set(await driver.list_tasks("n1")) == {"t2"}


async def test_a_task_that_cannot_start_is_reported_failed_and_not_retried(
    running: Callable[[TaskSupervisor], None],
) -> None:
    driver = FakeDriver(fail_images=frozenset({"missing:1"}))
    supervisor = TaskSupervisor(driver, "n1", resync_interval=0.01)
    reports: list[agent_pb.TaskStatusReport] = []
    supervisor.attach(reports.append)
    supervisor.set_desired(snapshot(1, assignment("t1", image="missing:1")))
    running(supervisor)
    await eventually(lambda: statuses(reports, "t1") == [pb.STOPPED])
    await asyncio.sleep(0.05)
    assert driver.started == [] and statuses(reports, "t1") == [pb.STOPPED]
    assert reports[0].stop_code == pb.TASK_FAILED_TO_START
    assert "CannotPullContainerError" in reports[0].stopped_reason


async def test_reports_made_with_no_session_are_sent_once_a_session_attaches(
    running: Callable[[TaskSupervisor], None],
) -> None:
    driver = FakeDriver()
    supervisor = TaskSupervisor(driver, "n1", resync_interval=60.0)
    supervisor.set_desired(snapshot(1, assignment("t1")))
    running(supervisor)
    await eventually(lambda: driver.started == ["t1"])
    await asyncio.sleep(0.02)  # its RUNNING report went nowhere
    reports: list[agent_pb.TaskStatusReport] = []
    supervisor.attach(reports.append)
    await eventually(lambda: statuses(reports, "t1") == [pb.RUNNING])
    supervisor.detach()
    driver.exit_task("t1", 1)
    await asyncio.sleep(0.05)
    assert statuses(reports, "t1") == [pb.RUNNING], "detached: nothing sent"


async def test_a_task_whose_containers_vanished_is_reported_stopped(
    running: Callable[[TaskSupervisor], None],
) -> None:
    driver = FakeDriver()
    supervisor = TaskSupervisor(driver, "n1", resync_interval=60.0)
    reports: list[agent_pb.TaskStatusReport] = []
    supervisor.attach(reports.append)
    supervisor.set_desired(snapshot(1, assignment("t1", last=pb.RUNNING)))  # nothing of it on this host
    running(supervisor)
    await eventually(lambda: statuses(reports, "t1") == [pb.STOPPED])
    assert reports[0].stop_code == pb.ESSENTIAL_CONTAINER_EXITED
    assert driver.started == []


# -- restartPolicy: a container restarted in place -----------------------------


async def test_a_container_is_restarted_in_place_until_it_exits_early(
    running: Callable[[TaskSupervisor], None],
) -> None:
    driver = FakeDriver()
    supervisor = TaskSupervisor(driver, node_id="n1")
    reports: list[agent_pb.TaskStatusReport] = []
    supervisor.attach(reports.append)
    task = assignment("t1")
    task.task_definition.container_definitions[0].restart_policy.CopyFrom(
        pb.RestartPolicy(enabled=True, ignored_exit_codes=[0], restart_attempt_period=60)
    )
    supervisor.set_desired(snapshot(1, task))
    running(supervisor)
    await eventually(lambda: statuses(reports, "t1") == [pb.RUNNING])
    task.last_status = pb.RUNNING
    supervisor.set_desired(snapshot(2, task))
    ((first,),) = [t.containers for t in (await driver.list_tasks("n1")).values()]

    driver.exit_task("t1", 1, ran_for=61)  # ran its period: restarted, same container, same task
    await eventually(lambda: supervisor.observed["t1"].containers[0].restart_count == 1)
    (again,) = supervisor.observed["t1"].containers
    assert again.runtime_id == first.runtime_id and again.phase.value == "running"
    assert driver.started == ["t1"]
    # Reported at once, in the same snapshot revision: the control plane records the restart.
    await eventually(lambda: any(c.restart_count == 1 for r in reports for c in r.containers))
    assert statuses(reports, "t1") == [pb.RUNNING, pb.RUNNING]

    driver.exit_task("t1", 1, ran_for=5)  # an early exit: not restarted, the task stops
    await eventually(lambda: pb.STOPPED in statuses(reports, "t1"))
    stopped = [r for r in reports if r.last_status == pb.STOPPED][-1]
    assert stopped.stop_code == pb.ESSENTIAL_CONTAINER_EXITED
    assert [(c.restart_count, c.exit_code) for c in stopped.containers] == [(1, 1)]
    assert driver.started == ["t1"]


class WaitingDriver(FakeDriver):
    """A FakeDriver whose starts wait (as on a dependency) until cancelled or released."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting: set[str] = set()
        self.cancelled: list[str] = []
        self.release = asyncio.Event()

    async def start_task(self, assignment: agent_pb.TaskAssignment, node_id: str) -> None:
        self.waiting.add(assignment.task_id)
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled.append(assignment.task_id)
            raise
        finally:
            self.waiting.discard(assignment.task_id)
        await super().start_task(assignment, node_id)


@pytest.mark.parametrize("dropped", [False, True])
async def test_a_stop_cancels_a_start_that_waits(
    running: Callable[[TaskSupervisor], None], dropped: bool
) -> None:
    """A user stop (or the task gone from the snapshot) does not wait for a waiting start."""
    driver = WaitingDriver()
    supervisor = TaskSupervisor(driver, "n1", resync_interval=60.0)
    reports: list[agent_pb.TaskStatusReport] = []
    supervisor.attach(reports.append)
    supervisor.set_desired(snapshot(1, assignment("t1"), assignment("t2")))
    running(supervisor)
    await eventually(lambda: driver.waiting == {"t1", "t2"})

    stopping = assignment("t1", desired=pb.DESIRED_STOPPED)
    stopping.stop_code = pb.USER_INITIATED
    stopping.stopped_reason = "Stopped by the user"
    supervisor.set_desired(
        snapshot(2, assignment("t2")) if dropped else snapshot(2, stopping, assignment("t2"))
    )

    await eventually(lambda: driver.cancelled == ["t1"])
    assert driver.waiting == {"t2"}, "the other task's start goes on"
    if not dropped:
        await eventually(lambda: statuses(reports, "t1") == [pb.STOPPED])
        assert (reports[-1].stop_code, reports[-1].stopped_reason) == (
            pb.USER_INITIATED,
            "Stopped by the user",
        )
    driver.release.set()
    await eventually(lambda: driver.started == ["t2"])
    assert "t1" not in await driver.list_tasks("n1")


async def test_a_report_not_yet_recorded_is_resent_once_per_newer_revision_and_not_faster(
    running: Callable[[TaskSupervisor], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervisor_module, "RESEND_AFTER", 0.3)
    supervisor = TaskSupervisor(FakeDriver(), "node-a", resync_interval=60.0)
    reports: list[agent_pb.TaskStatusReport] = []
    supervisor.attach(reports.append)
    supervisor.set_desired(snapshot(1, assignment("t1")))
    running(supervisor)
    await eventually(lambda: statuses(reports, "t1") == [pb.RUNNING])

    # A burst of deltas (other tasks placed) while etcd still records t1 PENDING: no resend each time.
    for revision in range(2, 12):
        supervisor.set_desired(snapshot(revision, assignment("t1"), assignment(f"other-{revision}")))
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert statuses(reports, "t1") == [pb.RUNNING], "resent at every revision of a burst"

    # Still not recorded after RESEND_AFTER: the next revision carries it again, once.
    await asyncio.sleep(0.3)
    supervisor.set_desired(snapshot(20, assignment("t1")))
    await eventually(lambda: statuses(reports, "t1") == [pb.RUNNING, pb.RUNNING])
    supervisor.wake()
    await asyncio.sleep(0.05)
    assert statuses(reports, "t1") == [pb.RUNNING, pb.RUNNING], "resent without a newer revision"

    # Recorded at last: nothing more.
    supervisor.set_desired(snapshot(21, assignment("t1", last=pb.RUNNING)))
    await asyncio.sleep(0.4)
    supervisor.set_desired(snapshot(22, assignment("t1", last=pb.RUNNING)))
    await asyncio.sleep(0.05)
    assert statuses(reports, "t1") == [pb.RUNNING, pb.RUNNING]
