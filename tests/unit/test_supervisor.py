"""The task supervisor against the FakeDriver: the seam between the reconciler's plans and a runtime."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable

import pytest

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
