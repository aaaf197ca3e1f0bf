"""Chooses a node for each request: filter, then score, reserving as it goes."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import Mapping, Sequence

from berth.names import DEFAULT_CLUSTER, node_cluster
from controlplane.scheduler.filters import DEFAULT_FILTERS, SCOPE_FILTERS
from controlplane.scheduler.model import (
    Filter,
    NodeState,
    Placement,
    PlacementFailure,
    PlacementRequest,
    Plan,
    PlanContext,
)
from controlplane.scheduler.scorers import DEFAULT_SCORERS


def _plural(count: int) -> str:
    return f"{count} node" if count == 1 else f"{count} nodes"


def _scope(request: PlacementRequest, outside: int) -> str:
    """The nodes the task may use, as the subject of its pending reason."""
    if request.pinned_nodes:
        return f"node the task is pinned to ({', '.join(sorted(request.pinned_nodes))})"
    if outside or request.cluster != DEFAULT_CLUSTER:
        return f"node of cluster {request.cluster}"
    return "node"


def explain(
    request: PlacementRequest, rejections: Counter[tuple[str, str]], filters: Sequence[Filter]
) -> str:
    """One line an operator can act on, from rejections counted by (filter, reason).

    Nodes outside the task's scope (another cluster, not pinned) are not
    candidates: the reason names the scope and details only the candidates.
    """
    outside = sum(n for (name, _), n in rejections.items() if name in SCOPE_FILTERS)
    inside = Counter({key: n for key, n in rejections.items() if key[0] not in SCOPE_FILTERS})
    scope = _scope(request, outside)
    if not inside:
        if request.pinned_nodes:
            return f"no {scope} is registered in cluster {request.cluster}"
        if outside:
            return f"no {scope} is registered ({_plural(outside)} in other clusters)"
        return "no nodes are registered" if scope == "node" else f"no {scope} is registered"
    details = "; ".join(f"{_plural(n)}: {reason}" for (_, reason), n in inside.most_common())
    by_filter = {name for name, _ in inside}
    if len(by_filter) == 1:
        (name,) = by_filter
        culprit = next(f for f in filters if f.name == name)
        return f"no {scope} has {culprit.shortfall(request)} ({details})"
    return f"no {scope} fits the task ({details})"


def scope_cluster(cluster: str, nodes_by_cluster: Mapping[str, object]) -> str:
    """The cluster whose nodes a task of `cluster` may use: its own, once it has any node
    registered (of any status); until then the default cluster's.

    Clusters long served as groupings of services over one pool of nodes (the quick
    start, `berth cluster create prod` with every agent in `default`): a cluster
    without nodes of its own keeps running there. Return `cluster` alone to make
    every cluster strictly its own nodes' (ECS's rule).
    """
    return cluster if cluster in nodes_by_cluster else DEFAULT_CLUSTER


def _feasible(
    nodes: Sequence[NodeState],
    request: PlacementRequest,
    filters: Sequence[Filter],
    rejections: Counter[tuple[str, str]],
) -> list[NodeState]:
    feasible = []
    for node in nodes:
        for check in filters:
            reason = check.reject(node, request)
            if reason is not None:
                rejections[(check.name, reason)] += 1
                break
        else:
            feasible.append(node)
    return feasible


class Planner:
    """Places requests one at a time on its own copy of the nodes, keeping the cluster-wide
    tallies between them: the caller may stop after any request (to let the event loop run)
    and go on later with the same result as planning them all at once."""

    def __init__(
        self, nodes: Sequence[NodeState], sample_size: int = 0, rng: random.Random | None = None
    ) -> None:
        self._rng = rng or random.Random()
        self._sample_size = sample_size
        self._nodes = list(nodes)
        self._context = PlanContext.of(self._nodes)
        self._by_cluster: dict[str, list[NodeState]] = {}
        for state in self._nodes:
            self._by_cluster.setdefault(node_cluster(state.node), []).append(state)

    def place(self, asked: PlacementRequest) -> Placement | PlacementFailure:
        filters = DEFAULT_FILTERS + asked.filters
        scorers = asked.scorers or DEFAULT_SCORERS
        rejections: Counter[tuple[str, str]] = Counter()
        feasible: list[NodeState] = []
        scope = scope_cluster(asked.cluster, self._by_cluster)
        request = asked if scope == asked.cluster else dataclasses.replace(asked, cluster=scope)
        pool = self._by_cluster.get(scope, [])
        if 0 < self._sample_size < len(pool) and not request.pinned_nodes:
            feasible = _feasible(self._rng.sample(pool, self._sample_size), request, filters, Counter())
        if not feasible:
            feasible = _feasible(self._nodes, request, filters, rejections)
        if not feasible:
            reason = explain(request, rejections, filters)
            if request is not asked and any(name in SCOPE_FILTERS for name, _ in rejections):
                reason = (
                    f"cluster {asked.cluster} has no node of its own (its tasks use the default's): {reason}"
                )
            return PlacementFailure(request.task_id, reason)
        context = self._context
        best = max(
            feasible,
            key=lambda node: (
                tuple(part for scorer in scorers for part in scorer.score(node, request, context)),
                node.id,
            ),
        )
        best.reserve(request)
        context.placed(best, request)
        return Placement(request.task_id, best.id)


def record(plan: Plan, outcome: Placement | PlacementFailure) -> None:
    if isinstance(outcome, Placement):
        plan.placements.append(outcome)
    else:
        plan.failures.append(outcome)


def place(
    nodes: Sequence[NodeState],
    requests: Sequence[PlacementRequest],
    sample_size: int = 0,
    rng: random.Random | None = None,
) -> Plan:
    """Place every request that fits; the others come back as failures with reasons.

    With sample_size > 0 and more nodes than that, each task looks at a random
    sample first (the "power of k choices") and scans every node only when no
    sampled node fits, so a big cluster costs O(k) per task, not O(nodes). The
    sample is drawn from the nodes of the task's cluster (see `scope_cluster`).
    """
    planner = Planner(nodes, sample_size, rng)
    plan = Plan()
    for request in requests:
        record(plan, planner.place(request))
    return plan
