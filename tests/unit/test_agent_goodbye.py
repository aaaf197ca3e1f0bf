"""The agent's goodbye (agent.session): the last message of its stream, after its status reports."""

from __future__ import annotations

from agent.session import Outbox
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb


async def test_queued_status_reports_go_before_the_goodbye_then_nothing_else() -> None:
    outbox = Outbox()
    outbox.report(agent_pb.TaskStatusReport(task_id="t1", last_status=pb.STOPPED))
    await outbox.chunk(pb.LogChunk(request_id="r"))
    outbox.goodbye(agent_pb.Goodbye(restarting=True, expected_seconds=30))
    first = await outbox.next(0.1)
    second = await outbox.next(0.1)
    assert first is not None and first.WhichOneof("body") == "status"
    assert second is not None and second.WhichOneof("body") == "goodbye"
    assert second.goodbye.restarting and second.goodbye.expected_seconds == 30


async def test_a_goodbye_wakes_an_idle_stream_at_once() -> None:
    outbox = Outbox()
    outbox.goodbye(agent_pb.Goodbye(restarting=True))
    message = await outbox.next(30)  # does not wait for the timeout
    assert message is not None and message.HasField("goodbye")
