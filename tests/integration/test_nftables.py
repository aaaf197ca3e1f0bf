"""Both netfilter backends for real, each test in a private network namespace it creates and
removes (never the root namespace): a VIP connect reaches an endpoint listening in the namespace
and follows an endpoint change; nftables' change replaces map elements only; other tables are left
alone; our table goes on clean-up; a deleted table comes back; the backend choice and the switch
between backends; and `nft` accepts every script the builder emits."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings

from agent.netfilter import backend, nft_rules, rules
from agent.netfilter.runner import Completed, SubprocessRunner
from agent.netfilter.sync import RuleSync
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb
from tests.unit.test_rules_hostile import _quiet, tables

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0
    or not all(shutil.which(tool) for tool in ("ip", "nsenter", "nft", "iptables-restore", "conntrack")),
    reason="needs root, ip, nsenter, nft, iptables-restore and conntrack for a private network namespace",
)

CIDR = "10.96.0.0/16"
NODE = "10.213.255.10"
VIP = "10.96.0.2"
# Endpoints: listeners on the namespace's loopback (each answers with its own address:port).
LISTENERS = [("10.213.255.1", 18001), ("10.213.255.2", 18002), ("10.213.255.3", 18003)]

SERVER = """
import socket, sys, threading
def serve(address, port):
    server = socket.socket(); server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((address, port)); server.listen(64)
    while True:
        connection, _ = server.accept()
        connection.sendall(f"{address}:{port}".encode()); connection.close()
for item in sys.argv[1:]:
    address, port = item.split(":")
    threading.Thread(target=serve, args=(address, int(port)), daemon=True).start()
print("ready", flush=True)
threading.Event().wait(120)
"""

CLIENT = """
import socket, sys
answers = []
for _ in range(int(sys.argv[3])):
    client = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
    answers.append(client.recv(100).decode()); client.close()
