"""The auto-scaler's one MetricSource: custom metrics averaged over RUNNING tasks, cpu and
memory handed to the usage source."""

from __future__ import annotations

from collections.abc import Sequence

from berth.v1 import resources_pb2 as pb
from controlplane.autoscaling import Observation
from controlplane.custom_metrics import CustomMetrics
from controlplane.metric_sources import ServiceMetrics


class Usage:
    def __init__(self) -> None:
        self.asked: list[str] = []

    def observe(
        self, cluster: str, service: str, metric: str, tasks: Sequence[pb.Task], now: float, warmup: float
    ) -> Observation | None:
        self.asked.append(metric)
        return Observation(value=70.0, counted=len(tasks), warming=0, missing=0)


def _tasks(*statuses: pb.TaskStatus.ValueType) -> list[pb.Task]:
    return [pb.Task(id=f"t{i}", last_status=s) for i, s in enumerate(statuses)]


def test_a_service_total_is_averaged_over_running_tasks_only() -> None:
    custom = CustomMetrics()
    custom.put("c", "web", "queue_depth", 90.0, now=100.0)
    source = ServiceMetrics(custom, Usage())
    seen = source.observe(
        "c", "web", "custom:queue_depth", _tasks(pb.RUNNING, pb.RUNNING, pb.PENDING), 101.0, 60
    )
    assert seen == Observation(value=45.0, counted=2, warming=0, missing=0)


def test_no_running_task_or_no_recent_value_is_no_observation() -> None:
    custom = CustomMetrics()
    custom.put("c", "web", "queue_depth", 90.0, now=100.0)
    source = ServiceMetrics(custom, Usage())
    assert source.observe("c", "web", "custom:queue_depth", _tasks(pb.PENDING), 101.0, 60) is None
    assert source.observe("c", "web", "custom:queue_depth", _tasks(pb.RUNNING), 1000.0, 60) is None
    assert source.observe("c", "web", "custom:other", _tasks(pb.RUNNING), 101.0, 60) is None


def test_cpu_and_memory_go_to_the_usage_source() -> None:
    usage = Usage()
    source = ServiceMetrics(CustomMetrics(), usage)
    assert source.observe("c", "web", "cpu", _tasks(pb.RUNNING), 1.0, 60) is not None
    assert source.observe("c", "web", "memory", _tasks(pb.RUNNING), 1.0, 60) is not None
    assert usage.asked == ["cpu", "memory"]
