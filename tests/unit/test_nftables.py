"""The nftables backend: its script builder (golden file, deltas, hostile route tables), its
sync against a fake program runner, and the choice between nftables and iptables."""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from agent.netfilter import backend, nft_rules, rules
from agent.netfilter.nftables import RULE_CHECK_EVERY, NftablesNetwork
from agent.netfilter.runner import FakeRunner
from berth.errors import FailedPrecondition
from berth.v1 import agent_pb2 as agent_pb
from tests.unit.test_rules_hostile import _quiet, _valid, node_addresses, tables
from tests.unit.test_service_network import dns_route, web_route

GOLDEN = Path(__file__).parent / "golden" / "nft_web_and_dns.txt"
NODE = "10.213.0.11"
CIDR = "10.96.0.0/16"
NFT = ("nft", "-f", "-")


def test_script_matches_the_golden_file() -> None:
    text = nft_rules.full_script(nft_rules.build([web_route(), dns_route()], NODE))
    if os.environ.get("BERTH_UPDATE_GOLDEN"):
        changed = not GOLDEN.exists() or GOLDEN.read_text() != text
        GOLDEN.write_text(text)
        pytest.fail(f"BERTH_UPDATE_GOLDEN is set: {GOLDEN.name} {'rewritten' if changed else 'unchanged'}")
    assert text == GOLDEN.read_text()


async def test_every_few_quiet_rounds_the_lookup_rule_itself_is_read() -> None:
    runner = FakeRunner()
    net = network(runner)
    net.update([web_route()], 1)
    assert await net.step()
    runner.clear()
    runner.answer("nft", "list", "chains", stdout=LISTED)
    runner.answer(
        "nft", "list", "chain", stdout="table ip berth {\n\tchain prerouting {\n\t}\n}\n"
    )  # flushed
    for _ in range(RULE_CHECK_EVERY):
        assert await net.step()
    assert runner.commands[RULE_CHECK_EVERY - 1] == ("nft", "list", "chain", "ip", "berth", "prerouting")
    assert runner.inputs(*NFT) == [nft_rules.full_script(nft_rules.build([web_route()], NODE))]


def test_the_full_script_replaces_only_our_table_in_one_file() -> None:
    text = nft_rules.full_script(nft_rules.build([web_route()], NODE))
    tables = {m.group(0) for m in re.finditer(r"table \w+ [\w-]+", text)}
    assert tables == {"table ip berth"}
    assert text.startswith("table ip berth\ndelete table ip berth\n")
    assert "flush ruleset" not in text


def test_one_endpoint_change_replaces_its_backend_elements_and_touches_no_chain() -> None:
    old = nft_rules.build([web_route(), dns_route()], NODE)
    moved = web_route()
    moved.endpoints[2].port = 32999
    change = nft_rules.delta_script(old, nft_rules.build([moved, dns_route()], NODE))
    assert change is not None
    # The VIP's and the load-balancer port's third pick, nothing else.
    assert change.splitlines() == [
        "delete element ip berth backends-tcp { 10.96.0.2 . 80 . 2, 10.213.0.11 . 8080 . 2 }",
        "add element ip berth backends-tcp { 10.96.0.2 . 80 . 2 : 10.213.0.13 . 32999, "
        "10.213.0.11 . 8080 . 2 : 10.213.0.13 . 32999 }",
    ]
    assert nft_rules.delta_script(old, old) is None


def test_a_new_endpoint_count_moves_the_service_to_another_pick_chain() -> None:
    old = nft_rules.build([web_route(), dns_route()], NODE)
    fewer = web_route()
    del fewer.endpoints[0]
    change = nft_rules.delta_script(old, nft_rules.build([fewer, dns_route()], NODE))
    assert change is not None
    lines = change.splitlines()
    assert lines[:3] == [
        "add chain ip berth pick-tcp-2",
        "add rule ip berth pick-tcp-2 meta mark set meta mark | 0x4000",
        "add rule ip berth pick-tcp-2 " + nft_rules.pick_rules("tcp", 2)[1],
    ]
    assert "add element ip berth services { 10.96.0.2 . tcp . 80 : goto pick-tcp-2, " in change
    assert lines[-1] == "delete chain ip berth pick-tcp-3", "deleted last, once nothing goes to it"


