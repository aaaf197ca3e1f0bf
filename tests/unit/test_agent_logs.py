"""The agent's side of logs (agent.logs, agent.session.Outbox) against the FakeDriver:
which container answers, streaming and cancelling, the stream limit, and the last
lines a STOPPED report carries."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from agent import logs
from agent.runtime.driver import ContainerPhase, LogQuery, ObservedContainer, ObservedTask
from agent.runtime.fake import FakeDriver, started_line
from agent.session import Outbox
from agent.supervisor import TaskSupervisor
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb

TASK = "0123456789abcdef0123456789abcdef"
REQUEST = "fedcba9876543210fedcba9876543210"


def assignment(
    *containers: tuple[str, bool], last: pb.TaskStatus.ValueType = pb.PENDING
) -> agent_pb.TaskAssignment:
    return agent_pb.TaskAssignment(
        task_id=TASK,
        desired_status=pb.DESIRED_RUNNING,
        last_status=last,
        cluster="default",
        task_definition=pb.TaskDefinition(
            family="job",
            revision=1,
            container_definitions=[
                pb.ContainerDefinition(name=name, image="busybox", essential=essential)
                for name, essential in containers
            ],
        ),
    )


def container(name: str, essential: bool = True, exit_code: int | None = None) -> ObservedContainer:
    phase = ContainerPhase.RUNNING if exit_code is None else ContainerPhase.EXITED
    return ObservedContainer(name, f"id-{name}", phase, essential, exit_code=exit_code)


async def eventually(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def test_pick_container() -> None:
    a = assignment(("side", False), ("main", True), ("other", True))
    observed = ObservedTask(TASK, (container("other"), container("side", False), container("main")))
    # Default: the first essential container in task definition order.
    assert logs.pick_container(observed, a, "") == container("main")
    assert logs.pick_container(observed, a, "side") == container("side", False)
    missing = logs.pick_container(observed, a, "nope")
    assert isinstance(missing, str) and "no container named 'nope'" in missing and "main" in missing
    assert isinstance(logs.pick_container(None, a, ""), str)
    # Without the assignment (a snapshot lost it): by name.
    assert logs.pick_container(observed, None, "") == container("main")


def test_kept_container_prefers_the_essential_container_that_failed() -> None:
    a = assignment(("first", True), ("second", True), ("side", False))
    cases = [
        ((container("first", exit_code=143), container("second", exit_code=2)), "second"),
        ((container("first", exit_code=0), container("second", exit_code=0)), "first"),
        ((container("first"), container("side", False, exit_code=1)), "first"),
        ((container("side", False, exit_code=1), container("second", exit_code=0)), "second"),
    ]
    for containers, expected in cases:
        chosen = logs.kept_container(ObservedTask(TASK, containers), a)
        assert chosen is not None and chosen.name == expected, containers
    assert logs.kept_container(None, a) is None


async def started_driver(*containers: tuple[str, bool]) -> FakeDriver:
    driver = FakeDriver()
    await driver.start_task(assignment(*containers), "node-1")
    return driver


def streams_for(driver: FakeDriver, sent: list[pb.LogChunk]) -> logs.LogStreams:
    async def send(chunk: pb.LogChunk) -> None:
        sent.append(chunk)

    async def observed() -> dict[str, ObservedTask]:
        return await driver.list_tasks("node-1")

    snapshot: dict[str, ObservedTask] = {}
    streams = logs.LogStreams(driver, lambda: snapshot, lambda _: None, send)
    streams.snapshot = snapshot  # type: ignore[attr-defined]
    return streams


async def test_a_request_is_answered_with_the_output_and_an_end() -> None:
    driver = await started_driver(("web", True))
    for i in range(3):
        driver.write(TASK, f"line {i}")
    sent: list[pb.LogChunk] = []
    streams = streams_for(driver, sent)
    streams.snapshot.update(await driver.list_tasks("node-1"))  # type: ignore[attr-defined]
    streams.handle(
        agent_pb.ControlMessage(log_request=agent_pb.LogRequest(request_id=REQUEST, task_id=TASK, tail=2))
    )
    await eventually(lambda: bool(sent) and sent[-1].end)
    assert [line for c in sent for line in c.lines] == ["line 1", "line 2"]
    assert all(c.request_id == REQUEST and c.task_id == TASK and c.container == "web" for c in sent)
    assert sent[-1].error == "" and streams.active() == 0


async def test_a_follower_gets_new_lines_until_the_container_exits() -> None:
    driver = await started_driver(("web", True))
    sent: list[pb.LogChunk] = []
    streams = streams_for(driver, sent)
    streams.snapshot.update(await driver.list_tasks("node-1"))  # type: ignore[attr-defined]
    streams.start(agent_pb.LogRequest(request_id=REQUEST, task_id=TASK, follow=True))
    # First an empty chunk (answering), then the output so far.
    await eventually(lambda: len(sent) == 2)
    assert not sent[0].lines and not sent[0].end and sent[0].container == "web"
    driver.write(TASK, "later")
    await eventually(lambda: len(sent) == 3)
    assert list(sent[2].lines) == ["later"] and not sent[2].end
    driver.exit_task(TASK, 1)
    await eventually(lambda: bool(sent) and sent[-1].end)
    assert [line for c in sent for line in c.lines] == [started_line("web", TASK), "later"]


async def test_a_cancelled_follower_stops_and_a_closed_stream_stops_them_all() -> None:
    driver = await started_driver(("web", True))
    sent: list[pb.LogChunk] = []
    streams = streams_for(driver, sent)
    streams.snapshot.update(await driver.list_tasks("node-1"))  # type: ignore[attr-defined]
    streams.start(agent_pb.LogRequest(request_id=REQUEST, task_id=TASK, follow=True))
    other = "ab" * 16
    streams.start(agent_pb.LogRequest(request_id=other, task_id=TASK, follow=True))
    await eventually(lambda: len(sent) == 4 and streams.active() == 2)
    streams.handle(agent_pb.ControlMessage(log_cancel=agent_pb.LogCancel(request_id=REQUEST)))
    await eventually(lambda: streams.active() == 1)
    await streams.close()
    assert streams.active() == 0


async def test_requests_beyond_the_limit_are_refused_in_one_chunk() -> None:
    driver = await started_driver(("web", True))
    sent: list[pb.LogChunk] = []
    streams = streams_for(driver, sent)
    streams.snapshot.update(await driver.list_tasks("node-1"))  # type: ignore[attr-defined]
    for i in range(logs.MAX_STREAMS):
        streams.start(agent_pb.LogRequest(request_id=f"{i:032x}", task_id=TASK, follow=True))
    streams.start(agent_pb.LogRequest(request_id=REQUEST, task_id=TASK, follow=True))
    await eventually(lambda: any(c.request_id == REQUEST for c in sent))
    (refusal,) = [c for c in sent if c.request_id == REQUEST]
    assert refusal.end and "already streams" in refusal.error
    await streams.close()


async def test_an_unknown_task_is_answered_with_an_error() -> None:
    sent: list[pb.LogChunk] = []
    streams = streams_for(FakeDriver(), sent)
    streams.start(agent_pb.LogRequest(request_id=REQUEST, task_id=TASK))
    await eventually(lambda: bool(sent))
    assert sent[0].end and "no containers on this host" in sent[0].error


async def test_the_fake_driver_reads_a_removed_container_as_unavailable() -> None:
    driver = await started_driver(("web", True))
    await driver.remove_task(TASK)
    try:
        async for _ in driver.container_logs("id-web", LogQuery()):
            pass
    except Exception as error:
        assert "no such container" in str(error)
    else:
        raise AssertionError("reading a removed container should fail")


async def test_a_stopped_report_carries_the_failed_containers_last_lines() -> None:
    driver = FakeDriver()
    supervisor = TaskSupervisor(driver, "node-1", resync_interval=0.05)
    reports: list[agent_pb.TaskStatusReport] = []
    supervisor.attach(reports.append)
    a = assignment(("web", True))
    supervisor.set_desired(agent_pb.DesiredState(revision=1, tasks=[a]))
    await supervisor.reconcile_once()
    await eventually(lambda: TASK in driver.started)
    for i in range(30):
        driver.write(TASK, f"line {i}")
    driver.exit_task(TASK, 3)
    running = agent_pb.TaskAssignment()
    running.CopyFrom(a)
    running.last_status = pb.RUNNING
    supervisor.set_desired(agent_pb.DesiredState(revision=2, tasks=[running]))
    await supervisor.reconcile_once()
    stopped = [r for r in reports if r.last_status == pb.STOPPED]
    assert len(stopped) == 1 and stopped[0].exit_code == 3
    kept = stopped[0].kept_output
    assert kept.container == "web" and kept.truncated
    assert list(kept.lines) == [f"line {i}" for i in range(10, 30)]


async def test_outbox_sends_reports_before_log_chunks() -> None:
    outbox = Outbox()
    await outbox.chunk(pb.LogChunk(request_id=REQUEST, lines=["x"]))
    outbox.report(agent_pb.TaskStatusReport(task_id=TASK))
    first, second = await outbox.next(1.0), await outbox.next(1.0)
    assert first is not None and first.HasField("status")
    assert second is not None and second.HasField("log_chunk")
    assert await outbox.next(0.01) is None
