"""Builds Berth's nftables table for a route table, and the scripts that apply it (pure).

    table ip berth                                   the only table Berth touches
      map services:     VIP . proto . port       ──▶ goto pick-<proto>-<N>
                        NODE . proto . LB port   ──▶ goto pick-<proto>-<N>   load-balancer ports
      map backends-tcp, backends-udp:
                        VIP . port . i           ──▶ endpoint address . host port, i in 0..N-1
                        NODE . LB port . i       ──▶ the same endpoints
      chain prerouting, output (nat hooks, just before iptables' nat):
          ip daddr . meta l4proto . th dport vmap @services
      chain pick-<proto>-<N>: one per protocol and endpoint count in use; marks
          for masquerade, then DNATs to the backend the packet's own destination
          and `numgen random mod N` pick: no chain per endpoint, none per service
      chain postrouting: masquerade marked packets, so replies from another
          host come back through this one
      chain forward: accept marked packets and their replies

Two hash lookups find a service and its endpoint however many services there
are, so the first packet of a connection costs the same at 10,000 services as
at one; an endpoint change replaces map elements and never touches a chain.

Why not a chain per service port: every rule that looks a named map up binds
it, and the kernel walks all the map's elements at each binding, so 10,000
service chains over one map of 50,000 endpoints took 8 s to load; 10,000
service chains with a small anonymous map each took 10 s to load, 0.2 s per
change and seconds to list. A handful of shared pick chains load in half a
second (bench/netfilter.py).

The same features as the iptables backend (rules.py), from the same checked
routes (rules.check_route, the second line of defence): a value that is not
what the builder expects never reaches the script.

Scripts are for `nft -f -`, which applies a file as one transaction: the full
script deletes and re-adds our table in one go; a delta touches only the map
elements (and pick chains) that changed.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass

from agent.netfilter import rules
from berth.v1 import agent_pb2 as agent_pb

FAMILY = "ip"
TABLE = "berth"
SERVICES = "services"
MARK = "0x4000"
# Just before iptables' nat chains (dstnat, -100): the first NAT binding of a
# flow wins, so a VIP is ours even where Docker DNATs the same port.
NAT_PRIORITY = -110
FILTER_PRIORITY = -10
PROTOCOL_NAMES = ("tcp", "udp")

# The chains that hook into netfilter, as they are declared in the table.
BASE_CHAINS: dict[str, tuple[str, ...]] = {
    "prerouting": (
        f"type nat hook prerouting priority {NAT_PRIORITY}; policy accept;",
        f"ip daddr . meta l4proto . th dport vmap @{SERVICES}",
    ),
    "output": (
        f"type nat hook output priority {NAT_PRIORITY}; policy accept;",
        f"ip daddr . meta l4proto . th dport vmap @{SERVICES}",
    ),
    "postrouting": (
        "type nat hook postrouting priority srcnat; policy accept;",
        f"meta mark & {MARK} == {MARK} masquerade",
    ),
    "forward": (
        f"type filter hook forward priority {FILTER_PRIORITY}; policy accept;",
        f"meta mark & {MARK} == {MARK} accept",
        "ct state established,related accept",
    ),
}
# The rule whose absence means someone flushed or deleted our table.
CANARY_CHAIN = "prerouting"
CANARY_RULE = BASE_CHAINS["prerouting"][1]


def has_base_chains(listed: str) -> bool:
    """Whether `nft list chains ip` output shows our table with all its base chains.

    The cheap check: listing chains reads no rules and no map elements, while
    listing one chain of ours reads the whole table (half a second at 10,000
    services).
    """
    ours, found = False, set()
    for line in listed.splitlines():
        if line.startswith("table "):
            ours = line.strip() == f"table {FAMILY} {TABLE} {{"
        elif ours and line.strip().startswith("chain ") and line.strip().endswith("{"):
            found.add(line.strip()[len("chain ") : -1].strip())
    return set(BASE_CHAINS) <= found


def backends_map(protocol: str) -> str:
    return f"backends-{protocol}"


def backends_type(protocol: str) -> str:
    return f"typeof ip daddr . {protocol} dport . numgen random mod 1 : ip daddr . {protocol} dport"


def pick_chain(protocol: str, count: int) -> str:
    return f"pick-{protocol}-{count}"


def pick_rules(protocol: str, count: int) -> tuple[str, ...]:
    return (
        f"meta mark set meta mark | {MARK}",
        f"dnat ip to ip daddr . {protocol} dport . numgen random mod {count} map @{backends_map(protocol)}",
    )


# One key a service port claims: (protocol, destination address, destination port, its
# endpoints as "address . port"); the destination is the VIP, or this node for a load balancer.
Claim = tuple[str, str, int, tuple[str, ...]]


def _elements(claims: Iterable[tuple[Claim, ...]]) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """The services and backends elements of these claims."""
    services: dict[str, str] = {}
    backends: dict[str, dict[str, str]] = {protocol: {} for protocol in PROTOCOL_NAMES}
    for route_claims in claims:
        for protocol, address, port, targets in route_claims:
            services[f"{address} . {protocol} . {port}"] = pick_chain(protocol, len(targets))
            chosen = backends[protocol]
            for index, target in enumerate(targets):
                chosen[f"{address} . {port} . {index}"] = target
    return services, backends


@dataclass(frozen=True)
class NftRuleSet:
    """What Berth's table holds besides its fixed base chains and map declarations."""

    # Per route (its serialized bytes, in order): the claims it won. Unchanged routes keep
    # the very same tuples from one build to the next, so a delta looks at changed routes only.
    claims: dict[bytes, tuple[Claim, ...]]
    # Pick chains in use -> their rules.
    chains: dict[str, tuple[str, ...]]

    @property
    def services(self) -> dict[str, str]:
        """ "address . proto . port" -> the pick chain it goes to."""
        return _elements(self.claims.values())[0]

    @property
    def backends(self) -> dict[str, dict[str, str]]:
        """protocol -> "address . port . i" -> "endpoint address . port"."""
        return _elements(self.claims.values())[1]