def test_a_service_going_away_loses_its_elements_before_its_pick_chain() -> None:
    old = nft_rules.build([web_route(), dns_route()], NODE)
    change = nft_rules.delta_script(old, nft_rules.build([web_route()], NODE))
    assert change is not None
    assert change.splitlines() == [
        "delete element ip berth services { 10.96.0.3 . udp . 53 }",
        "delete element ip berth backends-udp { 10.96.0.3 . 53 . 0 }",
        "delete chain ip berth pick-udp-1",
    ]


def test_services_share_pick_chains_by_protocol_and_endpoint_count() -> None:
    other = web_route()
    other.name, other.vip = "api", "10.96.0.7"
    del other.load_balancers[:]
    rule_set = nft_rules.build([web_route(), other, dns_route()], NODE)
    assert rule_set.chains == {
        "pick-tcp-3": nft_rules.pick_rules("tcp", 3),
        "pick-udp-1": nft_rules.pick_rules("udp", 1),
    }
    assert rule_set.services["10.96.0.7 . tcp . 80"] == "pick-tcp-3"


def test_a_service_without_endpoints_gets_no_element_and_no_chain() -> None:
    route = web_route()
    del route.endpoints[:]
    rule_set = nft_rules.build([route], NODE)
    assert rule_set.services == {} and rule_set.chains == {}
    assert rule_set.backends == {"tcp": {}, "udp": {}}


def test_a_vip_port_claimed_twice_keeps_its_first_services_endpoints() -> None:
    other = dns_route()
    other.vip = web_route().vip
    other.ports[0].port, other.ports[0].protocol = 80, web_route().ports[0].protocol
    other.endpoints[0].service_port, other.endpoints[0].protocol = 80, web_route().ports[0].protocol
    rule_set = nft_rules.build([web_route(), other], NODE)
    assert rule_set.services["10.96.0.2 . tcp . 80"] == "pick-tcp-3"
    assert [v for k, v in rule_set.backends["tcp"].items() if k.startswith("10.96.0.2 ")] == [
        "10.213.0.11 . 32768",
        "10.213.0.12 . 32769",
        "10.213.0.13 . 32770",
    ]


def test_the_cheap_check_finds_our_table_and_its_base_chains() -> None:
    listed = (
        "table ip nat {\n\tchain prerouting {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n"
        "\t}\n}\ntable ip berth {\n"
        + "".join(f"\tchain {name} {{\n\t\ttype x;\n\t}}\n" for name in nft_rules.BASE_CHAINS)
        + "\tchain pick-tcp-3 {\n\t}\n}\n"
    )
    assert nft_rules.has_base_chains(listed)
    assert not nft_rules.has_base_chains(listed.replace("chain forward", "chain other"))
    assert not nft_rules.has_base_chains(listed.replace("table ip berth", "table ip other"))
    assert not nft_rules.has_base_chains("")


# What a line of our scripts may be: nothing else ever reaches nft.
_ADDRESS = r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}"
_PORT = r"\d{1,5}"
_PICK = r"pick-(tcp|udp)-(\d+)"
_DNAT = r"dnat ip to ip daddr \. (tcp|udp) dport \. numgen random mod (\d+) map @backends-(\w+)"
_ELEMENTS = r"(add|delete) element ip berth (services|backends-tcp|backends-udp) \{ (.*) \}"
_FIXED = {line for body in nft_rules.BASE_CHAINS.values() for line in body} | {
    "table ip berth",
    "delete table ip berth",
    "table ip berth {",
    "map services {",
    "type ipv4_addr . inet_proto . inet_service : verdict",
    "}",
    *(f"map backends-{p} {{" for p in nft_rules.PROTOCOL_NAMES),
    *(nft_rules.backends_type(p) for p in nft_rules.PROTOCOL_NAMES),
    "meta mark set meta mark | 0x4000",
    *(f"chain {name} {{" for name in nft_rules.BASE_CHAINS),
}


def _check_address(address: str, port: str) -> None:
    assert str(ipaddress.IPv4Address(address)) == address
    assert 1 <= int(port) <= 65535


