"""Where the auto-scaler's numbers come from: one MetricSource answering `custom:NAME` from
the custom metrics pushed to this replica, and `cpu` / `memory` from the agents' usage
reports (controlplane.usage)."""

from __future__ import annotations

from collections.abc import Sequence

from berth.v1 import resources_pb2 as pb
from controlplane.autoscaling import MetricSource, Observation
from controlplane.custom_metrics import CustomMetrics
from controlplane.usage import UsageWindow, service_utilization

CUSTOM = "custom:"


class UsageMetrics:
    """A MetricSource for `cpu` and `memory`: the service's average percent of reservation
    over its RUNNING tasks with a recent usage sample (controlplane.usage)."""

    def __init__(self, window: UsageWindow) -> None:
        self._window = window

    def observe(
        self, cluster: str, service: str, metric: str, tasks: Sequence[pb.Task], now: float, warmup: float
    ) -> Observation | None:
        seen = service_utilization(self._window, tasks, metric, now, warmup)
        if seen is None:
            return None
        return Observation(seen.value, seen.counted, seen.warming, seen.missing)


class ServiceMetrics:
    """A MetricSource over both kinds of metric."""

    def __init__(self, custom: CustomMetrics, usage: MetricSource) -> None:
        self._custom = custom
        self._usage = usage

    def observe(
        self, cluster: str, service: str, metric: str, tasks: Sequence[pb.Task], now: float, warmup: float
    ) -> Observation | None:
        if not metric.startswith(CUSTOM):
            return self._usage.observe(cluster, service, metric, tasks, now, warmup)
        # A custom metric is averaged over the service's RUNNING tasks (PENDING ones serve nothing).
        running = sum(1 for task in tasks if task.last_status == pb.RUNNING)
        seen = self._custom.observe(cluster, service, metric.removeprefix(CUSTOM), running, now)
        if seen is None:
            return None
        return Observation(seen.value, seen.counted, seen.warming, seen.missing)
