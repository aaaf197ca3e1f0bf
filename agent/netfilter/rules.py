"""Builds Berth's nat rules for a route table as one iptables-restore batch (pure).

    PREROUTING, OUTPUT ──▶ BERTH-SERVICES
        -d VIP --dport P            ──▶ BERTH-SVC-<hash>   one chain per service port
        -d NODE --dport LB (local)  ──▶ BERTH-SVC-<hash>   load-balancer ports
    BERTH-SVC-<hash>: mark for masquerade, then DNAT to an endpoint (node
        address and host port) picked at random: -m statistic with
        probability 1/n, 1/(n-1), ... 1
    POSTROUTING ──▶ BERTH-POSTROUTING: MASQUERADE marked packets, so replies
        from another host come back through this one
    BERTH-CANARY: holds one rule; if it is gone, someone flushed the table

Chain names are prefixed and hashed, so Berth only ever touches its own.

A second line of defence behind the control plane's validation: every value
that reaches a rule is checked here first (names are DNS labels, addresses
parse as IPv4, ports are 1-65535, protocols TCP or UDP, VIPs inside the
service CIDR). A bad value is left out and logged once with its route's
cluster and service, so one bad route never fails the batch for the others.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass

from berth.errors import InvalidArgument
from berth.names import check_dns_label
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb

log = logging.getLogger(__name__)

PREFIX = "BERTH-"
SERVICES = "BERTH-SERVICES"
POSTROUTING = "BERTH-POSTROUTING"
MARK = "BERTH-MARK"
CANARY = "BERTH-CANARY"
FORWARD = "BERTH-FORWARD"
MASQUERADE_MARK = "0x4000/0x4000"

# (table, built-in chain, our chain) jumps kept at the top of the built-in chains.
JUMPS = (
    ("nat", "PREROUTING", SERVICES),
    ("nat", "OUTPUT", SERVICES),
    ("nat", "POSTROUTING", POSTROUTING),
    ("filter", "FORWARD", FORWARD),
)
CANARY_RULE = ("nat", CANARY, ["-j", "RETURN"])
# The filter table's part: forwarded service traffic (marked) and its replies are accepted
# even where the FORWARD policy drops (Docker sets it so).
FORWARD_RULES = "\n".join(
    [
        f":{FORWARD} - [0:0]",
        f"-A {FORWARD} -m mark --mark {MASQUERADE_MARK} -j ACCEPT",
        f"-A {FORWARD} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    ]
)

PROTOCOLS: dict[int, str] = {pb.TCP: "tcp", pb.UDP: "udp"}
# Our own chain names (iptables allows 28 characters); anything else is never touched.
OWN_CHAIN = re.compile(r"BERTH-[A-Z0-9-]{1,22}")


# -- the second line of defence ------------------------------------------------

# (cluster, service, problem) already logged; bounded, so a stream of bad routes
# cannot grow it without end (after a clear, a problem is logged once more).
_reported: set[tuple[str, str, str]] = set()
MAX_REPORTED = 10_000


def _shown(value: object) -> str:
    """A value for a log line: ascii() (control and non-ASCII characters escaped), cut short."""
    text = ascii(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _refuse(cluster: str, service: str, problem: str) -> None:
    key = (cluster, service, problem)
    if key in _reported:
        return
    if len(_reported) >= MAX_REPORTED:
        _reported.clear()
    _reported.add(key)
    log.warning(
        "event=route_value_refused cluster=%s service=%s problem=%s effect=left_out",
        _shown(cluster),
        _shown(service),
        _shown(problem),
    )


def ipv4(text: str) -> str | None:
    """text if it is a unicast IPv4 address written the usual way, else None."""
    try:
        address = ipaddress.IPv4Address(text)
    except ValueError:
        return None
    if address.is_unspecified or address.is_multicast or address.is_reserved or str(address) != text:
        return None
    return text


def valid_port(port: int) -> bool:
    return 1 <= port <= 65535


def valid_endpoint(address: str, port: int, protocol: int) -> bool:
    return ipv4(address) is not None and valid_port(port) and protocol in PROTOCOLS


def _label(text: str) -> bool:
    try:
        check_dns_label("service", text)
    except InvalidArgument:
        return False
    return True


@dataclass(frozen=True)
class CheckedRoute:
    """A route with only the values the builder expects; bad ones left out."""

    cluster: str
    name: str
    vip: str
    ports: tuple[tuple[int, int], ...]  # (port, protocol), no duplicates
    endpoints: tuple[tuple[str, int, int, int], ...]  # (address, port, service port, protocol)
    load_balancers: tuple[tuple[int, int, int], ...]  # (port, service port, protocol)


def check_route(route: agent_pb.ServiceRoute, service_cidr: str = "") -> CheckedRoute | None:
    """The route's expected values (None: nothing of it can be programmed); logs each refusal once."""
    cluster, name = route.cluster, route.name
    if not (_label(cluster) and _label(name)):
        _refuse(cluster, name, "cluster or service name is not a DNS label")
        return None
    if ipv4(route.vip) is None:
        _refuse(cluster, name, f"virtual IP {route.vip!r} is not an IPv4 address")
        return None
    if service_cidr:
        try:
            inside = ipaddress.IPv4Address(route.vip) in ipaddress.IPv4Network(service_cidr)
        except ValueError:
            inside = False
        if not inside:
            _refuse(cluster, name, f"virtual IP {route.vip} is outside the service CIDR {service_cidr!r}")
            return None
    ports: list[tuple[int, int]] = []
    for port in route.ports:
        key = (port.port, port.protocol)
        if not valid_port(port.port) or port.protocol not in PROTOCOLS:
            _refuse(cluster, name, f"service port {port.port} protocol {port.protocol}")
        elif key in ports:
            _refuse(cluster, name, f"service port {port.port} protocol {port.protocol} listed twice")
        else:
            ports.append(key)
    endpoints: list[tuple[str, int, int, int]] = []
    for e in route.endpoints:
        if valid_endpoint(e.address, e.port, e.protocol) and valid_port(e.service_port):
            endpoints.append((e.address, e.port, e.service_port, e.protocol))
        else:
            _refuse(
                cluster,
                name,
                f"endpoint {e.address!r} port {e.port} service port {e.service_port} protocol {e.protocol}",
            )
    balancers: list[tuple[int, int, int]] = []
    for lb in route.load_balancers:
        if valid_port(lb.port) and valid_port(lb.service_port) and lb.protocol in PROTOCOLS:
            balancers.append((lb.port, lb.service_port, lb.protocol))
        else:
            _refuse(
                cluster,
                name,
                f"load-balancer port {lb.port} service port {lb.service_port} protocol {lb.protocol}",
            )
    return CheckedRoute(cluster, name, route.vip, tuple(ports), tuple(endpoints), tuple(balancers))


