"""Limits against a running control plane (no Docker, no agent): load-balancer ports,
unexpose, node removal, registration rate, service quota and VIP allocation under load."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from berth.testing.cli import Berth
from berth.testing.daemons import REPO, ControlPlaneProcess
from berth.testing.members import Member, join
from berth.testing.waiting import wait_until
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import agent_pb2_grpc, operator_pb2_grpc
from berth.v1 import operator_pb2 as api
from berth.v1 import resources_pb2 as pb

EXAMPLE = REPO / "examples" / "web.json"
BURST = 5


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlaneProcess]:
    process = ControlPlaneProcess(
        tmp_path_factory.mktemp("limits") / "data",
        [
            "--register-rate",
            "0.01",
            "--register-burst",
            str(BURST),
            "--max-services-per-cluster",
            "310",
            "--lb-allowed-ports",
            "80",
        ],
    )
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def berth(plane: ControlPlaneProcess) -> Berth:
    berth = Berth.of(plane)
    berth.ok("taskdef", "register", "--family", "web", "--container-definitions", f"file://{EXAMPLE}")
    berth.ok(
        "service",
        "create",
        "--name",
        "web",
        "--task-definition",
        "web",
        "--desired-count",
        "0",
        "--port",
        "80:http",
    )

    def settled() -> bool:
        # The controller completes the first deployment (0 tasks) on its own:
        # after that, the service's record changes only when asked.
        described = json.loads(berth.ok("service", "describe", "web", "-o", "json").stdout)
        return bool(described["deployments"][0]["rolloutState"] == "COMPLETED")

    wait_until(settled, 30, "the first deployment of web completed")
    return berth


def _etcd_ports(plane: ControlPlaneProcess) -> tuple[int, int]:
    ports = json.loads((plane.data_dir / "etcd-ports.json").read_text())
    return int(ports["client"]), int(ports["peer"])


def test_expose_refuses_ports_of_the_host_berth_and_etcd(plane: ControlPlaneProcess, berth: Berth) -> None:
    client, peer = _etcd_ports(plane)
    own = plane.address.rpartition(":")[2]
    cases = {
        "22": "below 1024",
        "53": "DNS",
        "53/udp": "DNS",
        "2379": "etcd",
        str(client): "embedded etcd",
        str(peer): "embedded etcd",
        own: "the control plane's API port",
    }
    # Controllers write events in the background: compare the service's own record.
    before = plane.etcd_snapshot()[1][b"/berth/services/default/web"]
    for port, why in cases.items():
        result = berth(
            "service",
            "expose",
            "web",
            "--port",
            f"{port.split('/')[0]}:80" + ("/udp" if "/udp" in port else ""),
        )
        assert result.exit_code == 1, f"port {port} was accepted"
        assert why in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert plane.etcd_snapshot()[1][b"/berth/services/default/web"] == before, "a refused expose wrote"


def test_exposed_ports_can_be_taken_back(berth: Berth) -> None:
    berth.ok("service", "expose", "web", "--port", "8080:80")
    berth.ok("service", "expose", "web", "--port", "80:80")  # allowed with --lb-allowed-ports
    exposed = berth.ok("service", "describe", "web", "-o", "json").json()["berth"]["loadBalancerPorts"]
    assert sorted(lb["port"] for lb in exposed) == [80, 8080]

    assert "no longer exposed" in berth.ok("service", "unexpose", "web", "--port", "8080").stdout
    exposed = berth.ok("service", "describe", "web", "-o", "json").json()["berth"]["loadBalancerPorts"]
    assert [lb["port"] for lb in exposed] == [80]
    missing = berth("service", "unexpose", "web", "--port", "8080")
    assert missing.exit_code == 1 and "not exposed on port 8080" in missing.stderr


def _register(
    plane: ControlPlaneProcess, name: str, member: Member | None = None
) -> agent_pb.RegisterResponse:
    """Register as a node: a new one joined for it, or `member` again."""
    member = member or join(plane, name)
    with member.channel(plane.address) as channel:
        return agent_pb2_grpc.AgentServiceStub(channel).Register(
            agent_pb.RegisterRequest(name=name, address="10.9.0.1", cpu_units=1024, memory_mib=512),
            timeout=10,
        )


def test_new_registrations_are_rate_limited_and_nodes_can_be_removed(
    plane: ControlPlaneProcess, berth: Berth
) -> None:
    members = [join(plane, f"h{i}") for i in range(BURST)]
    registered = [_register(plane, f"h{i}", member) for i, member in enumerate(members)]
    with pytest.raises(grpc.RpcError) as refused:
        _register(plane, "one-too-many")
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "--register-rate" in (refused.value.details() or "")
    # A node that is already known refreshes its record freely.
    assert _register(plane, "h0", members[0]).node_id == registered[0].node_id

    listed = berth.instances()
    assert len(listed) == BURST
    assert "removed" in berth.ok("node", "remove", "h1").stdout
    assert "removed" in berth.ok("node", "remove", registered[2].node_id).stdout
    remaining = {n["ec2InstanceId"] for n in berth.instances()}
    assert remaining == {"h0", "h3", "h4"}
    gone = berth("node", "remove", "h1")
    assert gone.exit_code == 1 and "does not exist" in gone.stderr


async def _create_many(plane: ControlPlaneProcess, count: int, concurrency: int) -> list[pb.Service]:
    async with plane.admin_aio_channel() as channel:
        stub = operator_pb2_grpc.OperatorStub(channel)
        gate = asyncio.Semaphore(concurrency)

        async def create(index: int) -> pb.Service:
            async with gate:
                return await stub.CreateService(
                    api.CreateServiceRequest(name=f"many-{index}", task_definition="web", desired_count=0),
                    timeout=30,
                )

        return list(await asyncio.gather(*(create(i) for i in range(count))))


def test_300_services_created_32_at_a_time_all_succeed_with_distinct_vips_then_the_quota_holds(
    plane: ControlPlaneProcess, berth: Berth
) -> None:
    created = asyncio.run(_create_many(plane, 300, 32))
    assert len({s.vip for s in created}) == 300
    listed = berth.ok("service", "list", "-o", "json").json()["services"]
    # Quota 310 with "web" and these 300: nine more fit, the tenth is refused.
    for index in range(9):
        berth.ok(
            "service", "create", "--name", f"more-{index}", "--task-definition", "web", "--desired-count", "0"
        )
    assert len(listed) == 301
    refused = berth("service", "create", "--name", "over", "--task-definition", "web", "--desired-count", "0")
    assert refused.exit_code == 1 and "--max-services-per-cluster" in refused.stderr, refused.stderr


def test_a_node_down_longer_than_node_gc_after_is_collected(tmp_path: Path) -> None:
    plane = ControlPlaneProcess(tmp_path / "data", ["--node-grace", "1", "--node-gc-after", "1"])
    plane.start()
    try:
        member = join(plane, "gone")
        gone = _register(plane, "gone", member)  # registering is a heartbeat; none follow
        berth = Berth.of(plane)

        def names() -> set[str]:
            return {n["ec2InstanceId"] for n in berth.instances()}

        assert names() == {"gone"}
        # DOWN after the grace (the new leader first holds grace + 2 s), then
        # collected by housekeeping (every 5 s) once DOWN for a second.
        wait_until(lambda: names() == set() or None, 20, "the DOWN node to be collected")
        assert "event=node_collected" in plane.log_path.read_text()
        # Its agent coming back registers it again, as a new record.
        back = _register(plane, "gone", member)
        assert back.node_id == gone.node_id
        wait_until(lambda: names() == {"gone"} or None, 5, "the node to be listed again")
    finally:
        plane.stop()
