"""Per-node and per-task CPU and memory on the control plane's /metrics.

A collector, read at scrape time from what this replica holds in memory (the
nodes' heartbeats, the tasks' usage window), so a stopped task's series ends
when the window forgets it: label cardinality never outgrows the tasks that
run. Runs in the metrics server's thread: it copies the maps it reads
(one C-level call each) and never mutates them.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from controlplane.registry import AgentRegistry
from controlplane.usage import UsageWindow


class UsageCollector(Collector):
    def __init__(self, agents: AgentRegistry, window: UsageWindow) -> None:
        self._agents = agents
        self._window = window

    def collect(self) -> Iterator[GaugeMetricFamily]:
        node_cpu = GaugeMetricFamily(
            "berth_node_cpu_percent",
            "Host CPU in use, percent of all its cores (agent heartbeat)",
            labels=["node"],
        )
        node_used = GaugeMetricFamily(
            "berth_node_memory_used_bytes", "Host memory in use (agent heartbeat)", labels=["node"]
        )
        node_total = GaugeMetricFamily("berth_node_memory_total_bytes", "Host memory", labels=["node"])
        for node_id in self._agents.connected_ids():
            metrics = self._agents.metrics(node_id)
            if metrics is None:
                continue
            node_cpu.add_metric([node_id], metrics.cpu_percent)
            node_used.add_metric([node_id], float(metrics.memory_used_bytes))
            node_total.add_metric([node_id], float(metrics.memory_total_bytes))
        labels = ["cluster", "service", "task"]
        task_cpu = GaugeMetricFamily(
            "berth_task_cpu_units", "A task's CPU in use, CPU units (1024 = one core)", labels=labels
        )
        task_memory = GaugeMetricFamily("berth_task_memory_bytes", "A task's memory in use", labels=labels)
        for task_id in self._window.task_ids():
            sample = self._window.task_latest(task_id)
            where = self._window.labels(task_id)
            if sample is None or where is None:
                continue
            values = [where[0], where[1], task_id]
            task_cpu.add_metric(values, sample.cpu_units)
            task_memory.add_metric(values, float(sample.memory_bytes))
        yield from (node_cpu, node_used, node_total, task_cpu, task_memory)