@functools.lru_cache(maxsize=100_000)
def _route_claims(route_bytes: bytes, node_address: str, service_cidr: str) -> tuple[Claim, ...]:
    """The keys one route's service ports with endpoints claim, in order.

    Memoized on the route's bytes, as rules._route_rules is.
    node_address: "" when it is not an address (no load-balancer keys then).
    """
    route = rules.check_route(agent_pb.ServiceRoute.FromString(route_bytes), service_cidr)
    if route is None:
        return ()
    result: list[Claim] = []
    for port_number, port_protocol in route.ports:
        protocol = rules.PROTOCOLS[port_protocol]
        targets = tuple(
            f"{address} . {port}"
            for address, port, service_port, endpoint_protocol in route.endpoints
            if service_port == port_number and endpoint_protocol == port_protocol
        )
        if not targets:
            # No element: the VIP is routed locally, so the client gets a
            # refusal at once instead of a packet leaving the host.
            continue
        result.append((protocol, route.vip, port_number, targets))
        for lb_port, lb_service_port, lb_protocol in route.load_balancers:
            if node_address and lb_service_port == port_number and lb_protocol == port_protocol:
                result.append((protocol, node_address, lb_port, targets))
    return tuple(result)


def build(routes: Iterable[agent_pb.ServiceRoute], node_address: str, service_cidr: str = "") -> NftRuleSet:
    """The table's contents for these routes on the node with this address."""
    ordered = sorted(routes, key=lambda r: (r.cluster, r.name))
    return build_serialized(
        [r.SerializeToString(deterministic=True) for r in ordered], node_address, service_cidr
    )


def build_serialized(routes: Iterable[bytes], node_address: str, service_cidr: str = "") -> NftRuleSet:
    """build(), from routes already serialized and in (cluster, name) order.

    A key that comes twice (two services claiming one VIP port or one
    load-balancer port) keeps its first service, as the first iptables rule
    would win.
    """
    if rules.ipv4(node_address) is None:
        node_address = ""  # rules.build_serialized logs this; no load-balancer keys
    taken: set[tuple[str, str, int]] = set()
    claims: dict[bytes, tuple[Claim, ...]] = {}
    counts: set[tuple[str, int]] = set()
    for raw in routes:
        offered = _route_claims(raw, node_address, service_cidr)
        won = []
        for claim in offered:
            key = claim[:3]
            if key not in taken:
                taken.add(key)
                won.append(claim)
                counts.add((claim[0], len(claim[3])))
        if won and raw not in claims:
            # The memoized tuple itself when it won everything (the usual case).
            claims[raw] = offered if len(won) == len(offered) else tuple(won)
    chains = {pick_chain(p, n): pick_rules(p, n) for p, n in sorted(counts)}
    return NftRuleSet(claims=claims, chains=chains)


