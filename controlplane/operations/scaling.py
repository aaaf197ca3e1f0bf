"""Scaling policies: put and remove a service's target-tracking policy.

The policy is checked whole before anything is written, and stored with
every default filled in, so the record says exactly what the autoscaler
(`controllers/autoscaler.py`) will do. A new or replaced policy starts with a
fresh state: its windows start from the desired count as it stands.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable

from berth import metric_values
from berth.clock import now
from berth.errors import InvalidArgument, NotFound, ServiceNotActive
from berth.scaling import policy_line
from berth.v1 import resources_pb2 as pb
from controlplane import autoscaling
from controlplane.events import EventLog
from controlplane.limits import Quotas
from controlplane.operations.services import Services
from controlplane.store import StoreAPI

log = logging.getLogger(__name__)

METRIC = re.compile(rf"cpu|memory|custom:{metric_values.NAME.pattern}")
# Percent of the reservation: above 100 % is legal (a task may use more CPU than it reserves).
MAX_PERCENT_TARGET = 1000.0
MAX_CUSTOM_TARGET = metric_values.MAX_ABS_VALUE
MAX_WINDOW = 3600.0
MAX_WARMUP = 3600.0
MAX_TOLERANCE = 0.9


def _seconds(what: str, value: float, limit: float) -> float:
    if not math.isfinite(value) or not 0 <= value <= limit:
        raise InvalidArgument(f"{what} {value} is out of range: give seconds from 0 to {limit:g}")
    return value


def checked(policy: pb.ScalingPolicy, tasks_per_service: int) -> pb.ScalingPolicy:
    """The policy with its defaults filled in; InvalidArgument naming what to fix."""
    metric = policy.metric
    if not METRIC.fullmatch(metric):
        shown = metric[:70].encode("unicode_escape").decode()
        raise InvalidArgument(
            f"metric {shown!r} is unknown: use cpu, memory or custom:NAME "
            "(NAME: lowercase letters, digits and '_', starting with a letter, at most 63)"
        )
    limit = MAX_CUSTOM_TARGET if metric.startswith("custom:") else MAX_PERCENT_TARGET
    if not math.isfinite(policy.target) or not 0 < policy.target <= limit:
        unit = "" if metric.startswith("custom:") else " (percent of the reservation)"
        raise InvalidArgument(
            f"target {policy.target} is out of range: give a number above 0 and at most {limit:g}{unit}"
        )
    if policy.max_count < 1:
        raise InvalidArgument(f"max {policy.max_count} is too low: give at least 1")
    if policy.max_count > tasks_per_service:
        raise InvalidArgument(
            f"max {policy.max_count} is over the quota of {tasks_per_service} tasks per service"
        )
    if policy.min_count > policy.max_count:
        raise InvalidArgument(f"min {policy.min_count} is above max {policy.max_count}: give min <= max")
    if policy.max_step_out > tasks_per_service:
        raise InvalidArgument(
            f"max step {policy.max_step_out} is over the quota of {tasks_per_service} tasks per service"
        )
    result = pb.ScalingPolicy()
    result.CopyFrom(policy)
    result.scale_out_window = _seconds(
        "scale-out window",
        policy.scale_out_window
        if policy.HasField("scale_out_window")
        else autoscaling.DEFAULT_SCALE_OUT_WINDOW,
        MAX_WINDOW,
    )
    result.scale_in_window = _seconds(
        "scale-in window",
        policy.scale_in_window if policy.HasField("scale_in_window") else autoscaling.DEFAULT_SCALE_IN_WINDOW,
        MAX_WINDOW,
    )
    result.warmup = _seconds(
        "warm-up", policy.warmup if policy.HasField("warmup") else autoscaling.DEFAULT_WARMUP, MAX_WARMUP
    )
    tolerance = policy.tolerance if policy.HasField("tolerance") else autoscaling.DEFAULT_TOLERANCE
    if not math.isfinite(tolerance) or not 0 <= tolerance <= MAX_TOLERANCE:
        raise InvalidArgument(
            f"tolerance {tolerance} is out of range: give a fraction from 0 to {MAX_TOLERANCE}"
        )
    result.tolerance = tolerance
    return result


class ScalingPolicies:
    def __init__(self, store: StoreAPI, services: Services, quotas: Quotas | None = None) -> None:
        self._store = store
        self._services = services
        self._quotas = quotas or Quotas()
        self._events = EventLog(store)

    async def put(self, cluster_name: str, name: str, policy: pb.ScalingPolicy) -> pb.Service:
        filled = checked(policy, self._quotas.tasks_per_service)

        def attach(service: pb.Service) -> pb.Service:
            service.scaling_policy.CopyFrom(filled)
            service.scaling_state.CopyFrom(pb.ScalingState())
            return service

        service = await self._change(cluster_name, name, attach)
        await self._events.record(service.cluster, service.name, f"scaling policy set: {policy_line(filled)}")
        log.info(
            "event=scaling_policy_set cluster=%s service=%s metric=%s target=%g min=%d max=%d",
            service.cluster,
            service.name,
            filled.metric,
            filled.target,
            filled.min_count,
            filled.max_count,
        )
        return service

    async def delete(self, cluster_name: str, name: str) -> pb.Service:
        def detach(service: pb.Service) -> pb.Service:
            if not service.HasField("scaling_policy"):
                raise NotFound(f"service {service.name!r} has no scaling policy")
            service.ClearField("scaling_policy")
            service.ClearField("scaling_state")
            return service

        service = await self._change(cluster_name, name, detach)
        await self._events.record(
            service.cluster,
            service.name,
            f"scaling policy removed: the desired count stays {service.desired_count}",
        )
        log.info("event=scaling_policy_removed cluster=%s service=%s", service.cluster, service.name)
        return service

    async def _change(
        self, cluster_name: str, name: str, mutate: Callable[[pb.Service], pb.Service]
    ) -> pb.Service:
        """Apply `mutate` to the ACTIVE service's current record (Services.change retries races)."""

        def apply(cluster: str, service: pb.Service) -> pb.Service:
            if service.status != pb.SERVICE_ACTIVE:
                raise ServiceNotActive(f"service {name!r} is being deleted")
            updated = mutate(service)
            updated.updated_at.CopyFrom(now())
            return updated

        _, service = await self._services.change(cluster_name, name, apply)
        return service
