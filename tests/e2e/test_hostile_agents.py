"""A hostile or broken agent against a running control plane (no Docker):
a fake agent speaks the agent gRPC API directly.

Registration is refused when a field is invalid or too big, and nothing is
written; a status report with an impossible port or protocol is dropped
(counted and logged) and the task in etcd stays as it was, while the stream
goes on; a message past the size limit is refused, and the control plane
keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import urllib.request
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

from berth.grpc_options import CLIENT_OPTIONS, MAX_REQUEST_BYTES
from berth.testing.daemons import ControlPlaneProcess, free_port
from berth.testing.members import join
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import agent_pb2_grpc, operator_pb2_grpc
from berth.v1 import operator_pb2 as api
from berth.v1 import resources_pb2 as pb

INJECTION = "10.0.0.9\nCOMMIT\n*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp --dport 22 -j DROP\nCOMMIT\n"


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlaneProcess]:
    metrics = f"127.0.0.1:{free_port()}"
    process = ControlPlaneProcess(tmp_path_factory.mktemp("hostile") / "data", ["--metrics-listen", metrics])
    process.metrics_address = metrics  # type: ignore[attr-defined]
    process.start()
    yield process
    process.stop()


def _nodes_in_etcd(plane: ControlPlaneProcess) -> dict[bytes, bytes]:
    _, entries = plane.etcd_snapshot()
    return {k: v for k, v in entries.items() if k.startswith(b"/berth/nodes/")}


def _registration(**changes: object) -> agent_pb.RegisterRequest:
    request = agent_pb.RegisterRequest(
        name="fake", address="127.0.0.1", cpu_units=4096, memory_mib=8192, agent_version="test"
    )
    for field, value in changes.items():
        if field == "attributes":
            request.attributes.update(value)  # type: ignore[call-overload]
        else:
            setattr(request, field, value)
    return request


def _register(plane: ControlPlaneProcess, request: agent_pb.RegisterRequest) -> agent_pb.RegisterResponse:
    # No send limit on this side: the control plane's own limit is what is tested.
    member = join(plane, "fake")
    with member.channel(plane.address, options=[("grpc.max_send_message_length", -1)]) as channel:
        return agent_pb2_grpc.AgentServiceStub(channel).Register(request, timeout=10)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"address": INJECTION}, "is not an IPv4 address"),
        ({"address": "1" * 1_400_000}, "is not an IPv4 address"),
        ({"attributes": {"zone": "a" * 1_300_000}}, "attribute zone value"),
        ({"attributes": {f"k{i}": "v" for i in range(100)}}, "at most 16 attributes"),
        ({"name": "fake\n"}, "is not a DNS label"),
        ({"cpu_units": 0}, "cpu_units 0 is out of range"),
    ],
    ids=[
        "iptables-injection",
        "1.4MB-address",
        "1.3MB-attributes",
        "100-attributes",
        "newline-name",
        "no-cpu",
    ],
)
def test_bad_registration_is_invalid_argument_and_writes_nothing(
    plane: ControlPlaneProcess, changes: dict[str, object], expected: str
) -> None:
    before = _nodes_in_etcd(plane)
    with pytest.raises(grpc.RpcError) as refused:
        _register(plane, _registration(**changes))
    error: grpc.Call = refused.value  # type: ignore[assignment]
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = error.details() or ""
    assert expected in details and "\n" not in details and len(details) < 300
    assert _nodes_in_etcd(plane) == before
    # ListNodes still answers, through a client with gRPC's default limits.
    with plane.admin_channel() as channel:
        listed = operator_pb2_grpc.OperatorStub(channel).ListNodes(api.ListNodesRequest(), timeout=10)
    assert all(len(n.node.address) < 16 for n in listed.nodes)


def test_a_registration_past_the_message_limit_is_resource_exhausted(
    plane: ControlPlaneProcess,
) -> None:
    before = _nodes_in_etcd(plane)
    with pytest.raises(grpc.RpcError) as refused:
        _register(plane, _registration(attributes={"zone": "a" * (MAX_REQUEST_BYTES + 1)}))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    assert _nodes_in_etcd(plane) == before
    with plane.admin_channel() as channel:
        operator_pb2_grpc.OperatorStub(channel).ListClusters(api.ListClustersRequest(), timeout=10)


class FakeAgent:
    """One node's stream: hello, a heartbeat every half second, and whatever the test sends."""

    def __init__(self, channel: grpc.aio.Channel, node_id: str) -> None:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        self.outbox: asyncio.Queue[agent_pb.AgentMessage] = asyncio.Queue()
        self.snapshots: asyncio.Queue[agent_pb.DesiredState] = asyncio.Queue()
        self._call = stub.Connect(self._outgoing(node_id))
        self._reader = asyncio.create_task(self._read())

    async def _outgoing(self, node_id: str) -> AsyncIterator[agent_pb.AgentMessage]:
        yield agent_pb.AgentMessage(hello=agent_pb.Hello(node_id=node_id))
        while True:
            with contextlib.suppress(TimeoutError):
                yield await asyncio.wait_for(self.outbox.get(), 0.5)
                continue
            yield agent_pb.AgentMessage(heartbeat=agent_pb.Heartbeat())

    async def _read(self) -> None:
        async for message in self._call:
            self.snapshots.put_nowait(message.desired_state)

    async def assignment(self, timeout: float = 20) -> agent_pb.TaskAssignment:
        async with asyncio.timeout(timeout):
            while True:
                state = await self.snapshots.get()
                if state.tasks:
                    return state.tasks[0]

    async def close(self) -> None:
        self._call.cancel()  # type: ignore[no-untyped-call]
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await self._reader


