"""What the scheduler reasons about: node states, requests, plans, and the two
extension points a request carries (`Filter`, `Scorer`).

Plain data and interfaces only: this module imports nothing else of the
scheduler, so every other module can import it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

from berth.names import DEFAULT_CLUSTER
from berth.v1 import resources_pb2 as pb

Port = tuple[int, int]  # (host port, TransportProtocol)


@dataclass
class NodeState:
    """One node's capacity minus what placed tasks reserve, updated as we plan."""

    node: pb.Node
    cpu_free: int
    memory_free: int
    ports_used: set[Port] = field(default_factory=set)
    tasks_by_group: Counter[str] = field(default_factory=Counter)
    task_count: int = 0

    @property
    def id(self) -> str:
        return self.node.id

    def reserve(self, request: PlacementRequest) -> None:
        self.cpu_free -= request.cpu
        self.memory_free -= request.memory
        self.ports_used.update(request.ports)
        self.tasks_by_group[request.group] += 1
        self.task_count += 1


@dataclass
class PlanContext:
    """Cluster-wide tallies some scorers need, kept current as tasks are placed."""

    # (group, attribute name, attribute value) -> tasks of the group on such nodes
    attribute_counts: Counter[tuple[str, str, str]] = field(default_factory=Counter)

    @classmethod
    def of(cls, nodes: list[NodeState]) -> PlanContext:
        context = cls()
        for node in nodes:
            for group, count in node.tasks_by_group.items():
                for name, value in node.node.attributes.items():
                    context.attribute_counts[(group, name, value)] += count
        return context

    def placed(self, node: NodeState, request: PlacementRequest) -> None:
        for name, value in node.node.attributes.items():
            self.attribute_counts[(request.group, name, value)] += 1


@dataclass(frozen=True)
class PlacementRequest:
    task_id: str
    # Tasks of one service share a group; spread and distinctness are per group.
    group: str
    cpu: int
    memory: int
    ports: tuple[Port, ...] = ()
    # Constraint filters beyond the defaults, and the strategy (None: spread).
    filters: tuple[Filter, ...] = ()
    scorers: tuple[Scorer, ...] = ()
    # The task's cluster: only its nodes may take it.
    cluster: str = DEFAULT_CLUSTER
    # Node ids the task was started on (ECS StartTask); empty: any node of its cluster.
    pinned_nodes: frozenset[str] = frozenset()


class Filter(Protocol):
    """A feasibility check; implementations live in `filters`."""

    name: str

    def reject(self, node: NodeState, request: PlacementRequest) -> str | None:
        """The reason this node cannot take the task ("insufficient memory"), or None."""

    def shortfall(self, request: PlacementRequest) -> str:
        """What no node had, completing "no node has ..."."""


class Scorer(Protocol):
    """A ranking of feasible nodes; implementations live in `scorers`."""

    name: str

    def score(self, node: NodeState, request: PlacementRequest, context: PlanContext) -> tuple[float, ...]:
        """A sort key; the node with the largest key is chosen."""


@dataclass(frozen=True)
class Placement:
    task_id: str
    node_id: str


@dataclass(frozen=True)
class PlacementFailure:
    task_id: str
    # One line for humans, e.g. "no node has 8192 MiB of free memory (3 nodes: insufficient memory)".
    reason: str


@dataclass
class Plan:
    placements: list[Placement] = field(default_factory=list)
    failures: list[PlacementFailure] = field(default_factory=list)