def _check_line(line: str) -> None:
    """One script line is a fixed line, a pick chain, or a list of parsed elements."""
    line = line.strip()
    line = re.sub(rf"^(add|delete) (rule|chain) ip berth {_PICK} ?", "", line)
    if not line or line in _FIXED or re.fullmatch(rf"chain {_PICK} \{{", line):
        return
    if pick := re.fullmatch(
        r"dnat ip to ip daddr \. (tcp|udp) dport \. numgen random mod (\d+) map @backends-(\w+)", line
    ):
        assert pick.group(1) == pick.group(3) and int(pick.group(2)) >= 1
        return
    elements = re.fullmatch(
        r"(add|delete) element ip berth (services|backends-tcp|backends-udp) \{ (.*) \}", line
    )
    assert elements, line
    for item in elements.group(3).split(", "):
        if elements.group(2) == "services":
            key = re.fullmatch(rf"({_ADDRESS}) \. (tcp|udp) \. ({_PORT})( : goto {_PICK})?", item)
            assert key, item
            _check_address(key.group(1), key.group(3))
        else:
            key = re.fullmatch(rf"({_ADDRESS}) \. ({_PORT}) \. (\d+)( : ({_ADDRESS}) \. ({_PORT}))?", item)
            assert key, item
            _check_address(key.group(1), key.group(2))
            if key.group(4):
                _check_address(key.group(5), key.group(6))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(table=tables, node=node_addresses, before=tables)
def test_any_route_table_gives_only_well_formed_lines_and_every_valid_route(
    table: list[agent_pb.ServiceRoute], node: str, before: list[agent_pb.ServiceRoute]
) -> None:
    with _quiet():
        rule_set = nft_rules.build(table, node, CIDR)
        old = nft_rules.build(before, node, CIDR)
    for line in nft_rules.full_script(rule_set).splitlines():
        _check_line(line)
    change = nft_rules.delta_script(old, rule_set)
    for line in (change or "").splitlines():
        _check_line(line)
    claimed: set[str] = set()
    for route in sorted(table, key=lambda r: (r.cluster, r.name)):
        if not _valid(route):
            continue
        for port in route.ports:
            protocol = rules.PROTOCOLS[port.protocol]
            served = [
                f"{e.address} . {e.port}"
                for e in route.endpoints
                if (e.service_port, e.protocol) == (port.port, port.protocol)
            ]
            key = f"{route.vip} . {protocol} . {port.port}"
            if not served:
                continue
            assert key in rule_set.services  # (another valid route may have claimed it first)
            if key in claimed:
                continue
            claimed.add(key)
            picks = [
                rule_set.backends[protocol].get(f"{route.vip} . {port.port} . {i}")
                for i in range(len(served))
            ]
            if rule_set.services[key] == nft_rules.pick_chain(protocol, len(served)) and picks == served:
                continue
            # Only an invalid route sorted earlier can have claimed this key.
            assert any(not _valid(r) for r in table)


# -- NftablesNetwork against a fake runner ---------------------------------------------


# `nft list chains ip` with our table whole.
LISTED = "table ip berth {\n" + "".join(f"\tchain {n} {{\n\t}}\n" for n in nft_rules.BASE_CHAINS) + "}\n"


def network(runner: FakeRunner) -> NftablesNetwork:
    net = NftablesNetwork(NODE, runner=runner, check_interval=60.0, retry_delay=0.0)
    net.service_cidr = CIDR
    return net


async def test_first_sync_routes_the_cidr_locally_then_replaces_the_table_in_one_transaction() -> None:
    runner = FakeRunner()
    net = network(runner)
    net.update([web_route(), dns_route()], 1)
    assert await net.step()
    route = ("ip", "route", "replace", "local", CIDR, "dev", "lo", "table", "local")
    assert runner.commands == [route, NFT]
    assert runner.inputs(*NFT) == [nft_rules.full_script(nft_rules.build([web_route(), dns_route()], NODE))]


async def test_an_endpoint_change_is_one_small_transaction_and_its_flows_are_forgotten() -> None:
    runner = FakeRunner()
    net = network(runner)
    net.update([web_route(), dns_route()], 1)
    assert await net.step()
    runner.clear()
    moved = web_route()
    moved.endpoints[2].port = 32999
    net.update([moved, dns_route()], 2)
    assert await net.step()
    old, new = (nft_rules.build(t, NODE) for t in ([web_route(), dns_route()], [moved, dns_route()]))
    assert runner.inputs(*NFT) == [nft_rules.delta_script(old, new)]
    assert [c for c in runner.commands if c[0] != "nft"] == [
        ("conntrack", "-D", "-p", "tcp", "--reply-src", "10.213.0.13", "--reply-port-src", "32770")
    ]
    runner.clear()
    net.update([moved, dns_route()], 3)
    assert await net.step()
    assert runner.calls == [], "nothing changed, nothing applied"


