"""Nodes: registration by agents, summaries for operators, drain and activate.

A node belongs to the cluster its agent names when it registers (ECS's
RegisterContainerInstance): the cluster must exist, and a node moves to
another cluster only while it runs no task that is not STOPPED.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from berth.clock import now
from berth.errors import Conflict, FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from berth.names import DEFAULT_CLUSTER, node_cluster
from berth.v1 import operator_pb2 as api
from berth.v1 import resources_pb2 as pb
from controlplane import lifecycle
from controlplane.cache import ClusterCache
from controlplane.limits import Quotas, TokenBucket
from controlplane.operations.clusters import Clusters
from controlplane.registry import AgentRegistry
from controlplane.store import (
    RETRY,
    Condition,
    Delete,
    Put,
    Retry,
    StoreAPI,
    Versioned,
    Write,
    keys,
    optimistic,
)
from controlplane.validation.agent_reports import check_registration

log = logging.getLogger(__name__)

# Characters of the mass-failure warning passed to clients.
MAX_WARNING = 500

# Tasks recorded as lost per transaction when a node is removed with --force.
LOSE_BATCH = 100


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
    cluster: str = ""  # empty: the default cluster


@dataclass(frozen=True)
class NodeSummary:
    node: pb.Node
    cpu_reserved: int
    memory_reserved: int
    running_tasks: int
    connected: bool
    metrics: pb.NodeMetrics | None
    pending_tasks: int = 0

    def message(self) -> api.NodeSummary:
        """As the API returns it (ListNodes; the ECS API's container instances are built from it)."""
        message = api.NodeSummary(
            node=self.node,
            cpu_reserved=self.cpu_reserved,
            memory_reserved=self.memory_reserved,
            running_tasks=self.running_tasks,
            connected=self.connected,
            pending_tasks=self.pending_tasks,
        )
        if self.metrics is not None:
            message.metrics.CopyFrom(self.metrics)
        return message


class Nodes:
    def __init__(
        self,
        store: StoreAPI,
        cache: ClusterCache,
        agents: AgentRegistry,
        quotas: Quotas | None = None,
        registrations: TokenBucket | None = None,
        clusters: Clusters | None = None,
    ) -> None:
        self._store = store
        self._cache = cache
        self._agents = agents
        self._quotas = quotas or Quotas()
        self._registrations = registrations
        self._clusters = clusters or Clusters(store, cache, self._quotas)

    def _admit_registration(self, facts: NodeFacts) -> None:
        """Quota and rate limit for registrations that would add a node; known nodes pass."""
        if facts.node_id and self._cache.node(facts.node_id) is not None:
            return
        self._quotas.check("the number of nodes", len(self._cache.nodes()), self._quotas.nodes, "--max-nodes")
        if self._registrations is not None and not self._registrations.try_take():
            raise ResourceExhausted(
                "too many new nodes are registering: retry in a second, "
                "or raise the limit with berth-controlplane --register-rate / --register-burst"
            )

    async def _cluster_condition(self, cluster: str) -> list[Condition]:
        """The cluster must exist (NotFound says how to create it), and still when the record is written.

        The default cluster always exists and is never deleted: nothing to compare.
        """
        if cluster == DEFAULT_CLUSTER:
            return []
        _, revision = await self._clusters.existing(cluster)
        return [Condition(keys.cluster(cluster), revision)]

    async def _move_condition(self, current: Versioned[pb.Node], cluster: str) -> list[Condition]:
        """A node changes clusters only with no live task; the placement counter is compared,
        so a task placed after this check makes the write fail and the check run again."""
        node = current.value
        counter = await self._store.get_raw(keys.placements(node.id))
        await self._cache.wait_for_revision(max(current.mod_revision, counter.mod_revision if counter else 0))
        live = [
            t.value.id[:12] for t in self._cache.tasks_on_node(node.id) if t.value.last_status != pb.STOPPED
        ]
        if live:
            shown = ", ".join(live[:5]) + (", ..." if len(live) > 5 else "")
            old = node_cluster(node)
            raise FailedPrecondition(
                f"node {node.name} ({node.id}) is in cluster {old!r} and still has {len(live)} task(s) "
                f"not STOPPED ({shown}), so it cannot move to cluster {cluster!r}: drain it in {old!r} "
                f"(berth node drain) and wait, or start its agent with --cluster {old}"
            )
        return [Condition(keys.placements(node.id), counter.mod_revision if counter else 0)]

    async def register(self, facts: NodeFacts) -> pb.Node:
        """Create or refresh the node's record; its status is kept (liveness decides DOWN/READY)."""
        check_registration(facts)  # the address ends up in every host's rules: parsed, not trusted
        cluster = facts.cluster or DEFAULT_CLUSTER
        await self._cluster_condition(cluster)  # an unknown cluster spends no token either
        self._admit_registration(facts)  # after validation, so refused garbage spends no token
        name = facts.name
        node_id = facts.node_id or f"node-{uuid.uuid4().hex[:12]}"
        key = keys.node(node_id)
        moved_from = ""

        async def attempt() -> pb.Node | Retry:
            nonlocal moved_from
            conditions = await self._cluster_condition(cluster)
            current = await self._store.get(key, pb.Node)
            conditions.append(Condition(key, current.mod_revision if current else 0))
            moved_from = ""
            if current is not None and node_cluster(current.value) != cluster:
                conditions.extend(await self._move_condition(current, cluster))
                moved_from = node_cluster(current.value)
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
            node.cluster = cluster
            # A DOWN node turns READY with its first heartbeat (NodeLeases),
            # atomically with its liveness key.
            if await self._store.commit([Put(key, node)], conditions) is None:
                return RETRY
            return node

        node = await optimistic(attempt, what=f"node {node_id}")
        if moved_from:
            log.warning("event=node_moved node=%s from_cluster=%s cluster=%s", node.id, moved_from, cluster)
        log.info(
            "event=node_registered node=%s name=%s cluster=%s address=%s cpu=%d memory_mib=%d",
            node.id,
            node.name,
            cluster,
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

    def mass_failure(self) -> str:
        """The suspected mass failure under way, as the leader's node monitor recorded it
        (controllers/nodes.py); "" when there is none. Printable ASCII, for a warning line."""
        entry = self._cache.raw(keys.mass_failure())
        if entry is None or not entry.value:
            return ""
        text = entry.value.decode("ascii", errors="replace")
        return "".join(c if " " <= c <= "~" else "?" for c in text)[:MAX_WARNING]

    def summaries(self, cluster: str = "") -> list[NodeSummary]:
        """Every node (of `cluster`; "": of all) with its reservations, running tasks and
        latest metrics, by name."""
        summaries = []
        for versioned in sorted(self._cache.nodes(), key=lambda n: n.value.name):
            node = versioned.value
            if cluster and node_cluster(node) != cluster:
                continue
            tasks = [
                t.value for t in self._cache.tasks_on_node(node.id) if lifecycle.holds_resources(t.value)
            ]
            summaries.append(
                NodeSummary(
                    node=node,
                    cpu_reserved=sum(t.cpu for t in tasks),
                    memory_reserved=sum(t.memory for t in tasks),
                    running_tasks=sum(1 for t in tasks if t.last_status == pb.RUNNING),
                    pending_tasks=sum(1 for t in tasks if t.last_status == pb.PENDING),
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
        found, _ = await self._find(ref)

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

    async def _find(self, ref: str) -> tuple[Versioned[pb.Node], int]:
        """The node with id or name `ref`, and the revision it was read at."""
        nodes, read_at = await self._store.scan(keys.NODES, pb.Node)
        matches = [n for n in nodes if ref in (n.value.id, n.value.name)]
        if not matches:
            raise NotFound(f"node {ref!r} does not exist; see `berth node list`")
        if len(matches) > 1:
            raise InvalidArgument(f"node name {ref!r} is ambiguous: give the node id")
        return matches[0], read_at

    async def remove(self, ref: str, force: bool) -> pb.Node:
        """Delete a node's record, liveness key and placement counter.

        Refused while tasks that are not STOPPED are placed there, or while its
        agent is connected, unless forced: then its tasks are recorded as lost
        (the service controller replaces them). The node's certificate is
        revoked in the same transaction: its agent cannot register or connect
        again (a new join with a token makes it a new node).
        """
        found, _ = await self._find(ref)
        node = found.value
        label = f"{node.name} ({node.id})"
        # Read the placement counter before looking at the tasks: a placement
        # after this read bumps it, and the delete below compares it.
        counter = await self._store.get_raw(keys.placements(node.id))
        await self._cache.wait_for_revision(max(found.mod_revision, counter.mod_revision if counter else 0))
        live = [t for t in self._cache.tasks_on_node(node.id) if t.value.last_status != pb.STOPPED]
        if not force:
            if self._agents.is_connected(node.id):
                raise FailedPrecondition(
                    f"node {label} has its agent connected, which would register it again: "
                    "stop the agent first, or remove the node with --force"
                )
            if live:
                shown = ", ".join(t.value.id[:12] for t in live[:5]) + (", ..." if len(live) > 5 else "")
                raise FailedPrecondition(
                    f"node {label} still has {len(live)} task(s) not STOPPED ({shown}): drain it "
                    "(berth node drain) and wait, or remove it with --force to record them as lost"
                )
        reason = f"Node {label} was removed by an operator"
        for offset in range(0, len(live), LOSE_BATCH):
            writes: list[Write] = []
            conditions = []
            for task in live[offset : offset + LOSE_BATCH]:
                updated = lifecycle.mark_stopped(task.value, pb.NODE_LOST, reason)
                if updated is not None:
                    writes.append(Put(task.key, updated))
                    conditions.append(Condition(task.key, task.mod_revision))
            if writes and await self._store.commit(writes, conditions) is None:
                raise Conflict(f"tasks on node {label} changed while removing it; try again")
        deletes: list[Write] = [
            Delete(found.key),
            Delete(keys.alive(node.id)),
            Delete(keys.placements(node.id)),
        ]
        conditions = [
            Condition(found.key, found.mod_revision),
            Condition(keys.placements(node.id), counter.mod_revision if counter else 0),
        ]
        identity = await self._store.get(keys.identity(node.id), pb.NodeIdentity)
        if identity is not None:
            # Its certificate is refused from now on: the agent cannot come back as this node.
            identity.value.revoked = True
            deletes.append(Put(identity.key, identity.value))
            conditions.append(Condition(identity.key, identity.mod_revision))
        removed = await self._store.commit(deletes, conditions)
        if removed is None:
            raise Conflict(f"node {label} changed (or took a task) while removing it; try again")
        log.warning("event=node_removed node=%s name=%s tasks_lost=%d", node.id, node.name, len(live))
        return node
