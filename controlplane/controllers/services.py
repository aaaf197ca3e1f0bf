"""The service controller: keeps each service at its desired count of tasks.

`decide` is pure (service + its tasks in, decision out); `ServiceController`
applies decisions to etcd. It is level-triggered: each pass compares desired
with actual, so a missed event or a leader change heals on the next pass.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from berth import deployment_defaults
from berth.names import parse_task_definition_ref
from berth.safetext import escape_controls
from berth.v1 import resources_pb2 as pb
from controlplane import backoff, deployments, lifecycle, rebalance, settling
from controlplane.cache import ClusterCache
from controlplane.controllers.barrier import Barrier
from controlplane.controllers.scheduling import SchedulingController
from controlplane.controllers.slices import Slicer
from controlplane.endpoints import serves_health
from controlplane.events import EventLog
from controlplane.recovery import RecoveryClock
from controlplane.store import Condition, Delete, Put, StoreAPI, Versioned, keys

log = logging.getLogger(__name__)

BATCH = 100
MAX_NEW_TASKS_PER_PASS = 2000
# ECS's stopped reason for a task of a service that failed its container health checks.
HEALTH_CHECK_FAILED = "Task failed container health checks"
MAX_HEALTH_OUTPUT = 200  # characters of a failed check's output in an event


@dataclass
class ServiceDecision:
    start: int = 0
    # Stop now: not serving, its deregistration delay is over, or the service has no endpoints.
    stop: list[str] = field(default_factory=list)
    # Take out of the endpoints now; stopped once the deregistration delay has passed.
    deregister: list[str] = field(default_factory=list)
    # Why, for the stops and deregistrations that have their own reason.
    reasons: dict[str, str] = field(default_factory=dict)
    delete_service: bool = False
    steady: bool = False
    # Replacements the crash-loop backoff holds back for now.
    held: int = 0
    # Tasks that turned UNHEALTHY, replaced now: each is also in `deregister` (its service has
    # endpoints and a deregistration delay) or in `stop`, and is stopped as a failed health check.
    unhealthy: list[str] = field(default_factory=list)
    # Deregistered tasks wait out their delay: look again as time passes.
    waiting: bool = False
    # Tasks on DOWN nodes whose replacements serve: recorded STOPPED (NODE_LOST) at once,
    # since no agent is there to stop them.
    lost: list[str] = field(default_factory=list)
    # When a RUNNING task without a health check will have settled (0: none is settling):
    # it counts toward a rollout and a steady state only then, so look again at that time.
    settles_at: float = 0.0


def _stop_preference(task: pb.Task) -> tuple[int, int, int]:
    # Scale in from the tasks that cost least to lose: unplaced, then not yet
    # running, then the newest running ones.
    if not task.node_id:
        rank = 0
    elif task.last_status == pb.PENDING:
        rank = 1
    else:
        rank = 2
    return (rank, -task.created_at.seconds, -task.created_at.nanos)


def _serving(task: pb.Task) -> bool:
    """Counts as healthy: RUNNING and HEALTHY, or RUNNING without a health check."""
    return task.last_status == pb.RUNNING and serves_health(task)


def _proven(task: pb.Task, now: float) -> bool:
    """Counts toward a rollout and a steady state: serving, and settled if it has no health check."""
    return _serving(task) and settling.has_settled(task, now)


def decide(
    service: pb.Service,
    tasks: list[pb.Task],
    draining: frozenset[str] = frozenset(),
    gate: backoff.Gate = backoff.OPEN,
    now: float = 0.0,
    down: frozenset[str] = frozenset(),
) -> ServiceDecision:
    """What to start, take out of the endpoints and stop, so the service runs
    `desired_count` healthy tasks of its PRIMARY deployment.

    Tasks on DRAINING nodes, and tasks marked for rebalancing, do not count
    toward the desired count, so their replacements start elsewhere first; such
    a task that serves leaves only while the service has more tasks serving
    than desired, so a drain or a rebalance never takes it below that count. A task that turned
    UNHEALTHY does not count either: it is replaced at once and stopped, as in ECS. Like any
    leaver of a service with endpoints it is deregistered first and stopped only once the delay
    has passed, so connections in flight finish before its SIGTERM (it serves nobody new: an
    unhealthy task is no endpoint). Its record keeps why (`failed_health_check` and the stop
    reason), so the stop after the delay, even by another leader, is still a failed health check.

    Tasks of older deployments are replaced as `controlplane/deployments.py`
    describes: new ones start while all tasks not yet STOPPED stay within
    maximumPercent; old ones leave while the healthy tasks stay at or above
    minimumHealthyPercent. A serving task leaves the endpoints first and is
    stopped after the deregistration delay (`now` tells when it has passed).
    Healthy, for this and for a steady state, means HEALTHY, or without a
    health check RUNNING for `settling.SETTLE_SECONDS` (endpoints take the
    latter at once); `settles_at` says when to look again.

    The crash-loop backoff's `gate` holds new tasks back while it waits, and
    a failing service is never in a steady state.

    Tasks on `down` nodes (their agent stopped heartbeating; a subset of
    `draining`) are moved like those of a draining node: replacements start
    elsewhere, and each such task that served is declared lost only once the
    others serving cover the desired count. So when the node comes back
    first, its tasks count again and the surplus is trimmed from the
    replacements (unplaced and PENDING ones go first, then the newest): a
    short outage restarts nothing, and exactly one copy of each survives.
    """
    active = [t for t in tasks if lifecycle.is_active(t)]
    if service.status == pb.SERVICE_DRAINING:
        remaining = [t for t in tasks if t.last_status != pb.STOPPED]
        return ServiceDecision(stop=[t.id for t in active], delete_service=not remaining)
    decision = ServiceDecision()
    config = deployment_defaults.configuration(service)
    # Deregistered already (a leaver, or a task that turned UNHEALTHY): whatever its health
    # says now, it was replaced when it left, and it is stopped once its delay has passed.
    for task in (t for t in active if t.HasField("deregistered_at")):
        if now >= backoff.seconds(task.deregistered_at) + config.deregistration_delay:
            decision.stop.append(task.id)
            if task.stopped_reason:
                decision.reasons[task.id] = task.stopped_reason
        else:
            decision.waiting = True
    active = [t for t in active if not t.HasField("deregistered_at")]
    for task in (t for t in active if t.health_status == pb.UNHEALTHY):
        decision.unhealthy.append(task.id)
        decision.reasons[task.id] = HEALTH_CHECK_FAILED
        if service.ports and config.deregistration_delay and task.node_id not in down:
            decision.deregister.append(task.id)
        else:
            decision.stop.append(task.id)
    active = [t for t in active if t.health_status != pb.UNHEALTHY]
    decision.settles_at = settling.next_settle(active, now)
    current = deployments.primary(service)
    owner_of = deployments.owners(service)
    mine = [t for t in active if current is None or owner_of(t) == current.id]
    mine_ids = {t.id for t in mine}
    old = [t for t in active if t.id not in mine_ids]
    # Tasks to move (a draining node, or rebalancing) are replaced before they leave.
    settled = [t for t in mine if t.node_id not in draining and not t.rebalancing]
    moving = [t for t in mine if t.node_id in draining or t.rebalancing]
    desired = service.desired_count
    leaving: set[str] = set()

    def retire(task: pb.Task, reason: str = "") -> None:
        # A serving task of a service with endpoints leaves them first.
        leaving.add(task.id)
        if task.node_id in down:
            decision.lost.append(task.id)  # it serves nobody, and no agent will stop it
        elif service.ports and _serving(task) and config.deregistration_delay:
            decision.deregister.append(task.id)
        else:
            decision.stop.append(task.id)
        if reason:
            decision.reasons[task.id] = reason

    missing = desired - len(settled)
    if missing > 0 and gate.hold:
        decision.held = missing
    elif missing > 0:
        rolling = current is not None and any(
            t.last_status != pb.STOPPED and owner_of(t) != current.id for t in tasks
        )
        if rolling:
            # Everything not yet STOPPED (old tasks deregistering or stopping
            # too) counts against maximumPercent.
            total = sum(1 for t in tasks if t.last_status != pb.STOPPED)
            missing = min(missing, max(0, deployments.maximum_total(desired, config) - total))
        decision.start = missing
    elif missing < 0:
        for task in sorted(settled, key=_stop_preference)[:-missing]:
            retire(task)
    if old and current is not None:
        healthy = sum(1 for t in active if _proven(t, now) and t.id not in leaving)
        spare = healthy - deployments.minimum_healthy(desired, config)
        reason = f"Replaced by deployment {current.id} ({current.task_definition}) of service {service.name}"
        # Tasks that serve nobody go first; then the oldest deployments' oldest tasks.
        for task in sorted(old, key=lambda t: (_serving(t), t.deployment_id, -_stop_preference(t)[1])):
            if not _serving(task):
                retire(task, reason)
            elif spare > 0:
                retire(task, reason)
                spare -= 1
    # A moving task that serves leaves only while the others serving cover the desired count.
    spare_serving = sum(1 for t in active if _serving(t) and t.id not in leaving) - desired
    for task in sorted(moving, key=_stop_preference):
        reason = (
            f"Rebalancing service {service.name}: moved to a node with fewer of its tasks"
            if task.rebalancing
            else ""
        )
        if not _serving(task):
            retire(task, reason)
        elif spare_serving > 0:
            retire(task, reason)
            spare_serving -= 1
    if missing == 0 and not moving and not old and not decision.unhealthy and not decision.waiting:
        # (A task on a DOWN node is `moving` or `old`: a service with one is never steady.)
        # Nor is one that stops a task in this pass: a leaver whose delay is over, say.
        serving_settled = sum(1 for t in settled if _proven(t, now))
        settled_history = all(t.last_status == pb.STOPPED for t in tasks if not lifecycle.is_active(t))
        decision.steady = (
            serving_settled == desired and settled_history and not gate.failing and not decision.stop
        )
    return decision


class ServiceController:
    def __init__(
        self,
        store: StoreAPI,
        cache: ClusterCache,
        events: EventLog,
        scheduler: SchedulingController,
        policy: backoff.Policy | None = None,
    ) -> None:
        self._store = store
        self._policy = policy or backoff.Policy()
        self._cache = cache
        self._events = events
        self._scheduler = scheduler
        self._quiet: dict[tuple[str, str], object] = {}
        self._barrier = Barrier(type(self).__name__, events)
        self._recovery = RecoveryClock()
        self._look_again_at = 0.0

    def look_again_at(self) -> float:
        """When the last pass's earliest settling task settles (0: none): a pass is due then."""
        return self._look_again_at

    async def reconcile(self) -> int:
        """One pass over every service; returns the highest revision written (0: none)."""
        written = 0
        self._new_tasks: list[Versioned[pb.Task]] = []
        self._look_again_at = 0.0
        down = frozenset(n.value.id for n in self._cache.nodes() if n.value.status == pb.DOWN)
        # Tasks on DOWN nodes are moved like those on DRAINING ones (see `decide`).
        draining = down | frozenset(n.value.id for n in self._cache.nodes() if n.value.status == pb.DRAINING)
        seen = set()
        # While new tasks of a cluster wait for their first placement (a big scale-up), where its
        # tasks belong is still changing: a rebalance would chase it, and its probe costs the busy
        # loop. Tasks the scheduler cannot place (a pending reason) do not hold it back.
        placing = frozenset(
            t.value.cluster
            for t in self._cache.unplaced_tasks()
            if lifecycle.is_active(t.value) and not t.value.pending_reason
        )
        # Deciding a service of 1,000 tasks (and probing where a copy would go) takes tens of
        # milliseconds: the event loop gets a turn between services once a slice is used up.
        slicer = Slicer()
        for versioned in self._cache.services():
            await slicer.turn()
            service = versioned.value
            key = (service.cluster, service.name)
            seen.add(key)
            # Level-triggered, but a service whose record, tasks and the set
            # of draining nodes are as they were at its last quiet pass needs
            # no new look.
            # Nodes too: a host that returns or joins may call for a rebalance.
            version = (
                versioned.mod_revision,
                self._cache.service_tasks_version(*key),
                draining,
                self._cache.nodes_version(),
            )
            if self._quiet.get(key) == version:
                continue
            mark = len(self._new_tasks)
            deferred = False
            try:
                tasks = [t.value for t in self._cache.tasks_of_service(*key)]
                self._recovery.look(key, tasks)
                gate = backoff.OPEN
                now = time.time()
                if service.status == pb.SERVICE_ACTIVE:
                    change = deployments.account(service, tasks, backoff.timestamp(now))
                    if change is not None:
                        # Written first; the decision below is made on what was stored.
                        stored = await self._record_deployments(versioned, change)
                        self._quiet.pop(key, None)
                        if not stored:
                            continue  # changed meanwhile: the next pass looks again
                        written = max(written, stored)
                        versioned = Versioned(versioned.key, change.service, stored)
                        service = change.service
                    state = backoff.advance(service.backoff, tasks, now, self._policy)
                    if state != service.backoff:
                        written = max(written, await self._record_backoff(versioned, state))
                        self._quiet.pop(key, None)
                        continue
                    gate = backoff.gate(state, now)
                    if rebalance.settled(service, tasks, draining, gate.failing):
                        # Looked at again once the cluster's placing is over (never quiet meanwhile).
                        deferred = service.cluster in placing
                        moved = 0 if deferred else await self._rebalance(service, tasks)
                        if moved:
                            written = max(written, moved)
                            self._quiet.pop(key, None)
                            continue
                decision = decide(service, tasks, draining, gate, now, down)
                result = await self._apply(versioned.mod_revision, service, decision)
            except Exception as error:
                # This service only: the others are still reconciled.
                del self._new_tasks[mark:]
                self._quiet.pop(key, None)
                await self._barrier.contain("service", f"{key[0]}/{key[1]}", error, key)
                continue
            written = max(written, result)
            if decision.settles_at:
                self._look_again_at = min(self._look_again_at or decision.settles_at, decision.settles_at)
            # A failing service is looked at on every pass: its gate opens,
            # or its streak ends, with time alone (a settling task too).
            if (
                not result
                and not decision.start
                and not decision.stop
                and not decision.unhealthy
                and not decision.deregister
                and not decision.lost
                and not decision.waiting
                and not decision.settles_at
                and not gate.failing
                and not deferred
            ):
                self._quiet[key] = version
            else:
                self._quiet.pop(key, None)
        for gone in set(self._quiet) - seen:
            del self._quiet[gone]
        self._recovery.forget(seen)
        # All services' new tasks are placed as one plan, written once each.
        written = max(written, await self._scheduler.place_and_commit(self._new_tasks))
        return written

    async def _rebalance(self, service: pb.Service, tasks: list[pb.Task]) -> int:
        """Mark one task to move when the scheduler would put a copy on an emptier node."""
        # The probe below is synchronous: what it would rebuild is rebuilt here, in slices.
        await self._scheduler.warm()
        nodes = {n.value.id: n.value for n in self._cache.nodes()}
        live = [t for t in tasks if t.last_status != pb.STOPPED]
        choice = rebalance.pick(live, nodes, self._scheduler.probe)
        if choice is None:
            return 0
        task, source, target = choice
        current = self._cache.task(task.id)
        if current is None:
            return 0
        marked = pb.Task()
        marked.CopyFrom(current.value)
        marked.rebalancing = True
        result = await self._store.put_if_unchanged(current.key, marked, current.mod_revision)
        if result is None:
            return 0

        def name(node_id: str) -> str:
            node = nodes.get(node_id)
            return node.name if node is not None and node.name else node_id[:12]

        counts = {n: sum(1 for t in live if t.node_id == n) for n in (source, target)}
        message = (
            f"rebalancing: task {task.id[:12]} moves off {name(source)} ({counts[source]} tasks of the "
            f"service) toward {name(target)} ({counts[target]}); its replacement starts first"
        )
        log.info("event=rebalance cluster=%s service=%s task=%s", service.cluster, service.name, task.id)
        await self._events.record(service.cluster, service.name, message)
        return result

    async def _record_deployments(self, versioned: Versioned[pb.Service], change: deployments.Change) -> int:
        service = change.service
        result = await self._store.put_if_unchanged(versioned.key, service, versioned.mod_revision)
        if result is None:
            return 0  # changed meanwhile: the next pass looks again
        for message in change.events:
            log.info(
                "event=deployment cluster=%s service=%s message=%r", service.cluster, service.name, message
            )
            await self._events.record(service.cluster, service.name, message)
        return result

    async def _record_backoff(self, versioned: Versioned[pb.Service], state: pb.ServiceBackoff) -> int:
        service = pb.Service()
        service.CopyFrom(versioned.value)
        previous = pb.ServiceBackoff()
        previous.CopyFrom(service.backoff)
        service.backoff.CopyFrom(state)
        result = await self._store.put_if_unchanged(versioned.key, service, versioned.mod_revision)
        if result is None:
            return 0  # changed meanwhile: the next pass looks again
        if state.attempts > previous.attempts:
            log.warning(
                "event=service_failing cluster=%s service=%s attempts=%d failed_tasks=%d "
                "last_failure=%r delay=%.0fs",
                service.cluster,
                service.name,
                state.attempts,
                state.failed_tasks,
                state.last_failure,
                backoff.delay(state.attempts, self._policy),
            )
            await self._events.record(
                service.cluster, service.name, backoff.failing_message(service.name, state, self._policy)
            )
        elif previous.attempts and not state.attempts:
            log.info(
                "event=service_recovered cluster=%s service=%s failed_tasks=%d",
                service.cluster,
                service.name,
                previous.failed_tasks,
            )
        return result

    async def _apply(self, revision: int, service: pb.Service, decision: ServiceDecision) -> int:
        written = 0
        sick = frozenset(decision.unhealthy)
        taken_out: list[str] = []
        if decision.start:
            written = max(written, await self._start(service, decision.start))
        if decision.stop:
            reason = (
                f"Service {service.name} is being deleted"
                if service.status == pb.SERVICE_DRAINING
                else f"Scaling activity initiated by service {service.name} "
                f"(desired count {service.desired_count}, or its node is draining)"
            )
            stopped = await self._stop(decision.stop, reason, decision.reasons, failed_checks=sick)
            written = max(written, stopped[0])
            taken_out.extend(stopped[1])
        if decision.deregister:
            deregistered = await self._deregister(service, decision.deregister, decision.reasons, sick)
            written = max(written, deregistered[0])
            taken_out.extend(deregistered[1])
        # Said once, when the task is taken out and its replacement starts (not when the
        # stop follows its deregistration delay).
        for task_id in (t for t in taken_out if t in sick):
            log.info(
                "event=task_unhealthy_replaced task=%s cluster=%s service=%s",
                task_id,
                service.cluster,
                service.name,
            )
            await self._events.record(
                service.cluster,
                service.name,
                f"task {task_id[:12]} failed its health check{self._health_output(task_id)} and was replaced",
            )
        if decision.lost:
            stopped = await self._stop(
                decision.lost,
                f"Its node stopped sending heartbeats; replaced by service {service.name}",
                code=pb.NODE_LOST,
            )
            written = max(written, stopped[0])
            log.warning(
                "event=tasks_lost cluster=%s service=%s count=%d replaced=true",
                service.cluster,
                service.name,
                len(stopped[1]),
            )
        if decision.delete_service:
            key = keys.service(service.cluster, service.name)
            deletes = [Delete(key), Delete(keys.events(service.cluster, service.name))]
            if service.vip:
                deletes.append(Delete(keys.vip(service.vip)))  # the virtual IP is free again
            result = await self._store.commit(deletes, [Condition(key, revision)])
            if result:
                log.info("event=service_deleted cluster=%s service=%s", service.cluster, service.name)
                written = max(written, result)
        if decision.steady:
            events = self._cache.service_events(service.cluster, service.name)
            if self._events.last_message(events.value if events else None) != (
                steady := f"service {service.name} has reached a steady state."
            ):
                await self._events.record(service.cluster, service.name, steady)
        return written

    def _health_output(self, task_id: str) -> str:
        """ " (exit 1: curl: connection refused)" from the task's unhealthy container, if it said."""
        current = self._cache.task(task_id)
        for container in current.value.containers if current else ():
            if container.health_status == pb.UNHEALTHY and container.health_output:
                return f" ({escape_controls(container.health_output[:MAX_HEALTH_OUTPUT])})"
        return ""

    async def _start(self, service: pb.Service, count: int) -> int:
        current = deployments.primary(service)
        family, revision = parse_task_definition_ref(
            current.task_definition if current else service.task_definition
        )
        td = self._cache.taskdef(family, revision or 0)
        if td is None:
            await self._events.record(
                service.cluster,
                service.name,
                f"service {service.name} cannot start tasks: "
                f"task definition {service.task_definition} is gone",
            )
            return 0
        room = MAX_NEW_TASKS_PER_PASS - len(self._new_tasks)
        for _ in range(min(count, room)):
            task = lifecycle.new_task(
                service.cluster,
                td.value,
                service.name,
                service.placement_strategy,
                service.placement_constraints,
            )
            task.deployment_id = current.id if current else 0
            self._new_tasks.append(Versioned(keys.task(task.id), task, 0))
        # Past the cap, the rest come in the next pass: this pass's writes
        # start it at once, and the loop serves heartbeats in between.
        return 0

    async def _deregister(
        self,
        service: pb.Service,
        task_ids: list[str],
        reasons: dict[str, str],
        failed_checks: frozenset[str] = frozenset(),
    ) -> tuple[int, list[str]]:
        """Take tasks out of the endpoints; `decide` stops them after the delay.

        The revision written (0: none) and the ids written. Those in `failed_checks` are marked
        `failed_health_check` now, so the stop after the delay is a failure (and only then counted)."""
        written = 0
        requested: list[str] = []
        stamp = backoff.timestamp(time.time())
        for offset in range(0, len(task_ids), BATCH):
            writes, conditions, ids = [], [], []
            for task_id in task_ids[offset : offset + BATCH]:
                current = self._cache.task(task_id)
                if current is None or not lifecycle.is_active(current.value):
                    continue
                task = pb.Task()
                task.CopyFrom(current.value)
                task.deregistered_at.CopyFrom(stamp)
                # Kept for the stop that follows the delay.
                task.stopped_reason = reasons.get(task_id) or (
                    f"Scaling activity initiated by service {service.name} "
                    f"(desired count {service.desired_count}, or its node is draining)"
                )
                task.failed_health_check = task.failed_health_check or task_id in failed_checks
                writes.append(Put(current.key, task))
                conditions.append(Condition(current.key, current.mod_revision))
                ids.append(task_id)
            if writes and (result := await self._store.commit(writes, conditions)):
                written = result
                requested.extend(ids)
                log.info(
                    "event=tasks_deregistered cluster=%s service=%s count=%d delay=%ds",
                    service.cluster,
                    service.name,
                    len(writes),
                    deployment_defaults.configuration(service).deregistration_delay,
                )
        return written, requested

    async def _stop(
        self,
        task_ids: list[str],
        reason: str,
        reasons: dict[str, str] | None = None,
        failed_checks: frozenset[str] = frozenset(),
        code: pb.StopCode.ValueType = pb.SERVICE_SCHEDULER_INITIATED,
    ) -> tuple[int, list[str]]:
        """Request the stops; the revision written (0: none) and the ids whose stop was written.

        Tasks in `failed_checks`, and those deregistered for it, stop as failed health checks.
        code NODE_LOST: the tasks' node is DOWN, so they are recorded STOPPED at once."""
        written = 0
        requested: list[str] = []
        for offset in range(0, len(task_ids), BATCH):
            writes, conditions, ids = [], [], []
            for task_id in task_ids[offset : offset + BATCH]:
                current = self._cache.task(task_id)
                if current is None:
                    continue
                task = current.value
                # A task that never reached a node has nothing to stop: it is
                # STOPPED right away instead of waiting on an agent.
                why = (reasons or {}).get(task_id, reason)
                updated = (
                    lifecycle.mark_stopped(task, code, why)
                    if not task.node_id or code == pb.NODE_LOST
                    else lifecycle.request_stop(task, code, why)
                )
                if updated is not None:
                    updated.failed_health_check = task.failed_health_check or task_id in failed_checks
                    writes.append(Put(current.key, updated))
                    conditions.append(Condition(current.key, current.mod_revision))
                    ids.append(task_id)
            if writes and (result := await self._store.commit(writes, conditions)):
                written = result
                requested.extend(ids)
                log.info("event=tasks_stop_requested count=%d reason=%r", len(writes), reason)
        return written, requested