async def test_a_missing_table_or_a_failure_brings_a_full_sync() -> None:
    runner = FakeRunner()
    net = network(runner)
    net.update([web_route()], 1)
    assert await net.step()
    full = nft_rules.full_script(nft_rules.build([web_route()], NODE))

    runner.clear()
    runner.answer("nft", "list", "chains", stdout=LISTED)
    assert await net.step()  # a quiet round: only the cheap check
    assert runner.commands == [("nft", "list", "chains", "ip")]

    runner.clear()
    runner.answer("nft", "list", "chains", stdout="table ip nat {\n}\n")  # our table is gone
    assert await net.step()
    assert runner.inputs(*NFT) == [full]

    runner.clear()
    moved = web_route()
    moved.endpoints[0].port = 40000
    runner.answer(*NFT, returncode=1, stderr="Error: Could not process rule", once=True)
    net.update([moved], 2)
    assert not await net.step()
    assert await net.step()
    assert runner.inputs(*NFT)[-1] == nft_rules.full_script(nft_rules.build([moved], NODE))


# -- choosing the backend --------------------------------------------------------------


def test_auto_takes_nftables_when_a_probe_table_can_be_made() -> None:
    runner = FakeRunner()
    assert backend.choose("auto", runner) == "nftables"
    assert runner.commands == [
        ("nft", "add", "table", "ip", backend.PROBE_TABLE),
        ("nft", "delete", "table", "ip", backend.PROBE_TABLE),
    ]


def test_auto_falls_back_to_iptables_without_nft_or_when_nft_fails() -> None:
    missing = FakeRunner()
    missing.raise_on("nft", error=FileNotFoundError("nft"))
    assert backend.choose("auto", missing) == "iptables"
    refused = FakeRunner()
    refused.answer("nft", "add", returncode=1, stderr="Operation not supported")
    assert backend.choose("auto", refused) == "iptables"


def test_asked_backends() -> None:
    runner = FakeRunner()
    assert backend.choose("iptables", runner) == "iptables" and runner.calls == []
    assert backend.choose("nftables", runner) == "nftables"
    runner.raise_on("nft", error=FileNotFoundError("nft"))
    with pytest.raises(FailedPrecondition, match="--netfilter nftables"):
        backend.choose("nftables", runner)


async def test_the_other_backends_rules_are_removed_after_the_first_full_sync_only() -> None:
    runner = FakeRunner()
    runner.answer("iptables", "-t", "nat", "-D", returncode=1)
    runner.answer("iptables", "-t", "filter", "-D", returncode=1)
    net = backend.make_network("nftables", NODE, runner=runner)
    net.service_cidr = CIDR
    net.update([web_route()], 1)
    assert await net.step()
    commands = runner.commands
    assert commands.index(NFT) < commands.index(
        ("iptables", "-t", "nat", "-D", "PREROUTING", "-j", rules.SERVICES)
    )
    runner.clear()
    moved = web_route()
    moved.endpoints[0].port = 40000
    net.update([moved], 2)
    assert await net.step()
    assert not any(c[0].startswith("iptables") for c in runner.commands)

    runner = FakeRunner()
    net = backend.make_network("iptables", NODE, runner=runner)
    net.service_cidr = CIDR
    net.update([web_route()], 1)
    assert await net.step()
    assert runner.inputs(*NFT) == [nft_rules.remove_script()]


def test_remove_owned_rules_takes_off_both_backends_and_the_route_even_without_iptables() -> None:
    runner = FakeRunner()
    runner.raise_on("iptables", error=FileNotFoundError("iptables"))
    runner.raise_on("iptables-save", error=FileNotFoundError("iptables-save"))
    backend.remove_owned_rules(CIDR, runner)
    assert runner.inputs(*NFT) == ["table ip berth\ndelete table ip berth\n"]
    assert runner.commands[-1] == ("ip", "route", "del", "local", CIDR, "dev", "lo", "table", "local")


