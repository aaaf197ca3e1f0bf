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
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from berth.names import protocol_name
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb

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


def service_chain(route: agent_pb.ServiceRoute, port: pb.ServicePort) -> str:
    return PREFIX + "SVC-" + _hash(route.cluster, route.name, str(port.port), protocol_name(port.protocol))


@functools.lru_cache(maxsize=100_000)
def _route_rules(
    route_bytes: bytes, node_address: str
) -> tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...]:
    """Per service port of one route: (its chain, its BERTH-SERVICES lines, its chain's rules).

    Memoized on the route's bytes: at ten thousand services, formatting every
    rule again on each change costs more than applying the change.
    """
    route = agent_pb.ServiceRoute.FromString(route_bytes)
    result = []
    for port in route.ports:
        protocol = protocol_name(port.protocol)
        name = f"{route.cluster}/{route.name}:{port.port}/{protocol}"
        endpoints = [
            e for e in route.endpoints if e.service_port == port.port and e.protocol == port.protocol
        ]
        if not endpoints:
            # No rule: the VIP is routed locally, so the client gets a
            # refusal at once instead of a packet leaving the host.
            continue
        svc = service_chain(route, port)
        entry = [
            f"-A {SERVICES} -d {route.vip}/32 -p {protocol} -m {protocol} --dport {port.port} "
            f'-m comment --comment "{name}" -j {svc}'
        ]
        for lb in route.load_balancers:
            if lb.service_port == port.port and lb.protocol == port.protocol:
                entry.append(
                    f"-A {SERVICES} -d {node_address}/32 -p {protocol} -m {protocol} --dport {lb.port} "
                    f'-m comment --comment "{name} load balancer" -j {svc}'
                )
        chain = [f"-A {svc} -j {MARK}"]
        for index, endpoint in enumerate(endpoints):
            remaining = len(endpoints) - index
            pick = "" if remaining == 1 else f"-m statistic --mode random --probability {1 / remaining:.11f} "
            # DNAT straight from the service chain: no chain per endpoint.
            # At 10,000 services iptables' cost grows with the number of
            # chains far more than with the number of rules.
            target = f"{endpoint.address}:{endpoint.port}"
            chain.append(f"-A {svc} -p {protocol} -m {protocol} {pick}-j DNAT --to-destination {target}")
        result.append((svc, tuple(entry), tuple(chain)))
    return tuple(result)


def build(routes: Iterable[agent_pb.ServiceRoute], node_address: str) -> RuleSet:
    """The complete rule set for these routes on the node with this address."""
    ordered = sorted(routes, key=lambda r: (r.cluster, r.name))
    return build_serialized([r.SerializeToString(deterministic=True) for r in ordered], node_address)


def build_serialized(routes: Iterable[bytes], node_address: str) -> RuleSet:
    """build(), from routes already serialized and in (cluster, name) order."""
    services: list[str] = []
    service_chains: dict[str, tuple[str, ...]] = {}
    for raw in routes:
        for svc, entry, chain in _route_rules(raw, node_address):
            services.extend(entry)
            service_chains[svc] = chain
    nat: dict[str, tuple[str, ...]] = {
        SERVICES: tuple(services),
        POSTROUTING: (f"-A {POSTROUTING} -m mark --mark {MASQUERADE_MARK} -j MASQUERADE",),
        MARK: (f"-A {MARK} -j MARK --or-mark 0x4000",),
        CANARY: (f"-A {CANARY} -j RETURN",),
        **service_chains,
    }
    filter_rules = "\n".join(
        [
            f":{FORWARD} - [0:0]",
            f"-A {FORWARD} -m mark --mark {MASQUERADE_MARK} -j ACCEPT",
            f"-A {FORWARD} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        ]
    )
    return RuleSet(nat=nat, filter=filter_rules)


def batch(rule_set: RuleSet, existing_nat_chains: Iterable[str]) -> str:
    """An iptables-restore --noflush input: our chains replaced, stale ones of ours deleted."""
    stale = sorted(c for c in existing_nat_chains if c.startswith(PREFIX) and c not in rule_set.chains)
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


def endpoint_keys(routes: Iterable[agent_pb.ServiceRoute]) -> set[tuple[str, str, int, int]]:
    """(vip, endpoint address, endpoint port, protocol) for every endpoint."""
    return {(r.vip, e.address, e.port, e.protocol) for r in routes for e in r.endpoints}
