"""Nodes: registration by agents, summaries for operators, drain and activate."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from berth.clock import now
from berth.errors import FailedPrecondition, InvalidArgument, NotFound
from berth.v1 import resources_pb2 as pb
from controlplane import lifecycle
from controlplane.cache import ClusterCache
from controlplane.registry import AgentRegistry
from controlplane.store import RETRY, Retry, StoreAPI, keys, optimistic
from controlplane.validation.agent_reports import check_registration

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeFacts:
    """What an agent reports about its host when it registers."""

    node_id: str  # empty: a new node, given an id here
    name: str
    address: str
    cpu_units: int
    memory_mib: int
    agent_version: str
    attributes: dict[str, str]


@dataclass(frozen=True)
class NodeSummary:
    node: pb.Node
    cpu_reserved: int
    memory_reserved: int
    running_tasks: int
    connected: bool
    metrics: pb.NodeMetrics | None


class Nodes:
    def __init__(self, store: StoreAPI, cache: ClusterCache, agents: AgentRegistry) -> None:
        self._store = store
        self._cache = cache
        self._agents = agents

    async def register(self, facts: NodeFacts) -> pb.Node:
        """Create or refresh the node's record; its status is kept (liveness decides DOWN/READY)."""
        check_registration(facts)  # the address ends up in every host's rules: parsed, not trusted
        name = facts.name
        node_id = facts.node_id or f"node-{uuid.uuid4().hex[:12]}"
        key = keys.node(node_id)

        async def attempt() -> pb.Node | Retry:
            current = await self._store.get(key, pb.Node)
            node = pb.Node()
            if current is not None:
                node.CopyFrom(current.value)
            else:
                node.id = node_id
                node.registered_at.CopyFrom(now())
                node.status = pb.READY
            node.name = name
            node.address = facts.address
            node.cpu_units = facts.cpu_units
            node.memory_mib = facts.memory_mib
            node.agent_version = facts.agent_version
            node.attributes.clear()
            node.attributes.update(facts.attributes)
            # A DOWN node turns READY with its first heartbeat (NodeLeases),
            # atomically with its liveness key.
            if await self._store.put_if_unchanged(key, node, current.mod_revision if current else 0) is None:
                return RETRY
            return node

        node = await optimistic(attempt, what=f"node {node_id}")
        log.info(
            "event=node_registered node=%s name=%s address=%s cpu=%d memory_mib=%d",
            node.id,
            node.name,
            node.address,
            node.cpu_units,
            node.memory_mib,
        )
        return node

    async def is_registered(self, node_id: str) -> bool:
        # The cache may trail a registration that has just happened: ask etcd too.
        return bool(node_id) and (
            self._cache.node(node_id) is not None
            or await self._store.get(keys.node(node_id), pb.Node) is not None
        )

    def summaries(self) -> list[NodeSummary]:
        """Every node with its reservations, running tasks and latest metrics, by name."""
        summaries = []
        for versioned in sorted(self._cache.nodes(), key=lambda n: n.value.name):
            node = versioned.value
            tasks = [
                t.value for t in self._cache.tasks_on_node(node.id) if lifecycle.holds_resources(t.value)
            ]
            summaries.append(
                NodeSummary(
                    node=node,
                    cpu_reserved=sum(t.cpu for t in tasks),
                    memory_reserved=sum(t.memory for t in tasks),
                    running_tasks=sum(1 for t in tasks if t.last_status == pb.RUNNING),
                    connected=self._agents.is_connected(node.id),
                    metrics=self._agents.metrics(node.id),
                )
            )
        return summaries

    async def set_status(self, ref: str, status: pb.NodeStatus.ValueType) -> pb.Node:
        """Drain (DRAINING) or activate (READY) a node given by id or name."""
        if status not in (pb.READY, pb.DRAINING):
            raise InvalidArgument(
                "a node's status can be set to READY or DRAINING (DOWN is decided by heartbeats)"
            )
        nodes, _ = await self._store.scan(keys.NODES, pb.Node)
        matches = [n for n in nodes if ref in (n.value.id, n.value.name)]
        if not matches:
            raise NotFound(f"node {ref!r} does not exist; see `berth node list`")
        if len(matches) > 1:
            raise InvalidArgument(f"node name {ref!r} is ambiguous: give the node id")
        (found,) = matches

        def change(node: pb.Node) -> pb.Node | None:
            if node.status == pb.DOWN:
                raise FailedPrecondition(f"node {node.name} is DOWN; it becomes READY when its agent is back")
            if node.status == status:
                return None
            node.status = status
            return node

        updated = await self._store.update(found.key, pb.Node, change)
        if updated is None:
            raise NotFound(f"node {ref!r} does not exist")
        log.info("event=node_status_set node=%s status=%s", updated.id, pb.NodeStatus.Name(updated.status))
        return updated
