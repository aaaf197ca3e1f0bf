"""A node relays custom metrics only for its own tasks: two fake nodes speak the agent API
directly (no Docker); the task's own node is believed, the other is dropped and counted, and
the stream goes on."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator

import grpc
import pytest

from berth.testing.cli import Berth, id_of, node_of
from berth.testing.daemons import ControlPlaneProcess
from berth.testing.members import Member, join
from berth.testing.waiting import wait_until
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import agent_pb2_grpc
from berth.v1 import resources_pb2 as pb


class FakeNode:
    """A joined node holding its stream: hello, heartbeats, and whatever the test sends."""

    def __init__(self, plane: ControlPlaneProcess, member: Member) -> None:
        self.member = member
        self.outbox: queue.Queue[agent_pb.AgentMessage | None] = queue.Queue()
        self._channel = member.channel(plane.address)
        stub = agent_pb2_grpc.AgentServiceStub(self._channel)
        stub.Register(
            agent_pb.RegisterRequest(
                name=member.name, address="127.0.0.1", cpu_units=4096, memory_mib=4096, agent_version="test"
            ),
            timeout=10,
        )
        self.outbox.put(agent_pb.AgentMessage(hello=agent_pb.Hello(node_id=member.name)))
        self._call = stub.Connect(iter(self.outbox.get, None))
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._read, daemon=True),
            threading.Thread(target=self._beat),
        ]
        for thread in self._threads:
            thread.start()

    def _read(self) -> None:
        try:
            for _ in self._call:
                pass
        except grpc.RpcError:
            pass

    def _beat(self) -> None:
        while not self._stop.wait(1.0):
            self.outbox.put(agent_pb.AgentMessage(heartbeat=agent_pb.Heartbeat()))

    def close(self) -> None:
        self._stop.set()
        self.outbox.put(None)
        self._call.cancel()  # type: ignore[no-untyped-call]
        for thread in self._threads:
            thread.join(timeout=5)
        self._channel.close()


@pytest.fixture()
def nodes(plane: ControlPlaneProcess) -> Iterator[list[FakeNode]]:
    made = [FakeNode(plane, join(plane, name)) for name in ("node-a", "node-b")]
    yield made
    for node in made:
        node.close()


def test_only_the_tasks_own_node_is_believed(plane: ControlPlaneProcess, nodes: list[FakeNode]) -> None:
    berth = Berth.of(plane)
    wait_until(lambda: berth.nodes_exactly(2), 20, "both fake nodes registered")
    container = {"name": "app", "image": "berth-busybox:2", "memory": 16, "essential": True}
    berth.ok("taskdef", "register", "--family", "app", "--container-definitions", json.dumps([container]))
    berth.ok("service", "create", "--name", "app", "--task-definition", "app", "--desired-count", "1")
    placed, _ = wait_until(
        lambda: [t for t in berth.tasks("default", "app") if node_of(t)] or None, 30, "the task placed"
    )
    task = placed[0]
    owner = next(n for n in nodes if n.member.name == node_of(task))
    other = next(n for n in nodes if n is not owner)

    def put(node: FakeNode, value: float) -> None:
        node.outbox.put(
            agent_pb.AgentMessage(metric_put=agent_pb.MetricPut(task_id=id_of(task), name="rps", value=value))
        )

    put(owner, 5.0)  # still PENDING: dropped
    owner.outbox.put(
        agent_pb.AgentMessage(status=agent_pb.TaskStatusReport(task_id=id_of(task), last_status=pb.RUNNING))
    )
    wait_until(lambda: berth.running_exactly("default", 1, "app"), 30, "the task RUNNING")
    put(other, 999.0)
    put(owner, float("nan"))
    put(owner, 7.0)

    def listed() -> list[tuple[str, float]] | None:
        found = berth.ok("metric", "list", "app", "-o", "json").json()["metrics"]
        return [(m.get("taskId", ""), m["value"]) for m in found] or None

    def rejected(node: FakeNode) -> int:
        log = plane.log_path.read_text(errors="replace")
        return log.count(f"event=agent_message_rejected node={node.member.name} kind=metric_put")

    # The other node's put, the owner's early one and its NaN are each dropped and logged.
    wait_until(lambda: rejected(other) == 1 or None, 20, "the other node's put rejected")
    wait_until(lambda: rejected(owner) == 2 or None, 20, "the owner's early and NaN puts rejected")
    values, _ = wait_until(listed, 20, "the owner's value listed")
    assert values == [(id_of(task), 7.0)]
    berth.ok("service", "delete", "app")
