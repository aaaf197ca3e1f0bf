"""`berth exec` without a network: the bounds (berth.execlimits), the checks at the operator
API (operations.execs) and of what agents send (agent_reports), the engine's frames split
(docker_exec.FrameSplitter), the audit target, and the whole relay in memory: control
plane router <-> the node's stream <-> the agent's ExecSessions over the FakeDriver."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import cast

import pytest

from agent.execs import MAX_PER_HOST, ExecSessions
from agent.runtime.docker_exec import FrameSplitter
from agent.runtime.driver import ExecSpec, ObservedTask
from agent.runtime.fake import FakeDriver, FakeExec
from berth import execlimits
from berth.errors import FailedPrecondition, InvalidArgument
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb
from controlplane.api.access import _opening, _result, _target
from controlplane.execs import AGENT_GONE, NO_ANSWER, RELAY_OUTPUTS, TOO_SLOW, ExecRouter
from controlplane.operations.execs import Execs, check_start, input_problem
from controlplane.operations.tasks import Tasks
from controlplane.registry import AgentRegistry
from controlplane.validation import agent_reports

TASK = "0123456789abcdef0123456789abcdef"
REQUEST = "fedcba9876543210fedcba9876543210"


# -- bounds and checks (pure) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "problem"),
    [
        ([], "give a command"),
        (["x"] * (execlimits.MAX_ARGS + 1), "arguments: at most"),
        (["a" * (execlimits.MAX_ARG_BYTES + 1)], "bytes long: at most"),
        (["sh", "-c", "a\x00b"], "NUL"),
        (["a" * 4000] * 20, "the command is"),
        ([""], "program"),
    ],
)
def test_commands_out_of_bounds_are_refused_in_words(command: list[str], problem: str) -> None:
    assert problem in execlimits.command_problem(command)


def test_commands_within_bounds_pass() -> None:
    assert execlimits.command_problem(["sh", "-c", "echo hi; exit 3"]) == ""
    assert execlimits.command_problem(["x"] * execlimits.MAX_ARGS) == ""


def start(**fields: object) -> pb.ExecInput:
    return pb.ExecInput(start=pb.ExecStart(**fields))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("first", "message"),
    [
        (None, "first message of an exec must be `start`"),
        (pb.ExecInput(stdin=b"x"), "first message of an exec must be `start`"),
        (start(task=TASK, command=["ls"], request_id=REQUEST), "request_id is the control plane's"),
        (start(task=TASK, command=["ls"], container="../etc"), "container must be"),
        (start(task=TASK, command=[]), "give a command"),
        (start(task=TASK, command=["ls"], size=pb.TerminalSize(rows=0, columns=80)), "terminal size"),
        (start(task=TASK, command=["ls"], size=pb.TerminalSize(rows=10**6, columns=80)), "terminal size"),
    ],
)
def test_bad_starts_are_refused_before_anything_happens(first: pb.ExecInput | None, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        check_start(first)


def test_later_inputs_are_checked_one_by_one() -> None:
    assert input_problem(pb.ExecInput(stdin=b"x" * execlimits.MAX_CHUNK), stdin_open=True) == ""
    assert "at most" in input_problem(pb.ExecInput(stdin=b"x" * (execlimits.MAX_CHUNK + 1)), True)
    assert "stdin was not opened" in input_problem(pb.ExecInput(stdin=b"x"), stdin_open=False)
    assert input_problem(pb.ExecInput(stdin_end=True), stdin_open=False) == ""
    assert input_problem(pb.ExecInput(resize=pb.TerminalSize(rows=40, columns=120)), False) == ""
    assert "terminal size" in input_problem(pb.ExecInput(resize=pb.TerminalSize(rows=40)), False)
    assert "not start" in input_problem(start(task=TASK, command=["ls"]), True)
    assert "not cancel" in input_problem(pb.ExecInput(cancel=True), True)
    assert "empty message" in input_problem(pb.ExecInput(), True)


def test_agent_outputs_are_checked_at_the_boundary() -> None:
    agent_reports.check_exec_output(pb.ExecOutput(request_id=REQUEST, stdout=b"x" * execlimits.MAX_CHUNK))
    agent_reports.check_exec_output(pb.ExecOutput(request_id=REQUEST, started="web"))
    agent_reports.check_exec_output(pb.ExecOutput(request_id=REQUEST, exit=pb.ExecExit(code=3)))
    bad = [
        (pb.ExecOutput(request_id="nope", stdout=b"x"), "request id"),
        (pb.ExecOutput(request_id=REQUEST), "must carry"),
        (pb.ExecOutput(request_id=REQUEST, stderr=b"x" * (execlimits.MAX_CHUNK + 1)), "at most"),
        (pb.ExecOutput(request_id=REQUEST, started="a b"), "started"),
        (pb.ExecOutput(request_id=REQUEST, exit=pb.ExecExit(error="e" * 100_000)), "exit.error"),
    ]
    for output, message in bad:
        with pytest.raises(InvalidArgument, match=message):
            agent_reports.check_exec_output(output)


def frame(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(data)) + data


def test_frames_are_split_however_the_bytes_arrive() -> None:
    wire = frame(1, b"out-1\n") + frame(2, b"err-1\n") + frame(0, b"echo") + frame(1, b"out-2")
    for step in (1, 3, 7, len(wire)):
        splitter = FrameSplitter()
        pieces: list[tuple[str, bytes]] = []
        for at in range(0, len(wire), step):
            pieces += splitter.feed(wire[at : at + step])
        joined: dict[str, bytes] = {"stdout": b"", "stderr": b""}
        for stream, data in pieces:
            joined[stream] += data
        assert joined == {"stdout": b"out-1\nout-2", "stderr": b"err-1\n"}, step


def test_a_big_frame_comes_out_in_bounded_pieces() -> None:
    data = bytes(range(256)) * 1000
    pieces = FrameSplitter().feed(frame(1, data))
    assert all(len(piece) <= execlimits.MAX_CHUNK for _, piece in pieces)
    assert b"".join(piece for _, piece in pieces) == data


def test_the_audit_names_task_container_and_command_and_the_result_the_exit_code() -> None:
    first = start(cluster="prod", task=TASK, container="web", command=["sh", "-c", "echo 'hi there'; exit 3"])
    subject = _opening(first)
    assert subject is first.start
    assert _target(subject) == (
        f"cluster=prod task={TASK} container=web command=sh -c 'echo '\"'\"'hi there'\"'\"'; exit 3'"
    )
    assert _result(pb.ExecOutput(exit=pb.ExecExit(code=3))) == ": exit code 3"
    assert _result(pb.ExecOutput(exit=pb.ExecExit(code=-1, error="gone"))) == ": gone"
    assert _result(pb.ExecOutput(stdout=b"x")) == ""
    assert _result(pb.LogChunk()) == ""


# -- the relay in memory ---------------------------------------------------------------


def assignment() -> agent_pb.TaskAssignment:
    return agent_pb.TaskAssignment(
        task_id=TASK,
        desired_status=pb.DESIRED_RUNNING,
        cluster="default",
        task_definition=pb.TaskDefinition(
            family="job",
            revision=1,
            container_definitions=[pb.ContainerDefinition(name="web", image="busybox", essential=True)],
        ),
    )


class Wire:
    """A node's stream in memory: what the router sends reaches the agent's ExecSessions at once,
    and what they send up reaches the router (as the node's own session)."""

    def __init__(self, driver: FakeDriver, observed: dict[str, ObservedTask]) -> None:
        self.agents = AgentRegistry()
        self.session = self.agents.connected("node-1")
        self.router = ExecRouter(self.agents)
        self.down: list[pb.ExecInput] = []

        async def send(output: pb.ExecOutput) -> None:
            self.router.deliver(self.session, output)

        self.execs = ExecSessions(driver, lambda: observed, lambda _: assignment(), send)
        self.session.wake = self.pump

    def pump(self) -> None:
        while self.session.requests:
            message = self.session.requests.popleft()
            self.down.append(message.exec_input)
            self.execs.handle(message)
        self.session.drained.set()


class FoundTasks:
    def __init__(self, task: pb.Task) -> None:
        self.task = task

    async def find(self, cluster: str, ref: str) -> tuple[pb.Task, int]:
        return self.task, 1


async def wired(status: pb.TaskStatus.ValueType = pb.RUNNING) -> tuple[Wire, Execs, FakeDriver]:
    driver = FakeDriver()
    await driver.start_task(assignment(), "node-1")
    wire = Wire(driver, await driver.list_tasks("node-1"))
    task = pb.Task(id=TASK, cluster="default", node_id="node-1", last_status=status)
    return wire, Execs(cast(Tasks, FoundTasks(task)), wire.router), driver


async def messages(*given: pb.ExecInput, hold: asyncio.Event | None = None) -> AsyncIterator[pb.ExecInput]:
    for message in given:
        yield message
    if hold is not None:
        await hold.wait()


async def collect(outputs: AsyncIterator[pb.ExecOutput]) -> list[pb.ExecOutput]:
    return [output async for output in outputs]


def stdout(outputs: list[pb.ExecOutput]) -> bytes:
    return b"".join(o.stdout for o in outputs)


async def test_a_command_runs_and_its_output_and_exit_code_come_back() -> None:
    wire, execs, driver = await wired()
    outputs = await collect(execs.run(messages(start(task=TASK[:8], command=["echo", "hi"]))))
    assert outputs[0].started == "web"
    assert stdout(outputs) == b"hi\n"
    assert outputs[-1].HasField("exit") and outputs[-1].exit.code == 0 and not outputs[-1].exit.error
    assert all(not o.request_id for o in outputs)  # ids are the relay's business
    # The agent was given the full task id and a fresh request id.
    assert wire.down[0].start.task == TASK and len(wire.down[0].request_id) == 32
    assert driver.execs[0].command == ("echo", "hi") and not driver.execs[0].stdin
    assert wire.router.open_requests() == 0
    await eventually(lambda: wire.execs.active() == 0)


async def test_exit_codes_and_stderr_come_back() -> None:
    _, execs, _ = await wired()
    outputs = await collect(execs.run(messages(start(task=TASK, command=["exit", "3"]))))
    assert outputs[-1].exit.code == 3
    outputs = await collect(execs.run(messages(start(task=TASK, command=["nope"]))))
    assert b"".join(o.stderr for o in outputs) == b"nope: not found\n" and outputs[-1].exit.code == 127


async def test_stdin_is_forwarded_and_ends_when_the_caller_closes_its_side() -> None:
    wire, execs, _ = await wired()
    given = messages(
        start(task=TASK, command=["cat"], stdin=True),
        pb.ExecInput(stdin=b"one\n"),
        pb.ExecInput(resize=pb.TerminalSize(rows=30, columns=100)),
        pb.ExecInput(stdin=b"two\n"),
    )
    outputs = await asyncio.wait_for(collect(execs.run(given)), 5)
    assert stdout(outputs) == b"one\ntwo\n" and outputs[-1].exit.code == 0
    assert [m.WhichOneof("body") for m in wire.down][-1] == "stdin_end"


async def test_a_bad_input_ends_the_command_with_why_and_cancels_the_agents_side() -> None:
    wire, execs, _ = await wired()
    given = messages(start(task=TASK, command=["cat"]), pb.ExecInput(stdin=b"not asked for"))
    outputs = await asyncio.wait_for(collect(execs.run(given)), 5)
    assert "stdin was not opened" in outputs[-1].exit.error
    assert wire.down[-1].cancel
    await eventually(lambda: wire.execs.active() == 0)


async def test_a_task_not_running_is_refused_before_the_agent_hears_of_it() -> None:
    wire, execs, _ = await wired(status=pb.STOPPED)
    with pytest.raises(FailedPrecondition, match="is STOPPED: exec needs a RUNNING task"):
        await collect(execs.run(messages(start(task=TASK, command=["ls"]))))
    assert wire.down == []


async def test_a_node_without_a_stream_here_is_refused_in_one_line() -> None:
    router = ExecRouter(AgentRegistry())
    with pytest.raises(FailedPrecondition, match="holds no stream to this control-plane replica"):
        router.open("node-1", pb.ExecStart(task=TASK, command=["ls"]))


async def test_a_caller_going_away_cancels_the_command_on_the_agent() -> None:
    wire, execs, _ = await wired()
    hold = asyncio.Event()
    outputs = cast(
        AsyncGenerator[pb.ExecOutput],
        execs.run(messages(start(task=TASK, command=["cat"], stdin=True), hold=hold)),
    )
    first = await anext(outputs)
    assert first.started == "web"
    await outputs.aclose()
    assert wire.down[-1].cancel and wire.router.open_requests() == 0
    await eventually(lambda: wire.execs.active() == 0)


async def test_an_agent_going_away_ends_the_relay_and_another_agent_cannot_answer() -> None:
    wire, _, _ = await wired()
    relay = wire.router.open("node-1", pb.ExecStart(task=TASK, command=["cat"], stdin=True))
    intruder = wire.agents.connected("node-2")
    wire.router.deliver(intruder, pb.ExecOutput(request_id=relay.request_id, exit=pb.ExecExit(code=0)))
    assert not relay.ended
    wire.router.disconnected(wire.session)
    outputs = await collect(relay.outputs())
    assert outputs[-1].exit.error == AGENT_GONE


async def test_a_silent_agent_and_a_slow_caller_end_the_relay_with_why() -> None:
    agents = AgentRegistry()
    session = agents.connected("node-1")
    router = ExecRouter(agents)
    silent = router.open("node-1", pb.ExecStart(task=TASK, command=["ls"]))
    assert [o.exit.error async for o in silent.outputs(answer_within=0.01)] == [NO_ANSWER]
    slow = router.open("node-1", pb.ExecStart(task=TASK, command=["yes"]))
    for _ in range(RELAY_OUTPUTS + 1):
        router.deliver(session, pb.ExecOutput(request_id=slow.request_id, stdout=b"y\n"))
    outputs = await collect(slow.outputs())
    assert outputs[-1].exit.error == TOO_SLOW and len(outputs) == RELAY_OUTPUTS + 1
    assert session.requests[-1].exec_input.cancel


async def test_commands_beyond_the_hosts_limit_are_refused_in_their_exit() -> None:
    driver = FakeDriver()
    await driver.start_task(assignment(), "node-1")
    sent: list[pb.ExecOutput] = []

    async def send(output: pb.ExecOutput) -> None:
        sent.append(output)

    observed = await driver.list_tasks("node-1")
    execs = ExecSessions(driver, lambda: observed, lambda _: assignment(), send)
    for index in range(MAX_PER_HOST + 1):
        request = f"{index:032x}"
        execs.handle(
            agent_pb.ControlMessage(
                exec_input=pb.ExecInput(
                    request_id=request, start=pb.ExecStart(task=TASK, command=["cat"], stdin=True)
                )
            )
        )
    await eventually(lambda: any(o.HasField("exit") for o in sent))
    (refused,) = [o for o in sent if o.HasField("exit")]
    assert refused.request_id == f"{MAX_PER_HOST:032x}" and "already runs" in refused.exit.error
    await execs.close()
    assert execs.active() == 0


async def test_the_agent_refuses_an_unknown_task_and_a_bad_command_itself() -> None:
    driver = FakeDriver()
    sent: list[pb.ExecOutput] = []

    async def send(output: pb.ExecOutput) -> None:
        sent.append(output)

    execs = ExecSessions(driver, lambda: {}, lambda _: None, send)
    for request, command in ((REQUEST, ["ls"]), (TASK, ["a\x00"])):
        execs.handle(
            agent_pb.ControlMessage(
                exec_input=pb.ExecInput(request_id=request, start=pb.ExecStart(task=TASK, command=command))
            )
        )
    await eventually(lambda: len(sent) == 2)
    errors = {o.request_id: o.exit.error for o in sent}
    assert "no containers on this host" in errors[REQUEST] and "NUL" in errors[TASK]


async def test_the_fake_exec_records_window_sizes_and_closing() -> None:
    driver = FakeDriver()
    await driver.start_task(assignment(), "node-1")
    (observed,) = (await driver.list_tasks("node-1")).values()
    process = await driver.exec(observed.containers[0].runtime_id, ExecSpec(("cat",), tty=True, stdin=True))
    assert isinstance(process, FakeExec)
    await process.resize(24, 80)
    await process.close()
    assert process.sizes == [(24, 80)] and process.closed


async def test_a_command_cancelled_while_it_starts_is_closed_once_started() -> None:
    class SlowDriver(FakeDriver):
        def __init__(self) -> None:
            super().__init__()
            self.release = asyncio.Event()
            self.process: FakeExec | None = None

        async def exec(self, runtime_id: str, spec: ExecSpec) -> FakeExec:
            await self.release.wait()
            self.process = await super().exec(runtime_id, spec)
            return self.process

    driver = SlowDriver()
    await driver.start_task(assignment(), "node-1")
    observed = await driver.list_tasks("node-1")

    async def send(output: pb.ExecOutput) -> None:
        return None

    execs = ExecSessions(driver, lambda: observed, lambda _: assignment(), send)
    start = pb.ExecStart(task=TASK, command=["cat"], stdin=True)
    execs.handle(agent_pb.ControlMessage(exec_input=pb.ExecInput(request_id=REQUEST, start=start)))
    await asyncio.sleep(0.01)
    execs.handle(agent_pb.ControlMessage(exec_input=pb.ExecInput(request_id=REQUEST, cancel=True)))
    await eventually(lambda: execs.active() == 0)
    driver.release.set()
    await eventually(lambda: driver.process is not None and driver.process.closed)


async def eventually(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)
