"""Rebalancing: a spread service moves tasks onto hosts that returned or joined.

When a host comes back after a cut, or a new one joins, a service spread
across hosts stays lopsided: its replacements went to the hosts that were
left. Once the service is settled (its PRIMARY deployment COMPLETED, every
task serving, nothing leaving or failing), Berth picks one task on the host
with the most of the service's tasks, if the scheduler would put a new copy on
a host with at least two fewer, and marks it `rebalancing`. The service
controller then treats it like a task on a draining host, with the same rules
as a deployment: the replacement starts first (the scheduler's spread sends it
to the emptier host), and the marked task leaves (endpoints first, then its
stop) only once the others serving reach the desired count, so the service
never falls below it. One task moves at a time; the next is picked once the
service is settled again.

Rebalancing needs room for one task above the desired count, so a service
whose maximumPercent leaves none is not rebalanced; `--no-rebalance` turns it
off per service. Everything here is pure; the probe of where a copy would go
is the scheduler's (`SchedulingController.probe`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping

from berth import deployment_defaults
from berth.v1 import resources_pb2 as pb
from controlplane import deployments, lifecycle
from controlplane.endpoints import serves_health


def spreads(service: pb.Service) -> bool:
    """The default placement spreads over hosts, as does a first strategy of spread.

    Only the first strategy decides: later ones break its ties. A service that binpacks first
    and spreads only among equals is meant to be lopsided, and moving its tasks to even the
    hosts out would fight its own scheduler (the lab's strategy-order test caught that)."""
    return not service.placement_strategy or service.placement_strategy[0].type == "spread"


def settled(service: pb.Service, tasks: list[pb.Task], draining: frozenset[str], failing: bool) -> bool:
    """Worth looking at for a move: steady, and nothing else is changing."""
    config = deployment_defaults.configuration(service)
    current = deployments.primary(service)
    if (
        not config.rebalance
        or not spreads(service)
        or service.status != pb.SERVICE_ACTIVE
        or current is None
        or current.rollout_state != pb.COMPLETED
        or failing
        or service.desired_count + 1 > deployments.maximum_total(service.desired_count, config)
    ):
        return False
    live = [t for t in tasks if t.last_status != pb.STOPPED]
    owner_of = deployments.owners(service)
    return len(live) == service.desired_count and all(
        lifecycle.is_active(t)
        and t.last_status == pb.RUNNING
        and serves_health(t)
        and not t.HasField("deregistered_at")
        and not t.rebalancing
        and t.node_id not in draining
        and owner_of(t) == current.id
        for t in live
    )


def pick(
    tasks: list[pb.Task], nodes: Mapping[str, pb.Node], probe: Callable[[pb.Task], str | None]
) -> tuple[pb.Task, str, str] | None:
    """The task to move, its node and the node a copy would go to; None when balanced enough."""
    counts = Counter(t.node_id for t in tasks if t.last_status == pb.RUNNING)
    if not counts:
        return None
    ready = [n for n in nodes.values() if n.status == pb.READY]
    # Cheap first: nothing to gain unless some READY host has two fewer.
    fullest_count = max(counts.values())
    if not any(counts.get(n.id, 0) <= fullest_count - 2 for n in ready):
        return None
    fullest = max(counts, key=lambda node_id: (counts[node_id], node_id))
    newest = max(
        (t for t in tasks if t.node_id == fullest and t.last_status == pb.RUNNING),
        key=lambda t: (t.created_at.seconds, t.created_at.nanos, t.id),
    )
    target = probe(newest)
    if target is None or counts.get(target, 0) > fullest_count - 2:
        return None
    return newest, fullest, target
