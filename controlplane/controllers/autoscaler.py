"""The autoscaler: every few seconds, each scaled service's desired count follows its metric.

For each ACTIVE service with a scaling policy it observes the metric through
a `MetricSource`, asks `autoscaling.decide` what to do, and writes the new
desired count and the policy's state in one compare-and-put on the service's
record (re-deciding on fresh state when another writer got there first).
Every action, and every new kind of hold, is a service event; the service
controller then starts or stops tasks as for any desired count.

How it meets the operator and deployments (README "Auto-scaling"):
- `berth service update --desired-count N` is allowed: N outside [min, max]
  is clamped on the next pass (with an event), and N inside becomes the count
  the policy continues from, its windows starting again.
- During a rollout the policy keeps scaling out (the deployment works off the
  desired count), and scale-in waits until the rollout completes.

One service's failure is logged, counted and skipped; the others go on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from berth.v1 import resources_pb2 as pb
from controlplane import autoscaling, lifecycle
from controlplane.autoscaling import Decision, MetricSource, Observation
from controlplane.cache import ClusterCache
from controlplane.controllers.barrier import Barrier
from controlplane.events import EventLog
from controlplane.metrics import SCALING_DECISIONS, SCALING_OBSERVED, SCALING_TARGET
from controlplane.store import RETRY, Retry, StoreAPI, Versioned, optimistic

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 5.0


def deploying(service: pb.Service) -> bool:
    """A rollout is replacing tasks: the PRIMARY is IN_PROGRESS and an older deployment is listed.

    A service's only deployment being IN_PROGRESS (new, or not yet steady
    after a scale-out) is no rollout: scale-in may go on."""
    return (
        len(service.deployments) > 1
        and service.deployments[0].status == pb.PRIMARY
        and service.deployments[0].rollout_state == pb.IN_PROGRESS
    )


class Autoscaler:
    def __init__(
        self,
        store: StoreAPI,
        cache: ClusterCache,
        metrics: MetricSource,
        interval: float = DEFAULT_INTERVAL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._cache = cache
        self._metrics = metrics
        self._interval = interval
        self._clock = clock
        self._next_run = 0.0
        self._events = EventLog(store)
        self._barrier = Barrier(type(self).__name__)
        self._gauged: set[tuple[str, str, str]] = set()

    async def reconcile(self) -> int:
        if time.monotonic() < self._next_run:
            return 0
        self._next_run = time.monotonic() + self._interval
        written = 0
        gauged: set[tuple[str, str, str]] = set()
        for versioned in self._cache.services():
            service = versioned.value
            if service.status != pb.SERVICE_ACTIVE or not service.HasField("scaling_policy"):
                continue
            gauged.add((service.cluster, service.name, service.scaling_policy.metric))
            try:
                written = max(written, await self._scale(versioned))
            except Exception as error:
                self._barrier.note("service", f"{service.cluster}/{service.name}", error)
        for labels in self._gauged - gauged:
            SCALING_OBSERVED.remove(*labels)
            SCALING_TARGET.remove(*labels)
        self._gauged = gauged
        return written

    async def _scale(self, versioned: Versioned[pb.Service]) -> int:
        service = versioned.value
        policy = service.scaling_policy
        now = self._clock()
        tasks = [
            t.value
            for t in self._cache.tasks_of_service(service.cluster, service.name)
            if lifecycle.is_active(t.value)
        ]
        observation = self._metrics.observe(
            service.cluster, service.name, policy.metric, tasks, now, policy.warmup
        )
        labels = (service.cluster, service.name, policy.metric)
        SCALING_TARGET.labels(*labels).set(policy.target)
        if observation is not None and observation.counted:
            SCALING_OBSERVED.labels(*labels).set(observation.value)
        return await self._apply(versioned.key, service.cluster, service.name, observation, now)

    async def _apply(
        self, key: str, cluster: str, name: str, observation: Observation | None, now: float
    ) -> int:
        decided: Decision | None = None
        revision = before = 0

        async def attempt() -> Retry | None:
            nonlocal decided, revision, before
            found = await self._store.get(key, pb.Service)
            if found is None:
                return None
            service = found.value
            if service.status != pb.SERVICE_ACTIVE or not service.HasField("scaling_policy"):
                return None
            decided = autoscaling.decide(
                service.scaling_policy,
                service.scaling_state,
                service.desired_count,
                observation,
                now,
                deploying=deploying(service),
            )
            if decided.count is None and decided.state == service.scaling_state:
                return None
            before = service.desired_count
            if decided.count is not None:
                service.desired_count = decided.count
            service.scaling_state.CopyFrom(decided.state)
            written = await self._store.put_if_unchanged(key, service, found.mod_revision)
            if written is None:
                return RETRY
            revision = written
            return None

        await optimistic(attempt, what=f"the scaling of service {name!r}")
        if decided is None or not revision:
            return 0
        if decided.count is not None:
            SCALING_DECISIONS.labels(cluster, name, "out" if decided.count > before else "in").inc()
            log.info(
                "event=service_scaled cluster=%s service=%s desired=%d reason=%r",
                cluster,
                name,
                decided.count,
                decided.message,
            )
        if decided.event and decided.message:
            await self._events.record(cluster, name, decided.message)
        return revision
