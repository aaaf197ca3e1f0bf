"""Ranking of feasible nodes: higher scores win. Each scorer is one strategy."""

from __future__ import annotations

from typing import Protocol

from controlplane.scheduler.model import NodeState, PlacementRequest


class Scorer(Protocol):
    name: str

    def score(self, node: NodeState, request: PlacementRequest) -> tuple[float, ...]:
        """A sort key; the node with the largest key is chosen."""


class Spread:
    """Fewest tasks of the same service first, then the least loaded node."""

    name = "spread"

    def score(self, node: NodeState, request: PlacementRequest) -> tuple[float, ...]:
        return (-node.tasks_by_group[request.group], -node.task_count, node.memory_free)


class BinpackMemory:
    """The node with the least memory left that still fits, to keep others empty."""

    name = "binpack-memory"

    def score(self, node: NodeState, request: PlacementRequest) -> tuple[float, ...]:
        return (-node.memory_free, -node.cpu_free)


class BinpackCpu:
    name = "binpack-cpu"

    def score(self, node: NodeState, request: PlacementRequest) -> tuple[float, ...]:
        return (-node.cpu_free, -node.memory_free)