async def test_the_iptables_forward_accept_is_kept_beside_the_table_where_iptables_is_there() -> None:
    # A drop in iptables' FORWARD (Docker's policy) cannot be overridden from our table.
    runner = FakeRunner()
    runner.answer("iptables", "-t", "filter", "-C", "FORWARD", returncode=1, once=True)
    net = NftablesNetwork(NODE, runner=runner, check_interval=60.0, retry_delay=0.0, iptables_forward=True)
    net.service_cidr = CIDR
    net.update([web_route()], 1)
    assert await net.step()
    assert runner.inputs("iptables-restore", "--noflush") == [f"*filter\n{rules.FORWARD_RULES}\nCOMMIT\n"]
    assert ("iptables", "-t", "filter", "-I", "FORWARD", "1", "-j", rules.FORWARD) in runner.commands

    runner.clear()
    runner.answer("nft", "list", "chains", stdout=LISTED)
    runner.answer("iptables", "-t", "filter", "-C", "FORWARD", returncode=1, once=True)  # someone removed it
    assert await net.step()
    assert runner.inputs(*NFT) == [nft_rules.full_script(nft_rules.build([web_route()], NODE))]


async def test_no_iptables_is_no_obstacle_to_the_nftables_backend() -> None:
    runner = FakeRunner()
    runner.raise_on("iptables-restore", error=FileNotFoundError("iptables-restore"))
    runner.raise_on("iptables", error=FileNotFoundError("iptables"))
    net = NftablesNetwork(NODE, runner=runner, check_interval=60.0, retry_delay=0.0, iptables_forward=True)
    net.service_cidr = CIDR
    net.update([web_route()], 1)
    assert await net.step()
    runner.clear()
    runner.answer("nft", "list", "chains", stdout=LISTED)
    assert await net.step()
    assert runner.commands == [("nft", "list", "chains", "ip")], "healthy, no resync"


def test_retiring_iptables_for_nftables_keeps_its_forward_accept() -> None:
    runner = FakeRunner()
    runner.answer("iptables", "-t", "nat", "-D", returncode=1)
    backend.retire("nftables", runner)
    assert not any("filter" in command for command in runner.commands)
    assert ("iptables-save", "-t", "nat") in runner.commands


def _apply(rule_set: nft_rules.NftRuleSet, change: str | None) -> tuple[dict[str, str], set[str]]:
    """Every map's elements ("map key" -> value) and the pick chains after `change` on `rule_set`."""
    services, backends = rule_set.services, rule_set.backends
    elements = {f"services {k}": f"goto {v}" for k, v in services.items()}
    elements |= {f"backends-{p} {k}": v for p in backends for k, v in backends[p].items()}
    chains = set(rule_set.chains)
    for line in (change or "").splitlines():
        if found := re.fullmatch(_ELEMENTS, line):
            for item in found.group(3).split(", "):
                key, _, value = item.partition(" : ")
                name = f"{found.group(2)} {key}"
                if found.group(1) == "delete":
                    assert name in elements, f"deleting a missing element: {line}"
                    del elements[name]
                else:
                    assert name not in elements, f"adding an element twice: {line}"
                    elements[name] = value
        elif line.startswith("add chain ip berth "):
            chains.add(line.split()[-1])
        elif line.startswith("delete chain ip berth "):
            chains.remove(line.split()[-1])
    return elements, chains


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(before=tables, after=tables)
def test_a_delta_takes_any_table_to_exactly_the_next_one(
    before: list[agent_pb.ServiceRoute], after: list[agent_pb.ServiceRoute]
) -> None:
    # Some routes of `after` kept from `before` unchanged, as in real updates.
    after = [*after, *before[: len(before) // 2]]
    after = list({(r.cluster, r.name): r for r in after}.values())
    with _quiet():
        old = nft_rules.build(before, NODE, CIDR)
        new = nft_rules.build(after, NODE, CIDR)
    assert _apply(old, nft_rules.delta_script(old, new)) == _apply(new, None)


def test_owned_rules_shows_both_backends_and_copes_without_either() -> None:
    runner = FakeRunner()
    runner.answer("iptables-save", "-t", "filter", stdout=":BERTH-FORWARD - [0:0]\n:DOCKER - [0:0]\n")
    runner.answer("nft", "list", "table", stdout="table ip berth {\n}\n")
    shown = backend.owned_rules(runner)
    assert shown == "*nat\n*filter\n:BERTH-FORWARD - [0:0]\ntable ip berth {\n}"
    missing = FakeRunner()
    missing.raise_on("iptables-save", error=FileNotFoundError("iptables-save"))
    missing.answer("nft", "list", "table", returncode=1, stderr="No such file or directory")
    assert backend.owned_rules(missing) == ""
