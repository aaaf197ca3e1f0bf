"""Routing agents' log chunks to readers (controlplane.logs), kept output on the task
record (controlplane.lifecycle) and the kept chunk `berth logs` shows (operations.logs)."""

from __future__ import annotations

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from berth.errors import FailedPrecondition, InvalidArgument
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import operator_pb2 as api
from berth.v1 import resources_pb2 as pb
from controlplane import lifecycle
from controlplane.logs import AGENT_GONE, NO_ANSWER, READER_CHUNKS, TOO_SLOW, LogReader, LogRouter
from controlplane.operations.logs import check_request, kept_chunk
from controlplane.registry import AgentRegistry, AgentSession

TASK_ID = "0123456789abcdef0123456789abcdef"


def sent(session: AgentSession) -> list[agent_pb.ControlMessage]:
    messages = list(session.requests)
    session.requests.clear()
    return messages


async def drain(reader: LogReader) -> list[pb.LogChunk]:
    return [chunk async for chunk in reader.chunks()]


def test_a_node_without_a_stream_here_is_refused_in_one_line() -> None:
    router = LogRouter(AgentRegistry())
    with pytest.raises(FailedPrecondition, match="holds no stream to this control-plane replica"):
        router.open("node-1", agent_pb.LogRequest(task_id=TASK_ID))


async def test_a_request_goes_down_the_stream_and_its_chunks_come_back_in_order() -> None:
    agents = AgentRegistry()
    session = agents.connected("node-1")
    woken = []
    session.wake = lambda: woken.append(True)
    router = LogRouter(agents)
    reader = router.open("node-1", agent_pb.LogRequest(task_id=TASK_ID, follow=True, tail=5))
    (message,) = sent(session)
    assert woken and message.log_request.task_id == TASK_ID and message.log_request.tail == 5
    request_id = message.log_request.request_id
    assert len(request_id) == 32 and request_id == reader.request_id
    router.deliver(session, pb.LogChunk(request_id=request_id, lines=["one"]))
    # Another node's agent cannot answer (or end) this request.
    intruder = agents.connected("node-2")
    router.deliver(intruder, pb.LogChunk(request_id=request_id, lines=["forged"], end=True))
    router.deliver(session, pb.LogChunk(request_id=request_id, lines=["two"]))
    router.deliver(session, pb.LogChunk(request_id=request_id, end=True))
    chunks = await drain(reader)
    assert [list(c.lines) for c in chunks] == [["one"], ["two"], []]
    assert chunks[-1].end and router.open_requests() == 0
    router.close(reader)
    assert sent(session) == []  # it ended by itself: nothing to cancel


async def test_a_reader_slower_than_the_output_is_ended_and_the_agent_told_to_stop() -> None:
    agents = AgentRegistry()
    session = agents.connected("node-1")
    router = LogRouter(agents)
    reader = router.open("node-1", agent_pb.LogRequest(task_id=TASK_ID, follow=True))
    sent(session)
    for i in range(READER_CHUNKS + 10):
        router.deliver(session, pb.LogChunk(request_id=reader.request_id, lines=[str(i)]))
    (cancel,) = sent(session)
    assert cancel.log_cancel.request_id == reader.request_id
    chunks = await drain(reader)
    assert len(chunks) == READER_CHUNKS + 1
    assert chunks[-1].end and chunks[-1].error == TOO_SLOW


async def test_a_reader_that_goes_away_cancels_the_agents_side() -> None:
    agents = AgentRegistry()
    session = agents.connected("node-1")
    router = LogRouter(agents)
    reader = router.open("node-1", agent_pb.LogRequest(task_id=TASK_ID, follow=True))
    sent(session)
    router.close(reader)
    (cancel,) = sent(session)
    assert cancel.log_cancel.request_id == reader.request_id
    router.deliver(session, pb.LogChunk(request_id=reader.request_id, lines=["late"]))
    assert reader.queue.empty() and router.open_requests() == 0


