"""Applies the scheduler to unplaced tasks and commits the plan to etcd.

Plans are computed on the cache's snapshot and committed in batches; each
batch compares every task's mod_revision and bumps a per-node placement
counter compared by revision too, so a plan built on stale state (or by a
second scheduler) fails as a whole instead of overcommitting a node.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter, defaultdict

from berth.errors import InvalidArgument
from berth.names import DEFAULT_CLUSTER, parse_task_definition_ref
from berth.taskdef import static_host_ports
from berth.v1 import resources_pb2 as pb
from controlplane import lifecycle
from controlplane.cache import ClusterCache
from controlplane.controllers.barrier import Barrier
from controlplane.controllers.slices import Slicer
from controlplane.events import EventLog
from controlplane.metrics import PLACEMENT_CONFLICTS, PLACEMENT_FAILURES, PLACEMENTS
from controlplane.scheduler.model import (
    Filter,
    NodeState,
    Placement,
    PlacementFailure,
    PlacementRequest,
    Plan,
    Scorer,
)
from controlplane.scheduler.planner import Planner, place, record
from controlplane.scheduler.policies import compile_constraints, compile_strategy
from controlplane.store import Condition, Put, StoreAPI, Versioned, keys

log = logging.getLogger(__name__)

# etcd refuses transactions of more than --max-txn-ops (128 by default).
MAX_TXN_OPS = 120
MAX_PLACEMENTS_PER_PASS = 1000
# Seconds of planning after which the event loop gets a turn (see SchedulingController._plan).
PLAN_SLICE = 0.01
# Placement transactions in flight at once (they never touch the same node).
CONCURRENT_TXNS = 8


def _service_of(task: pb.Task) -> tuple[str, str] | None:
    return (task.cluster, task.service) if task.service else None


class SchedulingController:
    def __init__(self, store: StoreAPI, cache: ClusterCache, events: EventLog, sample_size: int = 0) -> None:
        self._store = store
        self._cache = cache
        self._events = events
        self._sample_size = sample_size
        self._rng = random.Random()
        self._ports_by_taskdef: dict[str, tuple[tuple[int, int], ...]] = {}
        self._node_states: dict[str, tuple[tuple[int, int, int], NodeState]] = {}
        self._rules: dict[object, tuple[tuple[Filter, ...], tuple[Scorer, ...]]] = {}
        self._barrier = Barrier(type(self).__name__, events)

    def _ports(self, task_definition: str) -> tuple[tuple[int, int], ...]:
        ports = self._ports_by_taskdef.get(task_definition)
        if ports is None:
            family, revision = parse_task_definition_ref(task_definition)
            td = self._cache.taskdef(family, revision or 0)
            ports = tuple(static_host_ports(td.value)) if td else ()
            self._ports_by_taskdef[task_definition] = ports
        return ports

    def _placement_rules(self, task: pb.Task) -> tuple[tuple[Filter, ...], tuple[Scorer, ...]]:
        if not task.placement_strategy and not task.placement_constraints:
            return (), ()
        key = (
            tuple((s.type, s.field) for s in task.placement_strategy),
            tuple((c.type, c.expression) for c in task.placement_constraints),
        )
        rules = self._rules.get(key)
        if rules is None:
            try:
                rules = (
                    compile_constraints(task.placement_constraints),
                    compile_strategy(task.placement_strategy),
                )
            except InvalidArgument as error:
                # Validated at creation; a stored rule that no longer parses
                # (after an upgrade) falls back to the defaults, loudly.
                log.error("event=bad_placement_rules task=%s error=%r", task.id, str(error))
                rules = ((), ())
            self._rules[key] = rules
        return rules

    def _request(self, task: pb.Task) -> PlacementRequest:
        group = f"{task.cluster}/{task.service}" if task.service else f"{task.cluster}/task:{task.id}"
        filters, scorers = self._placement_rules(task)
        return PlacementRequest(
            task.id,
            group,
            task.cpu,
            task.memory,
            self._ports(task.task_definition),
            filters,
            scorers,
            cluster=task.cluster or DEFAULT_CLUSTER,
            pinned_nodes=frozenset(task.pinned_nodes),
        )

    def probe(self, task: pb.Task) -> str | None:
        """The node a new copy of `task` would be placed on now (None: none fits), placing nothing."""
        copy = pb.Task()
        copy.CopyFrom(task)
        copy.id = "probe"
        plan = place(self.snapshot(), [self._request(copy)])
        return plan.placements[0].node_id if plan.placements else None

    def snapshot(self) -> list[NodeState]:
        """Every node's free resources; rebuilt only for nodes whose tasks changed."""
        return [self._node_state(versioned) for versioned in self._cache.nodes()]

    async def sliced_snapshot(self) -> list[NodeState]:
        """`snapshot`, giving the event loop a turn every PLAN_SLICE: after a burst of placements
        every node's state is rebuilt, and at 1,000 nodes with 10,000 tasks that took 0.5 s.

        The nodes are read once, up front: a node the cache learns of meanwhile is left for the
        next pass; one whose tasks change meanwhile is caught by the placement commit's check."""
        slicer = Slicer(PLAN_SLICE)
        states = []
        for versioned in self._cache.nodes():
            states.append(self._node_state(versioned))
            await slicer.turn()
        return states

    async def warm(self) -> None:
        """Rebuild the cached state of every node whose tasks changed, giving the event loop
        turns, so that a `probe` (synchronous) right after only copies it."""
        slicer = Slicer(PLAN_SLICE)
        for versioned in self._cache.nodes():
            self._pristine(versioned)
            await slicer.turn()

    def _node_state(self, versioned: Versioned[pb.Node]) -> NodeState:
        pristine = self._pristine(versioned)
        # The planner reserves on its copy; the cached state stays as etcd has it.
        return NodeState(
            pristine.node,
            pristine.cpu_free,
            pristine.memory_free,
            set(pristine.ports_used),
            Counter(pristine.tasks_by_group),
            pristine.task_count,
        )

    def _pristine(self, versioned: Versioned[pb.Node]) -> NodeState:
        node = versioned.value
        version = (versioned.mod_revision, *self._cache.node_tasks_version(node.id))
        cached = self._node_states.get(node.id)
        if cached is None or cached[0] != version:
            state = NodeState(node, cpu_free=node.cpu_units, memory_free=node.memory_mib)
            for task in self._cache.tasks_on_node(node.id):
                if lifecycle.holds_resources(task.value):
                    try:
                        state.reserve(self._request(task.value))
                    except Exception as error:
                        # Its reservation is unknown; the node's other tasks still count.
                        self._barrier.note("task", task.value.id, error)
            cached = self._node_states[node.id] = (version, state)
        return cached[1]

    async def reconcile(self) -> int:
        pending = self._cache.unplaced_tasks()
        if not pending:
            return 0
        written = await self._stop_unplaced([t for t in pending if not lifecycle.is_active(t.value)])
        # Oldest first, and a bounded number per pass: planning is CPU-bound,
        # and between passes the event loop serves heartbeats and the API.
        wanted = sorted(
            (t for t in pending if lifecycle.is_active(t.value)),
            key=lambda t: (t.value.created_at.seconds, t.value.created_at.nanos),
        )[:MAX_PLACEMENTS_PER_PASS]
        return max(written, await self.place_and_commit(wanted))

    async def place_and_commit(self, tasks: list[Versioned[pb.Task]]) -> int:
        """Plan the tasks and write them placed, or with the reason they are not.

        Tasks not yet in etcd come with mod_revision 0: the service controller
        creates tasks through here, so a new task is written once, already
        placed, instead of being written PENDING and then again placed.
        """
        if not tasks:
            return 0
        requests = []
        for task in tasks:
            try:
                requests.append(self._request(task.value))
            except Exception as error:
                await self._barrier.contain("task", task.value.id, error, _service_of(task.value))
        plan = await self._plan(requests, {t.value.id: t.value for t in tasks})
        by_id = {t.value.id: t for t in tasks}
        written = await self._commit_placements(plan.placements, by_id)
        return max(written, await self._record_failures(plan.failures, by_id))

    async def _plan(self, requests: list[PlacementRequest], tasks: dict[str, pb.Task]) -> Plan:
        """The plan for all requests, a request that makes planning raise skipped (and contained).

        Planning is CPU-bound and runs on the event loop that also renews the leader's lease,
        takes the agents' heartbeats and serves the API: it gives the loop back whenever it has
        planned for PLAN_SLICE seconds, so none of those waits behind a big pass (before, a pass
        of 1,000 tasks on 1,000 nodes held the loop long enough for healthy nodes to be declared
        DOWN and leadership to be lost)."""
        planner = Planner(await self.sliced_snapshot(), self._sample_size, self._rng)
        plan = Plan()
        slicer = Slicer(PLAN_SLICE)
        for request in requests:
            try:
                record(plan, planner.place(request))
            except Exception as error:
                task = tasks[request.task_id]
                await self._barrier.contain("task", task.id, error, _service_of(task))
            await slicer.turn()
        return plan

    async def _stop_unplaced(self, tasks: list[Versioned[pb.Task]]) -> int:
        written = 0
        for task in tasks:
            try:
                updated = lifecycle.mark_stopped(
                    task.value, pb.USER_INITIATED, "Task stopped before it was placed"
                )
                if updated is not None:
                    result = await self._store.put_if_unchanged(task.key, updated, task.mod_revision)
                    written = max(written, result or 0)
            except Exception as error:
                await self._barrier.contain("task", task.value.id, error, _service_of(task.value))
        return written

    async def _commit_placements(
        self, placements: list[Placement], by_id: dict[str, Versioned[pb.Task]]
    ) -> int:
        """Write placements in transactions that each own whole nodes.

        Each transaction bumps the placement counter of every node it places
        on, comparing its revision, so a plan built on stale state fails
        instead of overcommitting. Grouping by node means no two of our own
        transactions compare the same counter, so they run concurrently.
        """
        by_node: dict[str, list[Placement]] = defaultdict(list)
        for placement in placements:
            by_node[placement.node_id].append(placement)
        batches: list[list[Placement]] = [[]]
        ops = 0
        for node_placements in by_node.values():
            size = len(node_placements) + 1
            if ops + size > MAX_TXN_OPS and batches[-1]:
                batches.append([])
                ops = 0
            batches[-1].extend(node_placements)
            ops += size
        in_flight = asyncio.Semaphore(CONCURRENT_TXNS)
        started: dict[tuple[str, str], list[str]] = defaultdict(list)

        async def commit(batch: list[Placement]) -> int:
            writes: list[Put] = []
            conditions: list[Condition] = []
            for placement in batch:
                task = by_id[placement.task_id]
                updated = pb.Task()
                updated.CopyFrom(task.value)
                updated.node_id = placement.node_id
                updated.pending_reason = ""
                writes.append(Put(task.key, updated))
                conditions.append(Condition(task.key, task.mod_revision))
            for node_id in {p.node_id for p in batch}:
                counter_key = keys.placements(node_id)
                current = self._cache.raw(counter_key)
                writes.append(Put(counter_key, str(self._cache.revision).encode()))
                conditions.append(Condition(counter_key, current.mod_revision if current else 0))
            async with in_flight:
                result = await self._store.commit(writes, conditions)
            if result is None:
                PLACEMENT_CONFLICTS.inc()
                log.info("event=placement_conflict tasks=%d action=retry_on_fresh_state", len(batch))
                return 0
            PLACEMENTS.inc(len(batch))
            for placement in batch:
                placed = by_id[placement.task_id].value
                if placed.service:
                    started[(placed.cluster, placed.service)].append(placed.id)
                log.info(
                    "event=task_placed task=%s node=%s service=%s",
                    placed.id,
                    placement.node_id,
                    placed.service or "-",
                )
            return result

        results = await asyncio.gather(*(commit(batch) for batch in batches if batch))
        for (cluster, service), task_ids in started.items():
            shown = " ".join(f"task {t[:8]}" for t in task_ids[:10])
            more = f" and {len(task_ids) - 10} more" if len(task_ids) > 10 else ""
            await self._events.record(
                cluster, service, f"service {service} has started {len(task_ids)} tasks: {shown}{more}."
            )
        return max(results, default=0)

    async def _record_failures(
        self, failures: list[PlacementFailure], by_id: dict[str, Versioned[pb.Task]]
    ) -> int:
        written = 0
        PLACEMENT_FAILURES.inc(len(failures))
        reported: set[tuple[str, str]] = set()
        for failure in failures:
            task = by_id[failure.task_id]
            if task.value.pending_reason != failure.reason:
                updated = pb.Task()
                updated.CopyFrom(task.value)
                updated.pending_reason = failure.reason
                result = await self._store.put_if_unchanged(task.key, updated, task.mod_revision)
                written = max(written, result or 0)
            service_key = (task.value.cluster, task.value.service)
            if task.value.service and service_key not in reported:
                reported.add(service_key)
                await self._events.record(
                    task.value.cluster,
                    task.value.service,
                    f"service {task.value.service} was unable to place a task because {failure.reason}.",
                )
        return written
