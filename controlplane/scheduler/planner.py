"""Chooses a node for each request: filter, then score, reserving as it goes."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

from controlplane.scheduler.filters import DEFAULT_FILTERS
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


def explain(
    request: PlacementRequest, rejections: Counter[tuple[str, str]], filters: Sequence[Filter]
) -> str:
    """One line an operator can act on, from rejections counted by (filter, reason)."""
    if not rejections:
        return "no nodes are registered"
    details = "; ".join(f"{_plural(n)}: {reason}" for (_, reason), n in rejections.most_common())
    by_filter = {name for name, _ in rejections}
    if len(by_filter) == 1:
        (name,) = by_filter
        culprit = next(f for f in filters if f.name == name)
        return f"no node has {culprit.shortfall(request)} ({details})"
    return f"no node fits the task ({details})"


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


def place(
    nodes: Sequence[NodeState],
    requests: Sequence[PlacementRequest],
    sample_size: int = 0,
    rng: random.Random | None = None,
) -> Plan:
    """Place every request that fits; the others come back as failures with reasons.

    With sample_size > 0 and more nodes than that, each task looks at a random
    sample first (the "power of k choices") and scans every node only when no
    sampled node fits, so a big cluster costs O(k) per task, not O(nodes).
    """
    rng = rng or random.Random()
    node_list = list(nodes)
    context = PlanContext.of(node_list)
    plan = Plan()
    for request in requests:
        filters = DEFAULT_FILTERS + request.filters
        scorers = request.scorers or DEFAULT_SCORERS
        rejections: Counter[tuple[str, str]] = Counter()
        feasible: list[NodeState] = []
        if 0 < sample_size < len(node_list):
            feasible = _feasible(rng.sample(node_list, sample_size), request, filters, Counter())
        if not feasible:
            feasible = _feasible(node_list, request, filters, rejections)
        if not feasible:
            plan.failures.append(PlacementFailure(request.task_id, explain(request, rejections, filters)))
            continue
        best = max(
            feasible,
            key=lambda node: (
                tuple(part for scorer in scorers for part in scorer.score(node, request, context)),
                node.id,
            ),
        )
        best.reserve(request)
        context.placed(best, request)
        plan.placements.append(Placement(request.task_id, best.id))
    return plan
