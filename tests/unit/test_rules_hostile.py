"""The rule builder as a second line of defence: whatever route table it is given, what it emits
is a well-formed iptables-restore batch that touches only Berth's chains, a bad value is left
out (logged once with its cluster and service), and every valid route is still programmed."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.netfilter import rules
from agent.netfilter.iptables import ServiceNetwork
from agent.netfilter.runner import FakeRunner
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb

NODE = "10.213.0.11"
CIDR = "10.96.0.0/16"

# -- what a well-formed batch looks like ----------------------------------------

_IP = r"\d{1,3}(?:\.\d{1,3}){3}"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_SVC = r"BERTH-SVC-[0-9A-F]{16}"
_ENTRY = re.compile(
    rf"-A BERTH-SERVICES -d (?P<ip>{_IP})/32 -p (?P<proto>tcp|udp) -m (?P=proto) --dport (?P<port>\d{{1,5}}) "
    rf'-m comment --comment "(?P<cluster>{_LABEL})/(?P<name>{_LABEL}):(?P<sport>\d{{1,5}})/(?P=proto)'
    rf'(?P<lb> load balancer)?" -j (?P<target>{_SVC})'
)
_MARK = re.compile(rf"-A (?P<chain>{_SVC}) -j BERTH-MARK")
_DNAT = re.compile(
    rf"-A (?P<chain>{_SVC}) -p (?P<proto>tcp|udp) -m (?P=proto) "
    r"(?:-m statistic --mode random --probability 0\.\d{11} )?"
    rf"-j DNAT --to-destination (?P<ip>{_IP}):(?P<port>\d{{1,5}})"
)
_DECLARE = re.compile(r":(?P<chain>BERTH-[A-Z0-9-]{1,22}) - \[0:0\]")
_DELETE = re.compile(r"-X (?P<chain>BERTH-[A-Z0-9-]{1,22})")
_FIXED_NAT = {
    "-A BERTH-POSTROUTING -m mark --mark 0x4000/0x4000 -j MASQUERADE",
    "-A BERTH-MARK -j MARK --or-mark 0x4000",
    "-A BERTH-CANARY -j RETURN",
}
_FIXED_FILTER = [
    ":BERTH-FORWARD - [0:0]",
    "-A BERTH-FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT",
    "-A BERTH-FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
]


@dataclass
class Parsed:
    entries: list[dict[str, str]]
    dnats: list[dict[str, str]]
    declared: list[str]


def _check_address_and_port(match: re.Match[str]) -> None:
    address = ipaddress.IPv4Address(match["ip"])  # raises on anything else
    assert not (address.is_unspecified or address.is_multicast or address.is_reserved), match.string
    assert 1 <= int(match["port"]) <= 65535, match.string


def parse_nat(lines: list[str], whole: bool) -> Parsed:
    """The lines of one *nat section (without header and COMMIT), each of a shape Berth produces."""
    parsed = Parsed([], [], [])
    for line in lines:
        if m := _DECLARE.fullmatch(line):
            parsed.declared.append(m["chain"])
        elif m := _ENTRY.fullmatch(line):
            _check_address_and_port(m)
            assert 1 <= int(m["sport"]) <= 65535, line
            parsed.entries.append(m.groupdict())
        elif m := _DNAT.fullmatch(line):
            _check_address_and_port(m)
            parsed.dnats.append(m.groupdict())
        elif not (_MARK.fullmatch(line) or _DELETE.fullmatch(line) or line in _FIXED_NAT):
            raise AssertionError(f"unexpected line {line!r}")
    assert len(set(parsed.declared)) == len(parsed.declared), "a chain declared twice"
    declared = set(parsed.declared)
    for line in lines:
        if line.startswith(("-A ", "-X ")):
            assert line.split()[1] in declared, f"{line!r}: chain not declared in this batch"
        if whole and " -j BERTH-" in line:
            # In a full batch every chain we jump to is ours and declared, or the batch fails.
            assert line.rsplit(" -j ", 1)[1] in declared, f"{line!r}: jump to an undeclared chain"
    return parsed


def parse_batch(text: str) -> Parsed:
    """A full batch: *nat ... COMMIT *filter ... COMMIT, nothing else."""
    assert all(" " <= c <= "~" or c == "\n" for c in text), "control or non-ASCII character in the batch"
    lines = text.split("\n")
    assert lines[-1] == "", "the batch ends with a newline"
    lines = lines[:-1]
    assert lines[0] == "*nat" and lines.count("*nat") == 1 and lines.count("*filter") == 1
    split = lines.index("*filter")
    assert lines[split - 1] == "COMMIT" and lines[-1] == "COMMIT" and lines.count("COMMIT") == 2
    assert lines[split + 1 : -1] == _FIXED_FILTER
    return parse_nat(lines[1 : split - 1], whole=True)


def parse_delta(text: str) -> None:
    assert all(" " <= c <= "~" or c == "\n" for c in text)
    lines = text.split("\n")
    assert lines[0] == "*nat" and lines[-2:] == ["COMMIT", ""] and lines.count("COMMIT") == 1
    parse_nat(lines[1:-2], whole=False)


# -- route tables, valid and hostile --------------------------------------------

NASTY = [
    "",
    " ",
    "web\n",
    "web\nCOMMIT",
    "x\nCOMMIT\n*filter\n-A INPUT -j ACCEPT\nCOMMIT\n",
    "*filter",
    "COMMIT",
    '"',
    'a" -j ACCEPT -m comment --comment "',
    "web -j ACCEPT",
    "WEB",
    "-web",
    "web-",
    "a" * 64,
    "web\r",
    "web\x00",
    "w\u00e9b",
    "web\u2028",
    "10.0.0.1\n",
    "10.0.0.1\nCOMMIT",
    " 10.0.0.1",
    "10.0.0.1 -j DROP",
    "10.0.0.1:80",
    "10.0.0.1/8",
    "::1",
    "fe80::1%eth0",
    "2001:db8::1",
    "::ffff:10.0.0.1",
    "10.0.0.256",
    "010.0.0.1",
    "0.0.0.0",
    "224.0.0.1",
    "255.255.255.255",
    "240.0.0.1",
    "1e3",
    "\u0661.1.1.1",
    "8.8.8.8",  # a fine address, but outside the service CIDR as a VIP
]
nasty_text = st.one_of(st.sampled_from(NASTY), st.text(max_size=12))
_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
labels = st.one_of(
    st.text(_ALNUM, min_size=1, max_size=3),
    st.builds(
        lambda a, m, b: a + m + b,
        st.sampled_from(_ALNUM),
        st.text(_ALNUM + "-", max_size=61),
        st.sampled_from(_ALNUM),
    ),
)
valid_ports = st.integers(1, 65535)
nasty_ports = st.one_of(st.sampled_from([0, 65536, 70000, 2**31, 2**32 - 1]), st.integers(65536, 2**32 - 1))
valid_protocols = st.sampled_from([pb.TCP, pb.UDP])
nasty_protocols = st.one_of(st.sampled_from([2, 7, -1, 2**31 - 1]), st.integers(-(2**31), 2**31 - 1))
endpoint_addresses = st.builds(lambda c, d: f"10.213.{c}.{d}", st.integers(0, 255), st.integers(1, 254))
vips = st.builds(lambda c, d: f"10.96.{c}.{d}", st.integers(0, 255), st.integers(1, 254))


@st.composite
def routes(draw: st.DrawFn, clean: bool) -> agent_pb.ServiceRoute:
    """A route; with clean=False, any field may be replaced by a hostile value."""

    def pick(valid: st.SearchStrategy, nasty: st.SearchStrategy):  # type: ignore[no-untyped-def,type-arg]
        return draw(valid) if clean or draw(st.integers(0, 3)) else draw(nasty)

    ports = draw(
        st.lists(st.tuples(st.integers(1, 65535), valid_protocols), min_size=1, max_size=3, unique=True)
    )
    route = agent_pb.ServiceRoute(
        cluster=pick(labels, nasty_text),
        name=pick(labels, nasty_text),
        vip=pick(vips, nasty_text),
    )
    for number, protocol in ports:
        route.ports.append(
            pb.ServicePort(
                port=pick(st.just(number), nasty_ports), protocol=pick(st.just(protocol), nasty_protocols)
            )
        )
    for _ in range(draw(st.integers(0, 4))):
        number, protocol = draw(st.sampled_from(ports))
        route.endpoints.append(
            pb.Endpoint(
                address=pick(endpoint_addresses, nasty_text),
                port=pick(valid_ports, nasty_ports),
                service_port=pick(st.just(number), nasty_ports),
                protocol=pick(st.just(protocol), nasty_protocols),
            )
        )
    if draw(st.booleans()):
        number, protocol = draw(st.sampled_from(ports))
        route.load_balancers.append(
            pb.LoadBalancerPort(
                port=pick(valid_ports, nasty_ports),
                service_port=pick(st.just(number), nasty_ports),
                protocol=pick(st.just(protocol), nasty_protocols),
            )
        )
    return route


# Clean and hostile routes mixed; every (cluster, name) once, so each clean route must show.
tables = st.lists(
    st.tuples(st.booleans(), st.booleans()).flatmap(lambda flags: routes(clean=flags[0] or flags[1])),
    max_size=6,
    unique_by=lambda r: (r.cluster, r.name),
)
node_addresses = st.one_of(st.just(NODE), st.sampled_from(NASTY))
existing_chains = st.lists(
    st.one_of(
        st.sampled_from(["BERTH-SVC-STALE", "DOCKER", "BERTH-SEP-OLD", "BERTH-X\n-F INPUT"]), nasty_text
    ),
    max_size=4,
)


def _valid(route: agent_pb.ServiceRoute) -> bool:
    """Every value is one the builder expects (the test's own statement of the rules)."""

    def address(text: str, network: str = "0.0.0.0/0") -> bool:
        try:
            parsed = ipaddress.IPv4Address(text)
        except ValueError:
            return False
        return (
            str(parsed) == text
            and parsed in ipaddress.IPv4Network(network)
            and not (parsed.is_unspecified or parsed.is_multicast or parsed.is_reserved)
        )

    def label(text: str) -> bool:
        return re.fullmatch(_LABEL, text) is not None

    def port(number: int) -> bool:
        return 1 <= number <= 65535

    protocols = (pb.TCP, pb.UDP)
    return (
        label(route.cluster)
        and label(route.name)
        and address(route.vip, CIDR)
        and all(port(p.port) and p.protocol in protocols for p in route.ports)
        and len({(p.port, p.protocol) for p in route.ports}) == len(route.ports)
        and all(
            address(e.address) and port(e.port) and port(e.service_port) and e.protocol in protocols
            for e in route.endpoints
        )
        and all(
            port(lb.port) and port(lb.service_port) and lb.protocol in protocols
            for lb in route.load_balancers
        )
    )


def _assert_programmed(route: agent_pb.ServiceRoute, parsed: Parsed, node: str) -> None:
    """Every port of a valid route with endpoints has its VIP entry, load balancers and DNATs."""
    for port in route.ports:
        protocol = rules.PROTOCOLS[port.protocol]
        endpoints = {
            (e.address, str(e.port))
            for e in route.endpoints
            if e.service_port == port.port and e.protocol == port.protocol
        }
        mine = [
            e
            for e in parsed.entries
            if (e["cluster"], e["name"], e["sport"], e["proto"])
            == (route.cluster, route.name, str(port.port), protocol)
        ]
        if not endpoints:
            assert not mine
            continue
        vip = [e for e in mine if not e["lb"]]
        assert [(e["ip"], e["port"]) for e in vip] == [(route.vip, str(port.port))]
        balancers = {
            str(lb.port)
            for lb in route.load_balancers
            if lb.service_port == port.port and lb.protocol == port.protocol
        }
        if node == NODE:
            assert {e["port"] for e in mine if e["lb"]} == balancers
            assert all(e["ip"] == NODE for e in mine if e["lb"])
        chain = vip[0]["target"]
        assert {(d["ip"], d["port"]) for d in parsed.dnats if d["chain"] == chain} == endpoints


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Hundreds of examples each refuse values: keep the refusals out of the captured log."""
    logger = logging.getLogger("agent.netfilter.rules")
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = False


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(table=tables, node=node_addresses, existing=existing_chains, before=tables)
def test_any_route_table_gives_a_well_formed_batch_of_berths_chains_with_every_valid_route(
    table: list[agent_pb.ServiceRoute],
    node: str,
    existing: list[str],
    before: list[agent_pb.ServiceRoute],
) -> None:
    with _quiet():
        rule_set = rules.build(table, node, CIDR)
        old = rules.build(before, node, CIDR)
    parsed = parse_batch(rules.batch(rule_set, existing))
    for route in table:
        if _valid(route):
            _assert_programmed(route, parsed, node)
    change = rules.delta(old, rule_set)
    if change is not None:
        parse_delta(change)


@settings(max_examples=200, deadline=None)
@given(table=tables)
def test_only_valid_endpoints_of_valid_routes_reach_conntrack(table: list[agent_pb.ServiceRoute]) -> None:
    with _quiet():
        keys = rules.endpoint_keys(table)
    for vip, address, port, protocol in keys:
        assert rules.ipv4(vip) == vip and rules.ipv4(address) == address
        assert 1 <= port <= 65535 and protocol in (pb.TCP, pb.UDP)


# -- one bad value, the rest programmed --------------------------------------


def _route(name: str, vip: str = "10.96.0.2", cluster: str = "default") -> agent_pb.ServiceRoute:
    return agent_pb.ServiceRoute(
        cluster=cluster,
        name=name,
        vip=vip,
        ports=[pb.ServicePort(name="http", port=80)],
        endpoints=[
            pb.Endpoint(address="10.213.0.11", port=32768, service_port=80),
            pb.Endpoint(address="10.213.0.12", port=32769, service_port=80),
        ],
        load_balancers=[pb.LoadBalancerPort(port=8080, service_port=80)],
    )


def test_an_injected_route_is_left_out_logged_once_and_the_others_are_programmed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    evil = _route("web", "10.96.0.3")
    evil.endpoints[0].address = "10.213.0.11:1\nCOMMIT\n*filter\n-I INPUT -j ACCEPT\nCOMMIT\n#"
    evil.name = "web\n"
    good = _route("api", "10.96.0.4")
    with caplog.at_level(logging.WARNING, logger="agent.netfilter.rules"):
        for _ in range(3):
            text = rules.batch(rules.build([evil, good], NODE, CIDR), [])
            rules.endpoint_keys([evil, good])
    parsed = parse_batch(text)
    assert {e["name"] for e in parsed.entries} == {"api"}
    assert "INPUT" not in text and "10.96.0.3" not in text
    refused = [r.getMessage() for r in caplog.records if "route_value_refused" in r.getMessage()]
    assert len(refused) == 1, refused
    assert "cluster='default' service='web\\n'" in refused[0] and "\n" not in refused[0]


def test_a_bad_endpoint_or_load_balancer_is_left_out_and_the_rest_of_its_service_stays() -> None:
    route = _route("web")
    route.endpoints.append(pb.Endpoint(address="10.213.0.13", port=70000, service_port=80))
    route.endpoints.append(pb.Endpoint(address="10.213.0.14", port=30000, service_port=80, protocol=7))  # type: ignore[arg-type]
    route.endpoints.append(pb.Endpoint(address="2001:db8::1", port=30000, service_port=80))
    route.load_balancers.append(pb.LoadBalancerPort(port=0, service_port=80))
    parsed = parse_batch(rules.batch(rules.build([route], NODE, CIDR), []))
    assert {(d["ip"], d["port"]) for d in parsed.dnats} == {
        ("10.213.0.11", "32768"),
        ("10.213.0.12", "32769"),
    }
    assert sorted(e["port"] for e in parsed.entries) == ["80", "8080"]


def test_a_port_with_an_unknown_protocol_or_out_of_range_is_left_out() -> None:
    route = _route("web")
    route.ports.append(pb.ServicePort(port=81, protocol=7))  # type: ignore[arg-type]
    route.ports.append(pb.ServicePort(port=70000))
    route.endpoints.append(pb.Endpoint(address="10.213.0.13", port=30000, service_port=81, protocol=7))  # type: ignore[arg-type]
    route.endpoints.append(pb.Endpoint(address="10.213.0.13", port=30001, service_port=70000))
    parsed = parse_batch(rules.batch(rules.build([route], NODE, CIDR), []))
    assert {e["sport"] for e in parsed.entries} == {"80"}
    assert len(parsed.dnats) == 2


def test_a_vip_outside_the_service_cidr_is_never_programmed() -> None:
    # 8.8.8.8:80 or the host's own address would hijack traffic that is not Berth's.
    hijack = _route("web", "8.8.8.8")
    text = rules.batch(rules.build([hijack, _route("api", "10.96.0.5")], NODE, CIDR), [])
    assert "8.8.8.8" not in text and "10.96.0.5/32" in text


def test_a_node_address_that_is_not_an_address_gives_no_load_balancer_rules() -> None:
    parsed = parse_batch(rules.batch(rules.build([_route("web")], "10.0.0.1\nCOMMIT", CIDR), []))
    assert [e["port"] for e in parsed.entries] == ["80"] and not any(e["lb"] for e in parsed.entries)


def test_only_berths_own_stale_chains_are_deleted() -> None:
    text = rules.batch(rules.build([], NODE), ["BERTH-SVC-OLD", "BERTH-X\n-F INPUT", "BERTH-" + "A" * 40])
    assert "-X BERTH-SVC-OLD" in text and "INPUT" not in text and "A" * 40 not in text
    parse_batch(text)


async def test_a_gone_endpoint_with_a_hostile_address_never_reaches_conntrack() -> None:
    runner = FakeRunner()
    net = ServiceNetwork(NODE, runner=runner, check_interval=60.0, retry_delay=0.0)
    net.service_cidr = CIDR
    route = _route("web")
    route.endpoints.append(pb.Endpoint(address="-F", port=1, service_port=80))
    route.endpoints.append(pb.Endpoint(address="10.213.0.13", port=30000, service_port=80, protocol=7))  # type: ignore[arg-type]
    net.update([route], 1)
    assert await net.step()
    runner.clear()
    del route.endpoints[:]
    net.update([route], 2)
    assert await net.step()
    conntrack = sorted(c for c in runner.commands if c[0] == "conntrack")
    assert conntrack == [
        ("conntrack", "-D", "-p", "tcp", "--reply-src", "10.213.0.11", "--reply-port-src", "32768"),
        ("conntrack", "-D", "-p", "tcp", "--reply-src", "10.213.0.12", "--reply-port-src", "32769"),
    ]