# -- building ------------------------------------------------------------------


def _hash(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:16].upper()


@dataclass(frozen=True)
class RuleSet:
    # Our nat chains and their -A lines, in order; batch() declares them.
    nat: dict[str, tuple[str, ...]]
    filter: str

    @property
    def chains(self) -> frozenset[str]:
        return frozenset(self.nat)

    @property
    def nat_rules(self) -> list[str]:
        return [rule for rules in self.nat.values() for rule in rules]


def service_chain(cluster: str, service: str, port: int, protocol: int) -> str:
    return PREFIX + "SVC-" + _hash(cluster, service, str(port), PROTOCOLS[protocol])


@functools.lru_cache(maxsize=100_000)
def _route_rules(
    route_bytes: bytes, node_address: str, service_cidr: str
) -> tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...]:
    """Per service port of one route: (its chain, its BERTH-SERVICES lines, its chain's rules).

    Memoized on the route's bytes: at ten thousand services, formatting every
    rule again on each change costs more than applying the change.
    node_address: "" when it is not an address (no load-balancer rules then).
    """
    route = check_route(agent_pb.ServiceRoute.FromString(route_bytes), service_cidr)
    if route is None:
        return ()
    result = []
    for port_number, port_protocol in route.ports:
        protocol = PROTOCOLS[port_protocol]
        name = f"{route.cluster}/{route.name}:{port_number}/{protocol}"
        endpoints = [
            (address, port)
            for address, port, service_port, endpoint_protocol in route.endpoints
            if service_port == port_number and endpoint_protocol == port_protocol
        ]
        if not endpoints:
            # No rule: the VIP is routed locally, so the client gets a
            # refusal at once instead of a packet leaving the host.
            continue
        svc = service_chain(route.cluster, route.name, port_number, port_protocol)
        entry = [
            f"-A {SERVICES} -d {route.vip}/32 -p {protocol} -m {protocol} --dport {port_number} "
            f'-m comment --comment "{name}" -j {svc}'
        ]
        for lb_port, lb_service_port, lb_protocol in route.load_balancers:
            if node_address and lb_service_port == port_number and lb_protocol == port_protocol:
                entry.append(
                    f"-A {SERVICES} -d {node_address}/32 -p {protocol} -m {protocol} --dport {lb_port} "
                    f'-m comment --comment "{name} load balancer" -j {svc}'
                )
        chain = [f"-A {svc} -j {MARK}"]
        for index, (address, port) in enumerate(endpoints):
            remaining = len(endpoints) - index
            pick = "" if remaining == 1 else f"-m statistic --mode random --probability {1 / remaining:.11f} "
            # DNAT straight from the service chain: no chain per endpoint.
            # At 10,000 services iptables' cost grows with the number of
            # chains far more than with the number of rules.
            target = f"{address}:{port}"
            chain.append(f"-A {svc} -p {protocol} -m {protocol} {pick}-j DNAT --to-destination {target}")
        result.append((svc, tuple(entry), tuple(chain)))
    return tuple(result)