def _rejected_reports(plane: ControlPlaneProcess, kind: str = "status") -> float:
    address = plane.metrics_address  # type: ignore[attr-defined]
    text = urllib.request.urlopen(f"http://{address}/metrics", timeout=5).read().decode()
    found = re.search(rf'^berth_agent_messages_rejected_total\{{kind="{kind}"\}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


async def test_a_report_with_an_impossible_port_or_protocol_is_dropped_and_the_stream_goes_on(
    plane: ControlPlaneProcess,
) -> None:
    member = join(plane, "reporter")
    async with (
        member.aio_channel(plane.address, options=CLIENT_OPTIONS) as channel,
        plane.admin_aio_channel() as admin,
    ):
        registered = await agent_pb2_grpc.AgentServiceStub(channel).Register(_registration(name="reporter"))
        node_id = registered.node_id
        operator = operator_pb2_grpc.OperatorStub(admin)
        await operator.RegisterTaskDefinition(
            api.RegisterTaskDefinitionRequest(
                family="ports",
                container_definitions=[
                    pb.ContainerDefinition(
                        name="web",
                        image="busybox",
                        memory=16,
                        essential=True,
                        port_mappings=[pb.PortMapping(container_port=80)],
                    )
                ],
            )
        )
        await operator.CreateService(
            api.CreateServiceRequest(
                cluster="default", name="ports", task_definition="ports", desired_count=1
            )
        )
        agent = FakeAgent(channel, node_id)
        try:
            task_id = (await agent.assignment()).task_id
            ref = api.TaskRef(cluster="default", id=task_id)
            before = await operator.DescribeTask(ref)
            assert before.node_id == node_id and before.last_status == pb.PENDING
            rejected = _rejected_reports(plane)

            def running(port: int, protocol: int) -> agent_pb.AgentMessage:
                binding = pb.NetworkBinding(
                    container_name="web", container_port=80, host_port=port, bind_ip="0.0.0.0"
                )
                binding.protocol = protocol  # type: ignore[assignment]
                report = agent_pb.TaskStatusReport(
                    task_id=task_id, last_status=pb.RUNNING, network_bindings=[binding]
                )
                return agent_pb.AgentMessage(status=report)

            agent.outbox.put_nowait(running(70000, pb.TCP))
            agent.outbox.put_nowait(running(32768, 7))
            for _ in range(50):  # up to 5 s for the control plane to reject both
                if _rejected_reports(plane) >= rejected + 2:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)  # a write, had there been one, would have landed by now
            assert await operator.DescribeTask(ref) == before
            assert _rejected_reports(plane) == rejected + 2

            # The same stream still carries a good report through.
            agent.outbox.put_nowait(running(32768, pb.UDP))
            deadline = asyncio.get_running_loop().time() + 10
            while (task := await operator.DescribeTask(ref)).last_status != pb.RUNNING:
                assert asyncio.get_running_loop().time() < deadline, "the good report was not applied"
                await asyncio.sleep(0.1)
            assert [(b.host_port, b.protocol) for b in task.network_bindings] == [(32768, pb.UDP)]
        finally:
            await agent.close()


async def test_impossible_heartbeat_metrics_are_dropped_and_the_heartbeat_still_counts(
    plane: ControlPlaneProcess,
) -> None:
    member = join(plane, "beater")
    async with (
        member.aio_channel(plane.address, options=CLIENT_OPTIONS) as channel,
        plane.admin_aio_channel() as admin,
    ):
        registered = await agent_pb2_grpc.AgentServiceStub(channel).Register(_registration(name="beater"))
        operator = operator_pb2_grpc.OperatorStub(admin)
        agent = FakeAgent(channel, registered.node_id)
        try:
            rejected = _rejected_reports(plane, "heartbeat")
            metrics = pb.NodeMetrics(cpu_percent=math.nan, memory_used_bytes=2**63, memory_total_bytes=1)
            agent.outbox.put_nowait(agent_pb.AgentMessage(heartbeat=agent_pb.Heartbeat(metrics=metrics)))
            for _ in range(50):  # up to 5 s for the control plane to read it
                if _rejected_reports(plane, "heartbeat") > rejected:
                    break
                await asyncio.sleep(0.1)
            listed = await operator.ListNodes(api.ListNodesRequest())
            (summary,) = [n for n in listed.nodes if n.node.id == registered.node_id]
            assert not summary.HasField("metrics")
            assert summary.connected and summary.node.status == pb.READY
            assert _rejected_reports(plane, "heartbeat") == rejected + 1
        finally:
            await agent.close()
