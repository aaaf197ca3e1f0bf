"""Feasibility filters: each one rejects a node for a task with a named reason."""

from __future__ import annotations

from berth.names import node_cluster, protocol_name
from berth.v1 import resources_pb2 as pb
from controlplane.scheduler.expressions import AttributeClause
from controlplane.scheduler.model import Filter, NodeState, PlacementRequest


def _port_text(port: tuple[int, int]) -> str:
    number, protocol = port
    return f"{number}/{protocol_name(protocol)}"


class InCluster:
    """Only nodes of the request's cluster (the planner's `scope_cluster`: the task's own, or the
    default for a cluster without nodes); the others are out of its scope, not short of anything."""

    name = "cluster"

    def reject(self, node: NodeState, request: PlacementRequest) -> str | None:
        cluster = node_cluster(node.node)
        return None if cluster == request.cluster else f"in cluster {cluster}"

    def shortfall(self, request: PlacementRequest) -> str:
        return f"cluster {request.cluster}"


class PinnedNodes:
    """A task started on given nodes (ECS StartTask) goes only to one of them."""

    name = "pinned"

    def reject(self, node: NodeState, request: PlacementRequest) -> str | None:
        if not request.pinned_nodes or node.id in request.pinned_nodes:
            return None
        return "not a node the task is pinned to"

    def shortfall(self, request: PlacementRequest) -> str:
        return "one of the ids " + ", ".join(sorted(request.pinned_nodes))


# Filters that say which nodes a task may use at all: nodes they reject are not
# candidates that fell short, and a pending reason names the scope instead.
SCOPE_FILTERS = frozenset({InCluster.name, PinnedNodes.name})


class NodeReady:
    name = "node-ready"

    def reject(self, node: NodeState, request: PlacementRequest) -> str | None:
        if node.node.status == pb.READY:
            return None
        return f"node {pb.NodeStatus.Name(node.node.status)}"

    def shortfall(self, request: PlacementRequest) -> str:
        return "the READY status"


class CpuFits:
    name = "cpu"

    def reject(self, node: NodeState, request: PlacementRequest) -> str | None:
        return None if request.cpu <= node.cpu_free else "insufficient CPU"

    def shortfall(self, request: PlacementRequest) -> str:
        return f"{request.cpu} CPU units free"


class MemoryFits:
    name = "memory"

    def reject(self, node: NodeState, request: PlacementRequest) -> str | None:
        return None if request.memory <= node.memory_free else "insufficient memory"

    def shortfall(self, request: PlacementRequest) -> str:
        return f"{request.memory} MiB of free memory"


class HostPortsFree:
    name = "host-ports"

    def reject(self, node: NodeState, request: PlacementRequest) -> str | None:
        for port in request.ports:
            if port in node.ports_used:
                return f"port {_port_text(port)} in use"
        return None

    def shortfall(self, request: PlacementRequest) -> str:
        return "host port " + ", ".join(_port_text(p) for p in request.ports) + " free"


class DistinctInstance:
    """At most one task of the group (service) per node."""

    name = "distinct-instance"

    def reject(self, node: NodeState, request: PlacementRequest) -> str | None:
        return "already runs a task of this service" if node.tasks_by_group[request.group] else None

    def shortfall(self, request: PlacementRequest) -> str:
        return "room under distinctInstance"


class AttributeMatch:
    """memberOf: the node's attributes must satisfy every clause."""

    def __init__(self, clauses: tuple[AttributeClause, ...], expression: str) -> None:
        self.clauses = clauses
        self.expression = expression
        self.name = f"member-of({expression})"

    def reject(self, node: NodeState, request: PlacementRequest) -> str | None:
        for clause in self.clauses:
            if not clause.matches(node.node.attributes.get(clause.attribute)):
                return f"does not match {clause}"
        return None

    def shortfall(self, request: PlacementRequest) -> str:
        return f"attributes matching {self.expression!r}"


DEFAULT_FILTERS: tuple[Filter, ...] = (
    InCluster(),
    PinnedNodes(),
    NodeReady(),
    CpuFits(),
    MemoryFits(),
    HostPortsFree(),
)