def build(routes: Iterable[agent_pb.ServiceRoute], node_address: str, service_cidr: str = "") -> RuleSet:
    """The complete rule set for these routes on the node with this address.

    service_cidr: when given, a route whose VIP lies outside it is left out.
    """
    ordered = sorted(routes, key=lambda r: (r.cluster, r.name))
    return build_serialized(
        [r.SerializeToString(deterministic=True) for r in ordered], node_address, service_cidr
    )


def build_serialized(routes: Iterable[bytes], node_address: str, service_cidr: str = "") -> RuleSet:
    """build(), from routes already serialized and in (cluster, name) order.

    A service port that comes twice (the same service twice in the table) keeps its first rules.
    """
    if ipv4(node_address) is None:
        _refuse("", "", f"node address {node_address!r} is not an IPv4 address: no load-balancer rules")
        node_address = ""
    services: list[str] = []
    service_chains: dict[str, tuple[str, ...]] = {}
    for raw in routes:
        for svc, entry, chain in _route_rules(raw, node_address, service_cidr):
            if svc in service_chains:
                continue  # the same service twice in the table
            services.extend(entry)
            service_chains[svc] = chain
    nat: dict[str, tuple[str, ...]] = {
        SERVICES: tuple(services),
        POSTROUTING: (f"-A {POSTROUTING} -m mark --mark {MASQUERADE_MARK} -j MASQUERADE",),
        MARK: (f"-A {MARK} -j MARK --or-mark 0x4000",),
        CANARY: (f"-A {CANARY} -j RETURN",),
        **service_chains,
    }
    return RuleSet(nat=nat, filter=FORWARD_RULES)


def batch(rule_set: RuleSet, existing_nat_chains: Iterable[str]) -> str:
    """An iptables-restore --noflush input: our chains replaced, stale ones of ours deleted."""
    stale = sorted({c for c in existing_nat_chains if OWN_CHAIN.fullmatch(c) and c not in rule_set.chains})
    # Declaring a chain flushes it: ours are rebuilt whole, stale ones emptied
    # so that -X can delete them once nothing jumps to them any more.
    declared = sorted(rule_set.nat) + stale
    nat = ["*nat", *(f":{chain} - [0:0]" for chain in declared), *rule_set.nat_rules]
    nat += [f"-X {chain}" for chain in stale]
    nat.append("COMMIT")
    return "\n".join([*nat, "*filter", rule_set.filter, "COMMIT", ""])


def delta(old: RuleSet, new: RuleSet) -> str | None:
    """A batch rewriting only the chains that changed (None: nothing to do).

    kube-proxy's lesson: at ten thousand services a full rewrite costs
    seconds, while one endpoint change touches one service chain (Berth
    DNATs straight from the service chain, so there are no endpoint chains).
    """
    before, after = old.nat, new.nat
    changed = [chain for chain, rules in after.items() if before.get(chain) != rules]
    removed = sorted(set(before) - set(after))
    if not changed and not removed:
        return None
    changed.sort()
    lines = ["*nat", *(f":{chain} - [0:0]" for chain in changed + removed)]
    for chain in changed:
        lines += after[chain]
    lines += [f"-X {chain}" for chain in removed]
    return "\n".join([*lines, "COMMIT", ""])


def served_udp_ports(routes: Iterable[agent_pb.ServiceRoute]) -> set[tuple[str, int]]:
    """(vip, service port) of every UDP service port that has at least one valid endpoint."""
    served = set()
    for route in routes:
        checked = check_route(route)
        if checked is not None:
            served |= {
                (checked.vip, service_port)
                for _, _, service_port, protocol in checked.endpoints
                if protocol == pb.UDP
            }
    return served


def endpoint_keys(routes: Iterable[agent_pb.ServiceRoute]) -> set[tuple[str, str, int, int]]:
    """(vip, endpoint address, endpoint port, protocol) for every valid endpoint (for conntrack)."""
    keys = set()
    for route in routes:
        checked = check_route(route)
        if checked is not None:
            keys |= {
                (checked.vip, address, port, protocol) for address, port, _, protocol in checked.endpoints
            }
    return keys