# -- scripts for nft -f ------------------------------------------------------------

_OURS = f"{FAMILY} {TABLE}"


ELEMENTS_PER_LINE = 500


def _add_elements(name: str, elements: Iterable[tuple[str, str]], verdict: str = "") -> list[str]:
    """`add element` commands, many elements each (nft parses one long list faster than many commands)."""
    items = [f"{key} : {verdict}{value}" for key, value in elements]
    return [
        f"add element {_OURS} {name} {{ {', '.join(items[start : start + ELEMENTS_PER_LINE])} }}"
        for start in range(0, len(items), ELEMENTS_PER_LINE)
    ]


def _delete_elements(name: str, keys: list[str]) -> list[str]:
    return [
        f"delete element {_OURS} {name} {{ {', '.join(keys[start : start + ELEMENTS_PER_LINE])} }}"
        for start in range(0, len(keys), ELEMENTS_PER_LINE)
    ]


def full_script(rule_set: NftRuleSet) -> str:
    """Replaces our table whole in one transaction (declare, delete, re-add: whether it exists or not)."""
    lines = [f"table {_OURS}", f"delete table {_OURS}", f"table {_OURS} {{"]
    lines += [f"\tmap {SERVICES} {{", "\t\ttype ipv4_addr . inet_proto . inet_service : verdict", "\t}"]
    for protocol in PROTOCOL_NAMES:
        lines += [f"\tmap {backends_map(protocol)} {{", f"\t\t{backends_type(protocol)}", "\t}"]
    for name, body in [*BASE_CHAINS.items(), *rule_set.chains.items()]:
        lines += [f"\tchain {name} {{", *(f"\t\t{line}" for line in body), "\t}"]
    lines.append("}")
    services, backends = _elements(rule_set.claims.values())
    lines += _add_elements(SERVICES, services.items(), "goto ")
    for protocol in PROTOCOL_NAMES:
        lines += _add_elements(backends_map(protocol), backends[protocol].items())
    return "\n".join(lines) + "\n"


def _changed(old: dict[str, str], new: dict[str, str]) -> tuple[list[str], list[tuple[str, str]]]:
    """(keys to delete, (key, value) to add): a changed element is deleted and added again."""
    removed = [key for key, value in old.items() if new.get(key) != value]
    added = [(key, value) for key, value in new.items() if old.get(key) != value]
    return removed, added


def delta_script(old: NftRuleSet, new: NftRuleSet) -> str | None:
    """One transaction changing only what differs (None: nothing to do).

    An endpoint change replaces its backend elements; a change in a service's
    number of endpoints also points its services element at another pick
    chain, made when it is the first of that count and deleted with the last.
    """
    lines: list[str] = []
    for chain, body in new.chains.items():
        if chain not in old.chains:
            lines.append(f"add chain {_OURS} {chain}")
            lines += [f"add rule {_OURS} {chain} {rule}" for rule in body]
    # Only the routes whose claims changed (keys of the others are the same on both sides).
    before_services, before_backends = _elements(
        c for raw, c in old.claims.items() if new.claims.get(raw) != c
    )
    after_services, after_backends = _elements(c for raw, c in new.claims.items() if old.claims.get(raw) != c)
    maps = [(SERVICES, before_services, after_services, "goto ")] + [
        (backends_map(p), before_backends[p], after_backends[p], "") for p in PROTOCOL_NAMES
    ]
    for name, before, after, verdict in maps:
        removed, added = _changed(before, after)
        lines += _delete_elements(name, removed)
        lines += _add_elements(name, added, verdict)
    # Chains last: a chain is deleted only once nothing goes to it.
    lines += [f"delete chain {_OURS} {chain}" for chain in old.chains if chain not in new.chains]
    return "\n".join(lines) + "\n" if lines else None


def remove_script() -> str:
    """Deletes our table if it is there, and nothing else."""
    return f"table {_OURS}\ndelete table {_OURS}\n"
