"""The node monitor: a READY or DRAINING node whose liveness key expired is DOWN.

A service's tasks on a DOWN node are the service controller's to move: it
starts replacements at once and declares each original lost (STOPPED, stop
code NODE_LOST) once its replacement serves; if the node comes back first,
the original is kept and a surplus replacement goes (see `services.decide`).
The monitor records as lost the rest at once: tasks of no service, and tasks
on a DOWN node that something asked to stop (no agent is there to do it).
When the node's agent comes back it gets a snapshot without the lost tasks
and stops its old copies, so exactly one copy of each survives.

`judge` is the decision, pure (the nodes as the cache shows them in, the
nodes to mark DOWN out); `NodeMonitor` applies it. Three things keep a node
that is not dead from being judged:

- Settling. A key must stay missing for `settle_seconds(grace)`: a heartbeat
  interval plus a margin. Nodes that fell silent at the same moment have
  their leases run out within one heartbeat interval of each other (each was
  last refreshed somewhere in that interval), so by the time the first one
  is judged every one of them is seen missing, and the next rule can count
  them together.
- Mass-failure protection. When more than `mass_failure_share` of the nodes
  are silent within one grace period (missing their key, or marked DOWN less
  than a grace ago), it is far likelier that this control plane, etcd or the
  network failed than that many hosts died at once (the lesson of the
  Kubernetes node lifecycle controller's unhealthy zones). Then no node is
  marked DOWN and no task declared lost while the share stays above the
  threshold; the episode is logged (`event=mass_failure_suspected`), shown by
  the `berth_mass_failure` gauge and written to `liveness/mass-failure`, which
  `berth node list` prints as a warning. When the share falls again, the
  nodes still silent get one more grace to come back, then are judged one by
  one as usual. It needs at least `MASS_FAILURE_MIN_NODES` nodes and two
  silent ones: one silent node is exactly what liveness exists to detect.
- Announced restarts. An agent stopping with SIGTERM says goodbye first
  (`restarting_until` on its record, written by `controlplane.liveness`): its
  silence is tolerated until then, and it counts toward no mass failure.

A newly elected leader waits `startup_hold` seconds before judging: agents
streaming to a restarted control plane need a moment to reconnect.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from google.protobuf.timestamp_pb2 import Timestamp

from berth.clock import now as timestamp_now
from berth.v1 import resources_pb2 as pb
from controlplane import lifecycle
from controlplane.cache import ClusterCache
from controlplane.controllers.barrier import Barrier
from controlplane.liveness import heartbeat_interval
from controlplane.metrics import MASS_FAILURE, NODES_DOWN, NODES_SILENT
from controlplane.store import Condition, Delete, Put, StoreAPI, Versioned, keys

log = logging.getLogger(__name__)

BATCH = 100
# Seconds beyond a heartbeat interval a liveness key must stay missing before
# the node is judged: etcd checks for expired leases twice a second, and the
# cache may show a node's record an instant before the key written after it.
CONFIRM = 0.5
# Share of nodes silent within one grace above which the monitor suspects
# itself or the network (--mass-failure-share).
DEFAULT_MASS_FAILURE_SHARE = 0.33
# Below three nodes no share means anything: one of two silent hosts is 50%.
MASS_FAILURE_MIN_NODES = 3


def settle_seconds(grace: float) -> float:
    """How long a liveness key must stay missing before its node is judged."""
    return heartbeat_interval(grace) + CONFIRM


@dataclass(frozen=True)
class NodeView:
    """What judging needs of one node; times are seconds since the epoch (0: unset)."""

    id: str
    status: pb.NodeStatus.ValueType
    alive: bool
    restarting_until: float = 0.0
    down_since: float = 0.0


@dataclass(frozen=True)
class Policy:
    grace: float
    mass_failure_share: float = DEFAULT_MASS_FAILURE_SHARE

    @property
    def settle(self) -> float:
        return settle_seconds(self.grace)


@dataclass
class Judgement:
    # Mark DOWN now (their tasks are lost).
    down: list[str] = field(default_factory=list)
    # Silent, but not judged: a mass failure is suspected.
    held: list[str] = field(default_factory=list)
    # Silent, but their agent said it is restarting and its window is open.
    restarting: list[str] = field(default_factory=list)
    # Silent within one grace (missing their key, or DOWN less than a grace ago), and all
    # nodes not DOWN for longer than that: the share that decides a mass failure.
    silent: int = 0
    nodes: int = 0
    mass_failure: bool = False


def judge(
    nodes: Iterable[NodeView], silent_since: Mapping[str, float], now: float, policy: Policy
) -> Judgement:
    """Which nodes to mark DOWN now.

    silent_since: when each node's key was first seen missing (the monitor
    keeps it; a node not in it has just been seen missing, at `now`).
    """
    verdict = Judgement()
    suspects = []
    for node in nodes:
        if node.status == pb.DOWN:
            if node.down_since > now - policy.grace:
                verdict.silent += 1
                verdict.nodes += 1
            continue
        verdict.nodes += 1
        if node.alive:
            continue
        if node.restarting_until > now:
            verdict.restarting.append(node.id)
            continue
        verdict.silent += 1
        suspects.append(node.id)
    verdict.mass_failure = (
        verdict.nodes >= MASS_FAILURE_MIN_NODES
        and verdict.silent >= 2
        and verdict.silent > policy.mass_failure_share * verdict.nodes
    )
    if verdict.mass_failure:
        verdict.held = suspects
        return verdict
    verdict.down = [n for n in suspects if now - silent_since.get(n, now) >= policy.settle]
    return verdict


def mass_failure_message(verdict: Judgement, policy: Policy, when: str) -> str:
    return (
        f"since {when}: {verdict.silent} of {verdict.nodes} nodes stopped heartbeating within "
        f"{policy.grace:.0f}s; Berth suspects itself or the network and declares none of them DOWN "
        f"(their tasks are not replaced) until at most {policy.mass_failure_share:.0%} are silent"
    )


def _seconds(stamp: Timestamp) -> float:
    return stamp.seconds + stamp.nanos / 1e9


def view(node: pb.Node, alive: bool) -> NodeView:
    return NodeView(
        id=node.id,
        status=node.status,
        alive=alive,
        restarting_until=_seconds(node.restarting_until) if node.HasField("restarting_until") else 0.0,
        down_since=_seconds(node.down_since) if node.HasField("down_since") else 0.0,
    )


class NodeMonitor:
    def __init__(
        self,
        store: StoreAPI,
        cache: ClusterCache,
        grace: float,
        startup_hold: float,
        mass_failure_share: float = DEFAULT_MASS_FAILURE_SHARE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._clock = clock
        self._cache = cache
        self._grace = grace
        self._policy = Policy(grace, mass_failure_share)
        self._startup_hold = startup_hold
        self._judging_from = clock() + startup_hold
        # Wall-clock seconds each node's key was first seen missing.
        self._silent_since: dict[str, float] = {}
        self._mass_failure = False
        self._episode = ""
        # DOWN nodes whose tasks were last swept at this (record, tasks) version.
        self._swept: dict[str, tuple[int, tuple[int, int]]] = {}
        self._next_run = 0.0
        self._barrier = Barrier(type(self).__name__)

    async def reconcile(self) -> int:
        now = self._clock()
        # Wall-clock time (restart windows and DOWN times are timestamps): one stepped
        # back must not stall the monitor, so neither wait may reach further than it should.
        self._judging_from = min(self._judging_from, now + self._startup_hold)
        self._next_run = min(self._next_run, now + CONFIRM / 2)
        if now < max(self._judging_from, self._next_run):
            return 0
        # A few looks a second are plenty against a grace of seconds, and
        # cheap next to a full pass over a thousand nodes on every change.
        self._next_run = now + CONFIRM / 2
        records = {n.value.id: n for n in self._cache.nodes()}
        views = [view(n.value, self._cache.raw(keys.alive(i)) is not None) for i, n in records.items()]
        missing = {v.id for v in views if v.status != pb.DOWN and not v.alive}
        for gone in set(self._silent_since) - missing:
            del self._silent_since[gone]
        for node_id in missing:
            self._silent_since.setdefault(node_id, now)
        verdict = judge(views, self._silent_since, now, self._policy)
        NODES_SILENT.set(verdict.silent)
        written = await self._record_mass_failure(verdict, now)
        for node_id in verdict.down:
            try:
                written = max(written, await self._mark_down(records[node_id]))
            except Exception as error:
                self._barrier.note("node", node_id, error)
        for versioned in records.values():
            node = versioned.value
            # Looked at again only when its tasks changed (a task asked to stop, a service
            # draining its tasks) or it went DOWN again.
            version = (versioned.mod_revision, self._cache.node_tasks_version(node.id))
            if node.status != pb.DOWN or self._swept.get(node.id) == version:
                continue
            try:
                result = await self._lose_tasks(node)
            except Exception as error:
                self._barrier.note("node", node.id, error)
                continue
            written = max(written, result)
            if not result:
                self._swept[node.id] = version
        for gone in set(self._swept) - set(records):
            del self._swept[gone]
        return written

    async def _record_mass_failure(self, verdict: Judgement, now: float) -> int:
        """Log and gauge the start and end of a suspected mass failure; keep its key in etcd."""
        if verdict.mass_failure and not self._mass_failure:
            self._mass_failure = True
            MASS_FAILURE.set(1)
            log.warning(
                "event=mass_failure_suspected silent=%d nodes=%d share=%.2f threshold=%.2f held=%d",
                verdict.silent,
                verdict.nodes,
                verdict.silent / verdict.nodes,
                self._policy.mass_failure_share,
                len(verdict.held),
            )
            when = timestamp_now().ToJsonString()
            self._episode = mass_failure_message(verdict, self._policy, when)
        elif not verdict.mass_failure and self._mass_failure:
            self._mass_failure = False
            MASS_FAILURE.set(0)
            # The nodes still silent had their silence blamed on us: one more grace to come back.
            for node_id in verdict.down:
                self._silent_since[node_id] = now + self._grace - self._policy.settle
            log.warning(
                "event=mass_failure_over silent=%d nodes=%d still_silent=%d",
                verdict.silent,
                verdict.nodes,
                len(verdict.down),
            )
            verdict.down = []
        # Level-triggered: the key is there exactly while this leader sees an episode (and
        # one a leader that died during an episode left behind goes).
        recorded = self._cache.raw(keys.mass_failure()) is not None
        if self._mass_failure and not recorded:
            return await self._store.commit([Put(keys.mass_failure(), self._episode.encode())]) or 0
        if not self._mass_failure and recorded:
            return await self._store.commit([Delete(keys.mass_failure())]) or 0
        return 0

    async def _mark_down(self, versioned: Versioned[pb.Node]) -> int:
        """Mark one node DOWN and its tasks lost."""
        node = versioned.value
        self._silent_since.pop(node.id, None)
        down = pb.Node()
        down.CopyFrom(node)
        down.status = pb.DOWN
        down.ClearField("restarting_until")
        down.down_since.GetCurrentTime()  # for garbage collection (housekeeping)
        result = await self._store.put_if_unchanged(versioned.key, down, versioned.mod_revision)
        if result is None:
            return 0
        NODES_DOWN.inc()
        log.warning("event=node_down node=%s name=%s grace=%.0fs", node.id, node.name, self._grace)
        return max(result, await self._lose_tasks(node))

    def _lost_at_once(self, task: pb.Task) -> bool:
        """On a DOWN node and nobody's to move: of no (existing) service, or asked to stop."""
        if task.last_status == pb.STOPPED:
            return False
        return (
            not task.service
            or task.desired_status == pb.DESIRED_STOPPED
            or self._cache.service(task.cluster, task.service) is None
        )

    async def _lose_tasks(self, node: pb.Node) -> int:
        """Record the tasks of a DOWN node that no controller moves as lost."""
        reason = f"Node {node.name} ({node.id}) stopped sending heartbeats for {self._grace:.0f}s"
        lost = [t for t in self._cache.tasks_on_node(node.id) if self._lost_at_once(t.value)]
        written = 0
        for offset in range(0, len(lost), BATCH):
            writes, conditions = [], []
            for task in lost[offset : offset + BATCH]:
                updated = lifecycle.mark_stopped(task.value, pb.NODE_LOST, reason)
                if updated is not None:
                    writes.append(Put(task.key, updated))
                    conditions.append(Condition(task.key, task.mod_revision))
            if writes and (result := await self._store.commit(writes, conditions)):
                written = result
                log.warning("event=tasks_lost node=%s count=%d", node.id, len(writes))
        return written
