"""Pure parts of service networking: rule building (golden file), endpoints, VIPs, DNS answers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from dnslib import QTYPE, DNSRecord

from agent.dns import ServiceResolver
from agent.netfilter import rules
from berth.errors import FailedPrecondition, InvalidArgument
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb
from controlplane.endpoints import allocate_vip, endpoints, resolve_ports

GOLDEN = Path(__file__).parent / "golden" / "rules_web_and_dns.txt"


def web_route() -> agent_pb.ServiceRoute:
    return agent_pb.ServiceRoute(
        cluster="default",
        name="web",
        vip="10.96.0.2",
        ports=[pb.ServicePort(name="http", port=80, container_port=8080)],
        endpoints=[
            pb.Endpoint(address="10.213.0.11", port=32768, service_port=80),
            pb.Endpoint(address="10.213.0.12", port=32769, service_port=80),
            pb.Endpoint(address="10.213.0.13", port=32770, service_port=80),
        ],
        load_balancers=[pb.LoadBalancerPort(port=8080, service_port=80)],
    )


def dns_route() -> agent_pb.ServiceRoute:
    return agent_pb.ServiceRoute(
        cluster="prod",
        name="dns",
        vip="10.96.0.3",
        ports=[pb.ServicePort(name="dns", port=53, container_port=53, protocol=pb.UDP)],
        endpoints=[pb.Endpoint(address="10.213.0.12", port=31000, service_port=53, protocol=pb.UDP)],
    )


def test_rules_match_the_golden_file() -> None:
    text = rules.batch(rules.build([web_route(), dns_route()], "10.213.0.11"), ["BERTH-SVC-STALE", "DOCKER"])
    if os.environ.get("BERTH_UPDATE_GOLDEN"):
        # Never pass while rewriting: a test that compares a file with itself proves nothing.
        changed = not GOLDEN.exists() or GOLDEN.read_text() != text
        GOLDEN.write_text(text)
        pytest.fail(
            f"BERTH_UPDATE_GOLDEN is set: {GOLDEN.name} {'rewritten' if changed else 'unchanged'}; "
            "review the diff and rerun without it"
        )
    assert text == GOLDEN.read_text()


def test_only_berth_chains_are_touched() -> None:
    text = rules.batch(rules.build([web_route()], "10.213.0.11"), ["DOCKER", "BERTH-SEP-OLD"])
    for line in text.splitlines():
        if line.startswith((":", "-A", "-X")):
            chain = line.split()[0][1:] if line.startswith(":") else line.split()[1]
            assert chain.startswith("BERTH-"), line
    assert "-X BERTH-SEP-OLD" in text and "DOCKER" not in text


def test_endpoints_are_spread_evenly() -> None:
    text = "\n".join(rules.build([web_route()], "10.213.0.11").nat_rules)
    assert "--probability 0.33333333333" in text and "--probability 0.50000000000" in text
    assert text.count("-j DNAT") == 3


def test_a_service_without_endpoints_gets_no_rule() -> None:
    route = web_route()
    del route.endpoints[:]
    assert "10.96.0.2" not in "\n".join(rules.build([route], "10.213.0.11").nat_rules)


def _task(task_id: str, status: int, node: str, host_port: int, desired: int = pb.DESIRED_RUNNING) -> pb.Task:
    return pb.Task(
        id=task_id,
        last_status=status,  # type: ignore[arg-type]
        desired_status=desired,  # type: ignore[arg-type]
        node_id=node,
        network_bindings=[pb.NetworkBinding(container_port=8080, host_port=host_port)],
    )


def test_endpoints_are_running_wanted_tasks_on_live_nodes() -> None:
    service = pb.Service(name="web", ports=[pb.ServicePort(port=80, container_port=8080)])
    nodes = {
        "n1": pb.Node(id="n1", address="10.0.0.1", status=pb.READY),
        "n2": pb.Node(id="n2", address="10.0.0.2", status=pb.DOWN),
    }
    tasks = [
        _task("ok", pb.RUNNING, "n1", 32768),
        _task("pending", pb.PENDING, "n1", 0),
        _task("stopping", pb.RUNNING, "n1", 32769, pb.DESIRED_STOPPED),
        _task("lost", pb.RUNNING, "n2", 32770),
    ]
    (endpoint,) = endpoints(service, tasks, nodes)
    assert (endpoint.task_id, endpoint.address, endpoint.port, endpoint.service_port) == (
        "ok",
        "10.0.0.1",
        32768,
        80,
    )


def test_vip_allocation_skips_taken_addresses_and_fails_when_full() -> None:
    assert allocate_vip("10.96.0.0/16", []) == "10.96.0.2"
    assert allocate_vip("10.96.0.0/16", ["10.96.0.2", "10.96.0.3"]) == "10.96.0.4"
    with pytest.raises(FailedPrecondition, match="no free virtual IP"):
        allocate_vip("10.96.0.0/30", ["10.96.0.2"])


def test_ports_resolve_by_name_and_refuse_unknown_ones() -> None:
    td = pb.TaskDefinition(
        family="web",
        revision=1,
        container_definitions=[
            pb.ContainerDefinition(
                name="web", port_mappings=[pb.PortMapping(container_port=8080, name="http")]
            )
        ],
    )
    (port,) = resolve_ports([pb.ServicePort(port=80, name="http")], td)
    assert (port.port, port.container_port, port.name) == (80, 8080, "http")
    with pytest.raises(InvalidArgument, match="does not publish"):
        resolve_ports([pb.ServicePort(port=80, container_port=9090)], td)


def test_dns_answers_a_and_srv_and_refuses_unknown_names() -> None:
    resolver = ServiceResolver(upstream=None)
    resolver.update([web_route()])
    answer = resolver.resolve(DNSRecord.question("web.default.berth", "A"), None)
    assert [str(rr.rdata) for rr in answer.rr] == ["10.96.0.2"]
    srv = resolver.resolve(DNSRecord.question("_http._tcp.web.default.berth", "SRV"), None)
    assert srv.rr[0].rtype == QTYPE.SRV and srv.rr[0].rdata.port == 80
    missing = resolver.resolve(DNSRecord.question("nope.default.berth", "A"), None)
    assert missing.header.rcode == 3  # NXDOMAIN


def test_delta_rewrites_only_the_chains_that_changed() -> None:
    old = rules.build([web_route(), dns_route()], "10.213.0.11")
    moved = web_route()
    moved.endpoints[2].port = 32999  # one endpoint replaced
    new = rules.build([moved, dns_route()], "10.213.0.11")
    change = rules.delta(old, new)
    assert change is not None
    declared = [line for line in change.splitlines() if line.startswith(":")]
    # Only that service's chain is rewritten: nothing else is touched.
    assert declared == [":" + rules.service_chain(moved, moved.ports[0]) + " - [0:0]"]
    assert "BERTH-SERVICES" not in change and "10.96.0.3" not in change
    assert "--to-destination 10.213.0.13:32999" in change
    assert "-X " not in change
    assert rules.delta(new, new) is None
