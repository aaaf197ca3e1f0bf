"""Ranking of feasible nodes: higher keys win. Each scorer is one strategy."""

from __future__ import annotations

import random

from controlplane.scheduler.model import NodeState, PlacementRequest, PlanContext, Scorer


class Spread:
    """Fewest tasks of the same service first, then the least loaded node."""

    name = "spread(instanceId)"

    def score(self, node: NodeState, request: PlacementRequest, context: PlanContext) -> tuple[float, ...]:
        return (-node.tasks_by_group[request.group], -node.task_count)


class SpreadAttribute:
    """Fewest tasks of the service among nodes sharing this node's attribute value."""

    def __init__(self, attribute: str) -> None:
        self.attribute = attribute
        self.name = f"spread(attribute:{attribute})"

    def score(self, node: NodeState, request: PlacementRequest, context: PlanContext) -> tuple[float, ...]:
        value = node.node.attributes.get(self.attribute)
        if value is None:
            return (float("-inf"),)  # nodes without the attribute come last
        return (-context.attribute_counts[(request.group, self.attribute, value)],)


class BinpackMemory:
    """The node with the least memory left that still fits, to keep others empty."""

    name = "binpack(memory)"

    def score(self, node: NodeState, request: PlacementRequest, context: PlanContext) -> tuple[float, ...]:
        return (-node.memory_free,)


class BinpackCpu:
    name = "binpack(cpu)"

    def score(self, node: NodeState, request: PlacementRequest, context: PlanContext) -> tuple[float, ...]:
        return (-node.cpu_free,)


class Random:
    name = "random"

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def score(self, node: NodeState, request: PlacementRequest, context: PlanContext) -> tuple[float, ...]:
        return (self._rng.random(),)


DEFAULT_SCORERS: tuple[Scorer, ...] = (Spread(),)
