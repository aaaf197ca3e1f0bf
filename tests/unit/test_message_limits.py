"""The gRPC message limits (berth.grpc_options) fit a legitimate big cluster.

The route table goes to every agent in every snapshot; it is built here with
the real projection (controlplane.endpoints.route) for 10,000 services with
the longest names Berth allows, so the limit's comment stays true.
"""

from __future__ import annotations

from berth.grpc_options import CLIENT_OPTIONS, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES, SERVER_OPTIONS
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb
from controlplane.endpoints import route
from controlplane.validation import agent_reports

GRPC_DEFAULT_LIMIT = 4 * 1024 * 1024
SERVICES = 10_000
TASKS_PER_SERVICE = 10


def _route_table() -> agent_pb.DesiredState:
    nodes = {
        f"node-{i:012x}": pb.Node(id=f"node-{i:012x}", address=f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
        for i in range(1000)
    }
    node_ids = list(nodes)
    state = agent_pb.DesiredState(revision=2**40)
    cluster = "c" * 63
    for s in range(SERVICES):
        service = pb.Service(
            cluster=cluster,
            name=f"{s:05d}".ljust(63, "s"),
            vip=f"10.96.{s // 256}.{s % 256}",
            ports=[pb.ServicePort(name="http", port=80, container_port=8080)],
            load_balancers=[pb.LoadBalancerPort(port=30000 + s % 1000, service_port=80)],
        )
        tasks = [
            pb.Task(
                id=f"{s:016x}{t:016x}",
                node_id=node_ids[(s + t) % len(node_ids)],
                last_status=pb.RUNNING,
                desired_status=pb.DESIRED_RUNNING,
                network_bindings=[pb.NetworkBinding(container_port=8080, host_port=32768 + t)],
            )
            for t in range(TASKS_PER_SERVICE)
        ]
        state.routes.append(route(service, tasks, nodes))
    return state


def test_a_ten_thousand_service_route_table_fits_the_snapshot_limit_and_not_grpcs_default() -> None:
    size = _route_table().ByteSize()
    assert GRPC_DEFAULT_LIMIT < size < MAX_RESPONSE_BYTES / 4, size


def test_what_agents_send_is_far_below_the_request_limit() -> None:
    report = agent_pb.TaskStatusReport(
        task_id="f" * 32, stopped_reason="r" * agent_reports.MAX_REASON, last_status=pb.STOPPED
    )
    report.containers.extend(
        pb.ContainerState(name="c" * 255, docker_id="d" * 128, reason="r" * agent_reports.MAX_REASON)
        for _ in range(agent_reports.MAX_CONTAINERS)
    )
    report.network_bindings.extend(
        pb.NetworkBinding(
            container_name="c" * 255,
            container_port=65535,
            host_port=65535,
            bind_ip="ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        )
        for _ in range(agent_reports.MAX_BINDINGS)
    )
    agent_reports.check_status_report(report)
    assert agent_pb.AgentMessage(status=report).ByteSize() < MAX_REQUEST_BYTES


def test_servers_and_clients_agree() -> None:
    assert dict(SERVER_OPTIONS) == {
        "grpc.max_receive_message_length": MAX_REQUEST_BYTES,
        "grpc.max_send_message_length": MAX_RESPONSE_BYTES,
    }
    assert dict(CLIENT_OPTIONS) == {
        "grpc.max_receive_message_length": MAX_RESPONSE_BYTES,
        "grpc.max_send_message_length": MAX_REQUEST_BYTES,
    }