print(" ".join(answers))
"""


# Somebody else's tables, which Berth must leave exactly as they are.
OTHER_TABLES = """
table ip other {
    chain input {
        type filter hook input priority 0; policy accept;
        ip saddr 192.0.2.1 accept
    }
}
table inet keep {
    set names {
        type ipv4_addr
    }
}
"""


@dataclass
class Namespace:
    name: str
    enter: tuple[str, ...]
    scripts: list[str] = field(default_factory=list)

    def run(self, *command: str, input_text: str | None = None, check: bool = True) -> Completed:
        return subprocess.run(
            [*self.enter, *command], input=input_text, capture_output=True, text=True, timeout=60, check=check
        )

    def runner(self) -> RecordingRunner:
        return RecordingRunner(self)

    def answers(self, vip: str, port: int, count: int = 30) -> list[str]:
        return self.run(sys.executable, "-c", CLIENT, vip, str(port), str(count)).stdout.split()


@dataclass
class RecordingRunner:
    """The real runner in the namespace, keeping what was piped into nft."""

    namespace: Namespace
    nft_inputs: list[str] = field(default_factory=list)

    def __call__(self, command: Sequence[str], input_text: str | None = None) -> Completed:
        if list(command[:1]) == ["nft"] and input_text is not None:
            self.nft_inputs.append(input_text)
        return SubprocessRunner(self.namespace.enter)(command, input_text)


@pytest.fixture()
def netns() -> Iterator[Namespace]:
    name = f"berth-nft-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    namespace = Namespace(name, ("nsenter", f"--net=/run/netns/{name}"))
    server: subprocess.Popen[str] | None = None
    try:
        namespace.run("ip", "link", "set", "lo", "up")
        for address, _ in LISTENERS:
            namespace.run("ip", "addr", "add", f"{address}/32", "dev", "lo")
        namespace.run("ip", "addr", "add", f"{NODE}/32", "dev", "lo")
        server = subprocess.Popen(
            [*namespace.enter, sys.executable, "-c", SERVER, *(f"{a}:{p}" for a, p in LISTENERS)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        yield namespace
    finally:
        if server is not None:
            server.kill()
            server.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", name], check=False)


def route(*endpoints: tuple[str, int], load_balancer: int = 0) -> agent_pb.ServiceRoute:
    return agent_pb.ServiceRoute(
        cluster="default",
        name="web",
        vip=VIP,
        ports=[pb.ServicePort(port=80, container_port=8080)],
        endpoints=[pb.Endpoint(address=a, port=p, service_port=80) for a, p in endpoints],
        load_balancers=[pb.LoadBalancerPort(port=load_balancer, service_port=80)] if load_balancer else [],
    )


def network(kind: str, namespace: Namespace, runner: RecordingRunner) -> RuleSync:
    net = backend.make_network(kind, NODE, runner=runner)
    net.service_cidr = CIDR
    return net


@pytest.mark.parametrize("kind", ["nftables", "iptables"])
def test_a_vip_reaches_its_endpoints_and_follows_an_endpoint_change(netns: Namespace, kind: str) -> None:
    runner = netns.runner()
    net = network(kind, netns, runner)
    first, second, third = (f"{a}:{p}" for a, p in LISTENERS)
    net.sync([route(LISTENERS[0], LISTENERS[1], load_balancer=8081)], 1)
    assert set(netns.answers(VIP, 80)) == {first, second}, "both endpoints, picked at random"
    assert set(netns.answers(NODE, 8081, 10)) <= {first, second}, "the load-balancer port"

    net.sync([route(LISTENERS[0], LISTENERS[2], load_balancer=8081)], 2)
    answers = set(netns.answers(VIP, 80))
    assert third in answers and answers <= {first, third}
    if kind == "nftables":
        full, change = runner.nft_inputs[0], runner.nft_inputs[-1]
        assert "delete table ip berth" in full
        # The second endpoint's elements (VIP and load-balancer port) replaced: no chain touched.
        assert change.splitlines() == [
            "delete element ip berth backends-tcp { 10.96.0.2 . 80 . 1, 10.213.255.10 . 8081 . 1 }",
            "add element ip berth backends-tcp { 10.96.0.2 . 80 . 1 : 10.213.255.3 . 18003, "
            "10.213.255.10 . 8081 . 1 : 10.213.255.3 . 18003 }",
        ]

    net.sync([route()], 3)  # no endpoint left: the VIP is refused at once, locally
    result = netns.run(sys.executable, "-c", CLIENT, VIP, "80", "1", check=False)
    assert result.returncode != 0 and "Connection refused" in result.stderr


def test_only_our_table_is_touched_and_it_goes_on_clean_up(netns: Namespace) -> None:
    netns.run("nft", "-f", "-", input_text=OTHER_TABLES)
    netns.run("iptables", "-t", "nat", "-A", "OUTPUT", "-d", "192.0.2.9", "-j", "RETURN")
    netns.run("iptables", "-t", "filter", "-A", "FORWARD", "-d", "192.0.2.9", "-j", "RETURN")
    before = netns.run("nft", "list", "ruleset").stdout
    runner = netns.runner()
    net = network("nftables", netns, runner)
    net.sync([route(LISTENERS[0])], 1)
    net.sync([route(LISTENERS[1])], 2)
    assert "table ip berth" in netns.run("nft", "list", "tables").stdout
    backend.remove_owned_rules(CIDR, runner)
    assert netns.run("nft", "list", "table", "ip", "berth", check=False).returncode != 0
    assert netns.run("nft", "list", "ruleset").stdout == before, "other tables, iptables' included, unchanged"
    assert netns.run("ip", "route", "show", "table", "local", CIDR).stdout.strip() == ""


async def test_a_deleted_table_comes_back_on_the_next_check(netns: Namespace) -> None:
    net = network("nftables", netns, netns.runner())
    net.update([route(LISTENERS[0])], 1)
    assert await net.step()
    netns.run("nft", "delete", "table", "ip", "berth")
    assert await net.step()  # nothing new from the control plane: the check finds the table gone
    assert netns.answers(VIP, 80, 3) == [f"{LISTENERS[0][0]}:{LISTENERS[0][1]}"] * 3


def test_auto_chooses_nftables_here_and_iptables_where_nft_cannot_run(netns: Namespace) -> None:
    assert backend.choose("auto", SubprocessRunner(netns.enter)) == "nftables"
    assert "berth-probe" not in netns.run("nft", "list", "tables").stdout
    without_nft = SubprocessRunner((*netns.enter, "env", "PATH=/nonexistent"))
    assert backend.choose("auto", without_nft) == "iptables"


def test_switching_backends_leaves_only_the_chosen_ones_rules(netns: Namespace) -> None:
    runner = netns.runner()
    network("iptables", netns, runner).sync([route(LISTENERS[0])], 1)
    assert "BERTH-SERVICES" in netns.run("iptables-save", "-t", "nat").stdout
    network("nftables", netns, runner).sync([route(LISTENERS[0])], 1)
    assert "BERTH-" not in netns.run("iptables-save", "-t", "nat").stdout
    # Only the forward accept stays in iptables (a drop there cannot be overridden from our table).
    berth_filter = [
        line for line in netns.run("iptables-save", "-t", "filter").stdout.splitlines() if "BERTH" in line
    ]
    assert berth_filter == [
        ":BERTH-FORWARD - [0:0]",
        "-A FORWARD -j BERTH-FORWARD",
        *rules.FORWARD_RULES.splitlines()[1:],
    ]
    assert netns.answers(VIP, 80, 3) == [f"{LISTENERS[0][0]}:{LISTENERS[0][1]}"] * 3
    network("iptables", netns, runner).sync([route(LISTENERS[1])], 1)
    assert netns.run("nft", "list", "table", "ip", "berth", check=False).returncode != 0
    assert netns.answers(VIP, 80, 3) == [f"{LISTENERS[1][0]}:{LISTENERS[1][1]}"] * 3


# Bounded: a few dozen tables, each two or three nft runs.
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(table=tables, before=tables)
def test_nft_accepts_every_script_the_builder_emits(
    netns: Namespace, table: list[agent_pb.ServiceRoute], before: list[agent_pb.ServiceRoute]
) -> None:
    with _quiet():
        old = nft_rules.build(before, NODE, CIDR)
        new = nft_rules.build(table, NODE, CIDR)
    applied = netns.run("nft", "-f", "-", input_text=nft_rules.full_script(old), check=False)
    assert applied.returncode == 0, (applied.stderr, nft_rules.full_script(old))
    change = nft_rules.delta_script(old, new)
    if change is not None:
        result = netns.run("nft", "-f", "-", input_text=change, check=False)
        assert result.returncode == 0, (result.stderr, change)


@pytest.fixture()
def hosts() -> Iterator[tuple[Namespace, Namespace, Namespace]]:
    """client ─ router ─ backend: the router (the agent's host) forwards, with FORWARD's policy DROP
    as Docker sets it; the backend listens; all three are namespaces this fixture makes and deletes."""
    tag = uuid.uuid4().hex[:6]
    names = [f"berth-fw{role}-{tag}" for role in ("c", "r", "b")]
    created: list[str] = []
    server: subprocess.Popen[str] | None = None
    try:
        for name in names:
            subprocess.run(["ip", "netns", "add", name], check=True)
            created.append(name)
        client, router, backend_host = (Namespace(n, ("nsenter", f"--net=/run/netns/{n}")) for n in names)
        for namespace in (client, router, backend_host):
            namespace.run("ip", "link", "set", "lo", "up")
        # veth pairs made in the router, one end moved into each neighbour.
        for peer, (router_end, peer_end, router_address, peer_address) in (
            (client, ("fwc0", "fwc1", "10.213.254.1/24", "10.213.254.2/24")),
            (backend_host, ("fwb0", "fwb1", "10.213.253.1/24", "10.213.253.2/24")),
        ):
            router.run("ip", "link", "add", router_end, "type", "veth", "peer", "name", peer_end)
            router.run("ip", "link", "set", peer_end, "netns", peer.name)
            router.run("ip", "addr", "add", router_address, "dev", router_end)
            router.run("ip", "link", "set", router_end, "up")
            peer.run("ip", "addr", "add", peer_address, "dev", peer_end)
            peer.run("ip", "link", "set", peer_end, "up")
        router.run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        router.run("iptables", "-P", "FORWARD", "DROP")
        server = subprocess.Popen(
            [*backend_host.enter, sys.executable, "-c", SERVER, "10.213.253.2:18001"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        yield client, router, backend_host
    finally:
        if server is not None:
            server.kill()
            server.wait(timeout=10)
        for name in created:
            subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.mark.parametrize("kind", ["nftables", "iptables"])
def test_a_load_balancer_port_forwards_to_another_host_where_forward_drops(
    hosts: tuple[Namespace, Namespace, Namespace], kind: str
) -> None:
    client, router, _ = hosts
    net = backend.make_network(kind, "10.213.254.1", runner=router.runner())
    net.service_cidr = CIDR
    lb = agent_pb.ServiceRoute(
        cluster="default",
        name="front",
        vip=VIP,
        ports=[pb.ServicePort(port=80, container_port=8080)],
        endpoints=[pb.Endpoint(address="10.213.253.2", port=18001, service_port=80)],
        load_balancers=[pb.LoadBalancerPort(port=8081, service_port=80)],
    )
    net.sync([lb], 1)
    # The client knows no route to the backend: the router DNATs, forwards and masquerades.
    assert client.answers("10.213.254.1", 8081, 5) == ["10.213.253.2:18001"] * 5
    assert router.answers(VIP, 80, 2) == ["10.213.253.2:18001"] * 2, "the VIP from the router itself"
