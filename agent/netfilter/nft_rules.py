"""Builds Berth's nftables table for a route table, and the scripts that apply it (pure).

    table ip berth                                  the only table Berth touches
      map services: VIP . proto . port          ──▶ goto svc-<hash>
                    NODE . proto . LB port       ──▶ goto svc-<hash>   load-balancer ports
      chain prerouting, output (nat hooks, just before iptables' nat):
          ip daddr . meta l4proto . th dport vmap @services
      chain svc-<hash>: one per service port; mark for masquerade, then DNAT to
          an endpoint (node address . host port) picked by numgen random mod N
          from an anonymous map: no chain per endpoint
      chain postrouting: masquerade marked packets, so replies from another
          host come back through this one
      chain forward: accept marked packets and their replies

One lookup in a verdict map finds a service however many there are, so the
first packet of a connection costs the same at 10,000 services as at one.
The same features as the iptables backend (rules.py), from the same checked
routes (rules.check_route, the second line of defence): a value that is not
what the builder expects never reaches the script. The chain names use the
same hash as the iptables chains.

Scripts are for `nft -f -`, which applies a file as one transaction: the full
script deletes and re-adds our table in one go; a delta touches only the map
elements and service chains that changed.
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
SERVICE_CHAIN_PREFIX = "svc-"
MARK = "0x4000"
# Just before iptables' nat chains (dstnat, -100): the first NAT binding of a
# flow wins, so a VIP is ours even where Docker DNATs the same port.
NAT_PRIORITY = -110
FILTER_PRIORITY = -10
COMMENT_LIMIT = 120  # nftables allows 128 bytes

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


@dataclass(frozen=True)
class NftRuleSet:
    """What Berth's table holds besides its fixed base chains."""

    # "VIP . proto . port" -> the service chain it goes to, in order.
    elements: dict[str, str]
    # Service chain -> its rules, in order.
    chains: dict[str, tuple[str, ...]]


def service_chain(cluster: str, service: str, port: int, protocol: int) -> str:
    return SERVICE_CHAIN_PREFIX + rules.service_chain(cluster, service, port, protocol)[len("BERTH-SVC-") :]


def _comment(text: str) -> str:
    # Only DNS labels, digits, '/', ':' and '.' reach here (checked routes), never a quote.
    return f'comment "{text[:COMMENT_LIMIT]}"'


@functools.lru_cache(maxsize=100_000)
def _route_rules(
    route_bytes: bytes, node_address: str, service_cidr: str
) -> tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...]:
    """Per service port of one route: (its chain, its map keys, its chain's rules).

    Memoized on the route's bytes, as rules._route_rules is.
    node_address: "" when it is not an address (no load-balancer keys then).
    """
    route = rules.check_route(agent_pb.ServiceRoute.FromString(route_bytes), service_cidr)
    if route is None:
        return ()
    result = []
    for port_number, port_protocol in route.ports:
        protocol = rules.PROTOCOLS[port_protocol]
        targets = [
            f"{address} . {port}"
            for address, port, service_port, endpoint_protocol in route.endpoints
            if service_port == port_number and endpoint_protocol == port_protocol
        ]
        if not targets:
            # No element: the VIP is routed locally, so the client gets a
            # refusal at once instead of a packet leaving the host.
            continue
        chain = service_chain(route.cluster, route.name, port_number, port_protocol)
        keys = [f"{route.vip} . {protocol} . {port_number}"]
        for lb_port, lb_service_port, lb_protocol in route.load_balancers:
            if node_address and lb_service_port == port_number and lb_protocol == port_protocol:
                keys.append(f"{node_address} . {protocol} . {lb_port}")
        picks = ", ".join(f"{index} : {target}" for index, target in enumerate(targets))
        body = (
            f"meta mark set meta mark | {MARK}",
            f"meta l4proto {protocol} dnat ip to numgen random mod {len(targets)} map {{ {picks} }} "
            + _comment(f"{route.cluster}/{route.name}:{port_number}/{protocol}"),
        )
        result.append((chain, tuple(keys), body))
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
    would win; a service port that comes twice keeps its first rules.
    """
    if rules.ipv4(node_address) is None:
        node_address = ""  # rules.build_serialized logs this; no load-balancer keys
    elements: dict[str, str] = {}
    chains: dict[str, tuple[str, ...]] = {}
    for raw in routes:
        for chain, keys, body in _route_rules(raw, node_address, service_cidr):
            if chain in chains:
                continue
            chains[chain] = body
            for key in keys:
                elements.setdefault(key, chain)
    return NftRuleSet(elements=elements, chains=chains)


# -- scripts for nft -f ------------------------------------------------------------

_OURS = f"{FAMILY} {TABLE}"


ELEMENTS_PER_LINE = 500


def _element_lines(elements: Iterable[tuple[str, str]]) -> list[str]:
    """`add element` commands, many elements each (nft parses one long list faster than many commands)."""
    items = [f"{key} : goto {chain}" for key, chain in elements]
    return [
        f"add element {_OURS} {SERVICES} {{ {', '.join(items[start : start + ELEMENTS_PER_LINE])} }}"
        for start in range(0, len(items), ELEMENTS_PER_LINE)
    ]


def full_script(rule_set: NftRuleSet) -> str:
    """Replaces our table whole in one transaction (declare, delete, re-add: whether it exists or not)."""
    lines = [f"table {_OURS}", f"delete table {_OURS}", f"table {_OURS} {{"]
    lines += [f"\tmap {SERVICES} {{", "\t\ttype ipv4_addr . inet_proto . inet_service : verdict", "\t}"]
    for name, body in BASE_CHAINS.items():
        lines += [f"\tchain {name} {{", *(f"\t\t{line}" for line in body), "\t}"]
    for name, body in rule_set.chains.items():
        lines += [f"\tchain {name} {{", *(f"\t\t{line}" for line in body), "\t}"]
    lines.append("}")
    lines += _element_lines(rule_set.elements.items())
    return "\n".join(lines) + "\n"


def delta_script(old: NftRuleSet, new: NftRuleSet) -> str | None:
    """One transaction changing only what differs (None: nothing to do).

    An endpoint change rewrites one service chain (flush, two rules); a
    service coming or going adds or deletes its chain and map elements.
    """
    added_chains = [c for c in new.chains if c not in old.chains]
    changed_chains = [c for c in new.chains if c in old.chains and old.chains[c] != new.chains[c]]
    removed_chains = [c for c in old.chains if c not in new.chains]
    removed_keys = [k for k, c in old.elements.items() if new.elements.get(k) != c]
    added_keys = [(k, c) for k, c in new.elements.items() if old.elements.get(k) != c]
    if not (added_chains or changed_chains or removed_chains or removed_keys or added_keys):
        return None
    lines: list[str] = []
    for chain in added_chains:
        lines.append(f"add chain {_OURS} {chain}")
        lines += [f"add rule {_OURS} {chain} {rule}" for rule in new.chains[chain]]
    for chain in changed_chains:
        lines.append(f"flush chain {_OURS} {chain}")
        lines += [f"add rule {_OURS} {chain} {rule}" for rule in new.chains[chain]]
    # Elements before chains: a chain is deleted only once nothing goes to it.
    if removed_keys:
        lines.append(f"delete element {_OURS} {SERVICES} {{ {', '.join(removed_keys)} }}")
    lines += _element_lines(added_keys)
    lines += [f"delete chain {_OURS} {chain}" for chain in removed_chains]
    return "\n".join(lines) + "\n"


def remove_script() -> str:
    """Deletes our table if it is there, and nothing else."""
    return f"table {_OURS}\ndelete table {_OURS}\n"
