"""Node identity on the lab: host h1's own certificate cannot act as host h2.

The lab's hosts joined with tokens like installed hosts; this test takes h1's
real credentials from its agent's data directory and tries, on the wire, to
register and connect as h2, and to report h2's task stopped. It also checks
that h1's desired state never holds h2's task nor the secret only that task
uses.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from berth import pki
from berth.testing.cli import Berth, id_of, node_of
from berth.testing.lab import Lab
from berth.testing.members import Member
from berth.testing.waiting import wait_until
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import agent_pb2_grpc
from berth.v1 import resources_pb2 as pb
from tests.lab.conftest import delete_services
from tests.lab.test_service_network import IMAGE

SECRET = "only-for-h2-0b5e"


def _credentials(lab: Lab, host: str) -> Member:
    directory = lab.host(host).state_dir / "agent"
    certificate = (directory / "node.crt").read_bytes()
    return Member(
        pki.identity(certificate).name,
        pki.KeyPair(certificate, (directory / "node.key").read_bytes()),
        (directory / "ca.crt").read_bytes(),
    )


def _code(call: grpc.RpcError) -> grpc.StatusCode:
    return call.code()  # type: ignore[attr-defined, no-any-return]


def test_one_hosts_certificate_cannot_act_as_another_host(berth: Berth, lab: Lab, tmp_path: Path) -> None:
    berth.ok("secret", "put", "lab-h2-secret", input=SECRET)
    containers = [
        {
            "name": "app", "image": IMAGE, "memory": 16, "stopTimeout": 2,
            "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 600 & wait"],
            "secrets": [{"name": "TOKEN", "valueFrom": "lab-h2-secret"}],
        }
    ]  # fmt: skip
    berth.register("pinned", containers, tmp_path)
    berth.ok(
        "service", "create", "--name", "pinned", "--task-definition", "pinned", "--desired-count", "1",
        "--placement-constraints", "type=memberOf,expression=attribute:zone == b",
    )  # fmt: skip
    try:
        (task,), _ = wait_until(lambda: berth.running_exactly("default", 1, "pinned"), 60, "the task on h2")
        h1, h2 = _credentials(lab, "h1"), _credentials(lab, "h2")
        assert node_of(task) == h2.name and h1.name != h2.name

        with h1.channel(lab.server) as channel:
            stub = agent_pb2_grpc.AgentServiceStub(channel)
            with pytest.raises(grpc.RpcError) as registering:
                stub.Register(
                    agent_pb.RegisterRequest(
                        node_id=h2.name, name="h2", address="10.213.0.99", cpu_units=1, memory_mib=1
                    ),
                    timeout=10,
                )
            assert _code(registering.value) == grpc.StatusCode.PERMISSION_DENIED

            def hello_as(
                node_id: str, then: list[agent_pb.AgentMessage], done: threading.Event
            ) -> Iterator[agent_pb.AgentMessage]:
                yield agent_pb.AgentMessage(hello=agent_pb.Hello(node_id=node_id))
                yield from then
                done.wait(20)

            posing = threading.Event()
            with pytest.raises(grpc.RpcError) as connecting:
                for _ in stub.Connect(hello_as(h2.name, [], posing), timeout=10):
                    pass
            posing.set()
            assert _code(connecting.value) == grpc.StatusCode.PERMISSION_DENIED

            # As itself, h1 may report, but a report on h2's task changes nothing,
            # and its snapshot holds neither h2's task nor the secret's value.
            forged = agent_pb.AgentMessage(
                status=agent_pb.TaskStatusReport(
                    task_id=id_of(task), last_status=pb.STOPPED, stop_code=pb.ESSENTIAL_CONTAINER_EXITED,
                    has_exit_code=True, exit_code=1, stopped_reason="forged by h1",
                )
            )  # fmt: skip
            done = threading.Event()
            stream = stub.Connect(hello_as(h1.name, [forged], done), timeout=30)
            try:
                first = next(iter(stream))
                assert first.HasField("desired_state")
                assert id_of(task) not in {t.task_id for t in first.desired_state.tasks}
                assert SECRET.encode() not in first.SerializeToString()
                time.sleep(2)  # the forged report has been read by now
            finally:
                done.set()
                stream.cancel()  # type: ignore[no-untyped-call]
        after = berth.ok("task", "describe", id_of(task), "-o", "json").json()
        assert after["lastStatus"] == "RUNNING" and node_of(after) == h2.name
        assert "forged" not in json.dumps(after)
    finally:
        delete_services(berth, ["pinned"])
        berth("secret", "delete", "lab-h2-secret")
