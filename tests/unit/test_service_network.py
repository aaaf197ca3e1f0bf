"""Service networking: rule building (golden file), endpoints, VIPs, DNS answers, and the
service network's sync against a fake program runner (full sync, deltas, resync, canary)."""

from __future__ import annotations

import asyncio
import ipaddress
import os
from pathlib import Path

import pytest
from dnslib import QTYPE, DNSRecord

from agent.dns import ServiceResolver
from agent.netfilter import rules
from agent.netfilter.iptables import ServiceNetwork, remove_owned_rules
from agent.netfilter.runner import FakeRunner
from berth.errors import InvalidArgument
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb
from controlplane.endpoints import endpoints, resolve_ports
from controlplane.vips import free_addresses

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


def test_vip_candidates_leave_out_network_gateway_broadcast_and_taken_addresses() -> None:
    net = ipaddress.ip_network("10.96.0.0/29")
    assert free_addresses(net, []) == [f"10.96.0.{i}" for i in range(2, 7)]
    assert free_addresses(net, ["10.96.0.2", "10.96.0.5"]) == ["10.96.0.3", "10.96.0.4", "10.96.0.6"]
    assert free_addresses(ipaddress.ip_network("10.96.0.0/30"), ["10.96.0.2"]) == []


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
    assert declared == [
        ":"
        + rules.service_chain(moved.cluster, moved.name, moved.ports[0].port, moved.ports[0].protocol)
        + " - [0:0]"
    ]
    assert "BERTH-SERVICES" not in change and "10.96.0.3" not in change
    assert "--to-destination 10.213.0.13:32999" in change
    assert "-X " not in change
    assert rules.delta(new, new) is None


# -- ServiceNetwork's sync against a fake runner ---------------------------------

NODE = "10.213.0.11"
CIDR = "10.96.0.0/16"
RESTORE = ("iptables-restore", "--noflush")


def network(runner: FakeRunner) -> ServiceNetwork:
    net = ServiceNetwork(NODE, runner=runner, check_interval=60.0, retry_delay=0.0)
    net.service_cidr = CIDR
    return net


async def test_nothing_is_touched_before_the_control_plane_spoke() -> None:
    runner = FakeRunner()
    assert await network(runner).step()  # a service CIDR, but no routes yet
    net = ServiceNetwork(NODE, runner=runner)
    net.update([web_route()], 1)  # routes, but no service CIDR (not registered yet)
    assert await net.step()
    assert runner.calls == []


async def test_the_first_sync_routes_the_cidr_locally_then_applies_everything_and_adds_missing_jumps() -> (
    None
):
    runner = FakeRunner()
    runner.answer("iptables-save", "-t", "nat", stdout=":PREROUTING ACCEPT [0:0]\n:BERTH-SVC-STALE - [0:0]\n")
    runner.answer("iptables", "-t", "nat", "-C", "OUTPUT", returncode=1)  # one jump is missing
    net = network(runner)
    net.update([web_route(), dns_route()], 1)

    assert await net.step()

    commands = runner.commands
    route = ("ip", "route", "replace", "local", CIDR, "dev", "lo", "table", "local")
    assert commands.index(route) < commands.index(RESTORE), "a VIP must never leave the host"
    expected = rules.batch(rules.build([web_route(), dns_route()], NODE), ["BERTH-SVC-STALE"])
    assert runner.inputs(*RESTORE) == [expected]
    assert "-X BERTH-SVC-STALE" in expected
    inserted = [c for c in commands if c[:1] == ("iptables",) and "-I" in c]
    assert inserted == [("iptables", "-t", "nat", "-I", "OUTPUT", "1", "-j", rules.SERVICES)]
    assert not any(c[0] == "conntrack" for c in commands)


async def test_after_the_first_sync_only_changed_chains_are_rewritten_and_gone_endpoints_forgotten() -> None:
    runner = FakeRunner()
    net = network(runner)
    net.update([web_route(), dns_route()], 1)
    assert await net.step()
    old = rules.build([web_route(), dns_route()], NODE)
    runner.clear()

    moved = web_route()
    moved.endpoints[2].port = 32999  # one endpoint replaced by another
    net.update([moved, dns_route()], 2)
    assert await net.step()

    assert runner.inputs(*RESTORE) == [rules.delta(old, rules.build([moved, dns_route()], NODE))]
    assert not any(c[0] in ("iptables-save", "ip") for c in runner.commands), "a delta rereads nothing"
    conntrack = [c for c in runner.commands if c[0] == "conntrack"]
    assert conntrack == [
        ("conntrack", "-D", "-p", "tcp", "--reply-src", "10.213.0.13", "--reply-port-src", "32770")
    ]

    runner.clear()
    net.update([moved, dns_route()], 3)  # a new revision, the same routes
    assert await net.step()
    assert runner.calls == [], "nothing changed, nothing applied"