async def test_readers_end_with_a_message_when_the_agent_disconnects() -> None:
    agents = AgentRegistry()
    session = agents.connected("node-1")
    router = LogRouter(agents)
    reader = router.open("node-1", agent_pb.LogRequest(task_id=TASK_ID, follow=True))
    router.disconnected(session)
    (chunk,) = await drain(reader)
    assert chunk.end and chunk.error == AGENT_GONE and chunk.task_id == TASK_ID


def running_task() -> pb.Task:
    return pb.Task(id=TASK_ID, node_id="node-1", last_status=pb.RUNNING, desired_status=pb.DESIRED_RUNNING)


def test_a_stopped_report_keeps_its_last_lines_on_the_task() -> None:
    kept = pb.KeptOutput(container="web", lines=["boom"], truncated=True)
    report = agent_pb.TaskStatusReport(
        task_id=TASK_ID, last_status=pb.STOPPED, has_exit_code=True, exit_code=3, kept_output=kept
    )
    updated = lifecycle.apply_report(running_task(), "node-1", report)
    assert updated is not None and updated.kept_output == kept
    # A report without them leaves the field unset.
    bare = agent_pb.TaskStatusReport(task_id=TASK_ID, last_status=pb.STOPPED)
    updated = lifecycle.apply_report(running_task(), "node-1", bare)
    assert updated is not None and not updated.HasField("kept_output")


def stopped_task(lines: list[str], stopped_at: int = 1000) -> pb.Task:
    return pb.Task(
        id=TASK_ID,
        last_status=pb.STOPPED,
        stopped_at=Timestamp(seconds=stopped_at),
        kept_output=pb.KeptOutput(container="web", lines=lines),
    )


@pytest.mark.parametrize(
    ("request_", "lines"),
    [
        (api.StreamLogsRequest(task=TASK_ID), ["a", "b", "c"]),
        (api.StreamLogsRequest(task=TASK_ID, tail=2), ["b", "c"]),
        (api.StreamLogsRequest(task=TASK_ID, tail=10), ["a", "b", "c"]),
        (api.StreamLogsRequest(task=TASK_ID, since=Timestamp(seconds=999)), ["a", "b", "c"]),
        # Everything kept was written before the task stopped, so before a later --since.
        (api.StreamLogsRequest(task=TASK_ID, since=Timestamp(seconds=1001)), []),
    ],
)
def test_kept_chunk(request_: api.StreamLogsRequest, lines: list[str]) -> None:
    chunk = kept_chunk(stopped_task(["a", "b", "c"]), request_)
    assert list(chunk.lines) == lines
    assert chunk.kept and chunk.end and chunk.container == "web" and chunk.task_id == TASK_ID


@pytest.mark.parametrize(
    ("request_", "complaint"),
    [
        (api.StreamLogsRequest(), "a task id or a service"),
        (api.StreamLogsRequest(task=TASK_ID, service="web"), "not both"),
        (api.StreamLogsRequest(task=TASK_ID, container="a b"), "container"),
        (api.StreamLogsRequest(task=TASK_ID, tail=10**9), "tail"),
        (api.StreamLogsRequest(task=TASK_ID, since=Timestamp(seconds=10**12)), "since"),
    ],
)
def test_bad_requests_are_refused(request_: api.StreamLogsRequest, complaint: str) -> None:
    with pytest.raises(InvalidArgument, match=complaint):
        check_request(request_)


async def test_an_agent_that_never_answers_ends_the_reader_with_a_message() -> None:
    agents = AgentRegistry()
    agents.connected("node-1")
    router = LogRouter(agents)
    reader = router.open("node-1", agent_pb.LogRequest(task_id=TASK_ID, follow=True))
    chunks = [chunk async for chunk in reader.chunks(answer_within=0.05)]
    assert len(chunks) == 1 and chunks[0].end and chunks[0].error == NO_ANSWER
