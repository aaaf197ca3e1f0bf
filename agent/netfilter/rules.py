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

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

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


def _proto(protocol: int) -> str:
    return "udp" if protocol == pb.UDP else "tcp"


@dataclass(frozen=True)
class RuleSet:
    nat_rules: list[str]  # -A lines of the nat table; chains are declared by batch()
    filter: str
    chains: frozenset[str]  # every nat chain of ours it declares

    def by_chain(self) -> dict[str, list[str]]:
        grouped: dict[str, list[str]] = {chain: [] for chain in self.chains}
        for rule in self.nat_rules:
            grouped[rule.split(" ", 2)[1]].append(rule)
        return grouped


def service_chain(route: agent_pb.ServiceRoute, port: pb.ServicePort) -> str:
    return PREFIX + "SVC-" + _hash(route.cluster, route.name, str(port.port), _proto(port.protocol))


def build(routes: Iterable[agent_pb.ServiceRoute], node_address: str) -> RuleSet:
    """The complete rule set for these routes on the node with this address."""
    chains = [SERVICES, POSTROUTING, MARK, CANARY]
    rules = [
        f"-A {POSTROUTING} -m mark --mark {MASQUERADE_MARK} -j MASQUERADE",
        f"-A {MARK} -j MARK --or-mark 0x4000",
        f"-A {CANARY} -j RETURN",
    ]
    for route in sorted(routes, key=lambda r: (r.cluster, r.name)):
        for port in route.ports:
            protocol = _proto(port.protocol)
            name = f"{route.cluster}/{route.name}:{port.port}/{protocol}"
            endpoints = [
                e for e in route.endpoints if e.service_port == port.port and e.protocol == port.protocol
            ]
            if not endpoints:
                # No rule: the VIP is routed locally, so the client gets a
                # refusal at once instead of a packet leaving the host.
                continue
            svc = service_chain(route, port)
            chains.append(svc)
            rules.append(
                f"-A {SERVICES} -d {route.vip}/32 -p {protocol} -m {protocol} --dport {port.port} "
                f'-m comment --comment "{name}" -j {svc}'
            )
            for lb in route.load_balancers:
                if lb.service_port == port.port and lb.protocol == port.protocol:
                    rules.append(
                        f"-A {SERVICES} -d {node_address}/32 -p {protocol} -m {protocol} --dport {lb.port} "
                        f'-m comment --comment "{name} load balancer" -j {svc}'
                    )
            rules.append(f"-A {svc} -j {MARK}")
            for index, endpoint in enumerate(endpoints):
                remaining = len(endpoints) - index
                pick = (
                    ""
                    if remaining == 1
                    else f"-m statistic --mode random --probability {1 / remaining:.11f} "
                )
                # DNAT straight from the service chain: no chain per endpoint.
                # At 10,000 services iptables' cost grows with the number of
                # chains far more than with the number of rules.
                target = f"{endpoint.address}:{endpoint.port}"
                rules.append(f"-A {svc} -p {protocol} -m {protocol} {pick}-j DNAT --to-destination {target}")
    filter_rules = "\n".join(
        [
            f":{FORWARD} - [0:0]",
            f"-A {FORWARD} -m mark --mark {MASQUERADE_MARK} -j ACCEPT",
            f"-A {FORWARD} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        ]
    )
    return RuleSet(nat_rules=rules, filter=filter_rules, chains=frozenset(chains))


def batch(rule_set: RuleSet, existing_nat_chains: Iterable[str]) -> str:
    """An iptables-restore --noflush input: our chains replaced, stale ones of ours deleted."""
    stale = sorted(c for c in existing_nat_chains if c.startswith(PREFIX) and c not in rule_set.chains)
    # Declaring a chain flushes it: ours are rebuilt whole, stale ones emptied
    # so that -X can delete them once nothing jumps to them any more.
    declared = sorted(rule_set.chains) + stale
    nat = ["*nat", *(f":{chain} - [0:0]" for chain in declared), *rule_set.nat_rules]
    nat += [f"-X {chain}" for chain in stale]
    nat.append("COMMIT")
    return "\n".join([*nat, "*filter", rule_set.filter, "COMMIT", ""])


def delta(old: RuleSet, new: RuleSet) -> str | None:
    """A batch rewriting only the chains that changed (None: nothing to do).

    kube-proxy's lesson: at ten thousand services a full rewrite costs
    seconds, while one endpoint change touches one service chain and one
    or two endpoint chains.
    """
    before, after = old.by_chain(), new.by_chain()
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
