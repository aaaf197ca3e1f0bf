"""Text from the wire cannot forge log lines or drive the operator's terminal.

A control plane (no Docker): a hollow agent runs a task, StopTask gives it a
reason full of newlines, escape sequences and rich markup, and a fake agent
reports a status for a task id made of a forged log line. The CLI shows the
reason escaped on one line; the control plane's log keeps every event on one
line.
"""

from __future__ import annotations

import queue
import time
import unicodedata
from collections.abc import Iterator
from pathlib import Path

from berth.testing import members
from berth.testing.cli import Berth
from berth.testing.daemons import ControlPlaneProcess, HollowAgentsProcess
from berth.testing.waiting import wait_until
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import agent_pb2_grpc, operator_pb2_grpc
from berth.v1 import operator_pb2 as api
from berth.v1 import resources_pb2 as pb

REASON = "x\n level=error event=forged \x1b]0;title\x07 [bold]red"
SHOWN = "x\\n level=error event=forged \\x1b]0;title\\x07 [bold]red"  # as the CLI shows it
FORGED_TASK_ID = "t1\nts=1999-01-01T00:00:00.000Z level=error component=controlplane event=forged"


def controls(text: str) -> list[str]:
    return [c for c in text if unicodedata.category(c) == "Cc"]


def test_a_hostile_stop_reason_is_shown_escaped_on_one_line(
    plane: ControlPlaneProcess, hollow: HollowAgentsProcess, tmp_path: Path
) -> None:
    berth = Berth.of(plane)
    wait_until(lambda: berth.nodes_exactly(1), 15, "1 hollow node")
    berth.register("job", [{"name": "job", "image": "anything:1", "memory": 16}], tmp_path)
    task_id = berth.ok("task", "run", "--task-definition", "job").stdout.strip()

    with plane.admin_channel() as channel:
        operator_pb2_grpc.OperatorStub(channel).StopTask(
            api.StopTaskRequest(cluster="default", id=task_id, reason=REASON), timeout=10
        )
    # JSON keeps the data exact.
    described = berth.ok("task", "describe", task_id, "-o", "json").json()
    assert described["stoppedReason"] == REASON

    table = berth.ok("task", "list").stdout
    assert not controls(table.replace("\n", "")), repr(table)
    (row,) = [line for line in table.splitlines() if line.startswith(task_id[:12])]
    assert SHOWN in row
    assert len(table.splitlines()) == 2, table  # the header and this task's one row

    describe = berth.ok("task", "describe", task_id).stdout
    assert not controls(describe.replace("\n", "")), repr(describe)
    assert f"reason:           {SHOWN}" in describe.splitlines()

    log = plane.log_path.read_text()
    (line,) = [line for line in log.splitlines() if "event=task_stop_requested" in line]
    assert task_id in line and "\\x1b]0;title\\x07" in line
    assert not [line for line in log.splitlines() if line.startswith(" level=error")]


def _mentions(plane: ControlPlaneProcess, node_id: str) -> list[str]:
    """Log lines about the forged reports: their refusal, which quotes the start of the id."""
    return [
        line
        for line in plane.log_path.read_text().splitlines()
        if "event=agent_message_rejected" in line and node_id in line and r"t1\\nts=1999" in line
    ]


def test_a_forged_task_id_from_an_agent_stays_inside_one_log_line(plane: ControlPlaneProcess) -> None:
    # A genuine member of the cluster, speaking the wire itself.
    with members.join(plane, name="fake").channel(plane.address) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        node = stub.Register(
            agent_pb.RegisterRequest(
                name="fake", address="127.0.0.1", cpu_units=1024, memory_mib=1024, agent_version="test"
            ),
            timeout=10,
        )
        outbox: queue.Queue[agent_pb.AgentMessage | None] = queue.Queue()
        outbox.put(agent_pb.AgentMessage(hello=agent_pb.Hello(node_id=node.node_id)))
        for _ in range(5):
            report = agent_pb.TaskStatusReport(task_id=FORGED_TASK_ID, last_status=pb.RUNNING)
            outbox.put(agent_pb.AgentMessage(status=report))

        def messages() -> Iterator[agent_pb.AgentMessage]:
            while (message := outbox.get()) is not None:
                yield message

        call = stub.Connect(messages())
        try:
            # The control plane refuses the reports at its boundary (the id is no task id)
            # and logs each refusal with the start of the bad value; give it the time to.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not _mentions(plane, node.node_id):
                time.sleep(0.1)
        finally:
            outbox.put(None)
            call.cancel()  # type: ignore[no-untyped-call]

    lines = plane.log_path.read_text().splitlines()
    mentions = _mentions(plane, node.node_id)
    assert mentions, "the control plane logged nothing about the reports (or refused them silently)"
    assert not [line for line in lines if line.startswith("ts=1999")], "a forged log line"
    assert all(line.startswith("ts=2") for line in mentions)
    assert all(not controls(line) for line in lines)