async def test_a_udp_endpoint_that_goes_away_loses_its_flows() -> None:
    runner = FakeRunner()
    net = network(runner)
    net.update([dns_route()], 1)
    assert await net.step()
    runner.clear()
    gone = dns_route()
    del gone.endpoints[:]
    net.update([gone], 2)
    assert await net.step()
    assert [c for c in runner.commands if c[0] == "conntrack"] == [
        ("conntrack", "-D", "-p", "udp", "--reply-src", "10.213.0.12", "--reply-port-src", "31000")
    ]


async def test_a_failed_apply_makes_the_next_round_a_full_resync() -> None:
    runner = FakeRunner()
    net = network(runner)
    net.update([web_route()], 1)
    assert await net.step()
    runner.clear()

    moved = web_route()
    moved.endpoints[0].port = 40000
    runner.answer(*RESTORE, returncode=2, stderr="iptables-restore: line 3 failed", once=True)
    net.update([moved], 2)
    assert not await net.step()

    runner.clear()
    assert await net.step()  # the next round, with nothing new from the control plane
    assert ("iptables-save", "-t", "nat") in runner.commands
    assert runner.inputs(*RESTORE) == [rules.batch(rules.build([moved], NODE), [])]


async def test_a_missing_program_is_a_failure_too_and_is_retried_in_full() -> None:
    runner = FakeRunner()
    runner.raise_on("ip", error=FileNotFoundError("ip"), once=True)
    net = network(runner)
    net.update([web_route()], 1)
    assert not await net.step()
    assert runner.inputs(*RESTORE) == [], "no rules before the CIDR is routed locally"
    assert await net.step()
    assert len(runner.inputs(*RESTORE)) == 1


async def test_the_canary_is_checked_when_nothing_changed_and_a_flush_brings_a_full_resync() -> None:
    runner = FakeRunner()
    net = network(runner)
    net.update([web_route()], 1)
    assert await net.step()
    runner.clear()

    assert await net.step()  # a quiet round: only checks
    canary = ("iptables", "-t", "nat", "-C", rules.CANARY, "-j", "RETURN")
    assert runner.commands[0] == canary
    assert all(c[:1] == ("iptables",) and "-C" in c for c in runner.commands)

    runner.clear()
    runner.answer(*canary, returncode=1, once=True)  # someone flushed the nat table
    assert await net.step()
    assert ("iptables-save", "-t", "nat") in runner.commands
    assert runner.inputs(*RESTORE) == [rules.batch(rules.build([web_route()], NODE), [])]


async def test_the_run_loop_retries_a_failure_without_waiting_for_news() -> None:
    runner = FakeRunner()
    runner.answer(*RESTORE, returncode=1, stderr="busy", once=True)
    net = network(runner)
    net.update([web_route()], 1)
    loop = asyncio.create_task(net.run())
    try:
        for _ in range(200):
            if len(runner.inputs(*RESTORE)) == 2:
                break
            await asyncio.sleep(0.005)
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
    full = rules.batch(rules.build([web_route()], NODE), [])
    assert runner.inputs(*RESTORE) == [full, full]


def test_remove_owned_rules_takes_off_only_berths_jumps_chains_and_route() -> None:
    runner = FakeRunner()
    runner.answer("iptables", "-t", "nat", "-D", returncode=1)
    runner.answer("iptables", "-t", "filter", "-D", returncode=1)
    runner.answer("iptables-save", "-t", "nat", stdout=":DOCKER - [0:0]\n:BERTH-SERVICES - [0:0]\n")
    remove_owned_rules(CIDR, runner)
    touched = [c for c in runner.commands if c[0] == "iptables" and c[3] in ("-F", "-X")]
    assert touched == [
        ("iptables", "-t", "nat", "-F", "BERTH-SERVICES"),
        ("iptables", "-t", "nat", "-X", "BERTH-SERVICES"),
    ]
    assert runner.commands[-1] == ("ip", "route", "del", "local", CIDR, "dev", "lo", "table", "local")


async def test_a_udp_port_that_gets_its_first_endpoint_drops_flows_recorded_without_one() -> None:
    # A datagram sent while the port had no endpoint leaves a flow with no
    # DNAT; the client's next datagrams (same source port) would follow it
    # past the new endpoint. Clear it, as kube-proxy does; live flows of
    # ports that had endpoints are never touched.
    runner = FakeRunner()
    net = network(runner)
    empty = dns_route()
    del empty.endpoints[:]
    net.update([empty], 1)
    assert await net.step()
    runner.clear()
    net.update([dns_route()], 2)
    assert await net.step()
    assert [c for c in runner.commands if c[0] == "conntrack"] == [
        ("conntrack", "-D", "-p", "udp", "--orig-dst", empty.vip, "--orig-port-dst", "53")
    ]
    runner.clear()
    more = dns_route()
    more.endpoints.append(more.endpoints[0])
    more.endpoints[-1].address = "10.213.0.14"
    net.update([more], 3)
    assert await net.step()
    assert not [c for c in runner.commands if c[0] == "conntrack"], "the port already had an endpoint"
