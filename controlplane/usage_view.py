"""What `berth top` shows (the GetUsage RPC): nodes' host usage, tasks' usage and services' utilization.

Built from this replica's memory: the nodes' heartbeat metrics (`registry`)
and the tasks' usage window (`controlplane.usage`), joined with the cluster
cache. A node or task whose stream goes to another replica shows no figures
here (nodes: zero, tasks: left out) until it reconnects to this one.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from berth.errors import InvalidArgument, NotFound
from berth.names import check_dns_label
from berth.v1 import operator_pb2 as api
from berth.v1 import resources_pb2 as pb
from controlplane.cache import ClusterCache
from controlplane.registry import AgentRegistry
from controlplane.usage import METRICS, UsageWindow, service_utilization, task_utilization

# Tasks younger than this are left out of a service's utilization in `berth top` (as the
# auto-scaler's default warm-up leaves them out of its decisions).
TOP_WARMUP = 0.0


class UsageView:
    def __init__(
        self,
        cache: ClusterCache,
        agents: AgentRegistry,
        window: UsageWindow,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._cache = cache
        self._agents = agents
        self.window = window
        self._clock = clock

    def _tasks(self, cluster: str, service: str) -> list[pb.Task]:
        if service:
            if not cluster:
                raise InvalidArgument("give the service's cluster with the service")
            if self._cache.service(cluster, service) is None:
                raise NotFound(f"service {service!r} does not exist in cluster {cluster!r}")
            found = self._cache.tasks_of_service(cluster, service)
        else:
            if cluster and self._cache.cluster(cluster) is None:
                raise NotFound(f"cluster {cluster!r} does not exist")
            found = [t for t in self._cache.tasks() if not cluster or t.value.cluster == cluster]
        return [t.value for t in found if t.value.last_status != pb.STOPPED]

    def get(self, request: api.GetUsageRequest) -> api.GetUsageResponse:
        if request.cluster:
            check_dns_label("cluster", request.cluster)
        if request.service:
            check_dns_label("service", request.service)
        now = self._clock()
        tasks = self._tasks(request.cluster, request.service)
        response = api.GetUsageResponse()
        for task in sorted(tasks, key=lambda t: (t.cluster, t.service, t.id)):
            sample = self.window.recent(task.id, now)
            if sample is None or task.last_status != pb.RUNNING:
                continue
            summary = pb.TaskUsageSummary(
                task_id=task.id,
                cluster=task.cluster,
                service=task.service,
                node_id=task.node_id,
                containers=[
                    pb.ContainerUsage(name=c.name, cpu_units=c.cpu_units, memory_bytes=c.memory_bytes)
                    for c in sample.containers
                ],
                cpu_units=sample.cpu_units,
                memory_bytes=sample.memory_bytes,
                cpu=task.cpu,
                memory=task.memory,
            )
            summary.sampled_at.FromNanoseconds(int(sample.at * 1e9))
            cpu = task_utilization(sample, task, "cpu")
            memory = task_utilization(sample, task, "memory")
            if cpu is not None:
                summary.cpu_percent = cpu
            if memory is not None:
                summary.memory_percent = memory
            response.tasks.append(summary)
        services = sorted({(t.cluster, t.service) for t in tasks if t.service})
        for cluster, service in services:
            members = [t for t in tasks if t.cluster == cluster and t.service == service]
            usage = pb.ServiceUsage(cluster=cluster, service=service)
            for metric in METRICS:
                observed = service_utilization(self.window, members, metric, now, TOP_WARMUP)
                if observed is None:
                    continue
                setattr(usage, f"{metric}_percent", observed.value)
                usage.counted, usage.warming, usage.missing = (
                    observed.counted,
                    observed.warming,
                    observed.missing,
                )
            if not usage.counted:
                usage.missing = sum(1 for t in members if t.last_status == pb.RUNNING)
            response.services.append(usage)
        hosting = {t.node_id for t in tasks}
        for versioned in sorted(self._cache.nodes(), key=lambda n: n.value.name):
            node = versioned.value
            if request.service and node.id not in hosting:
                continue
            row = pb.NodeUsage(
                node_id=node.id,
                name=node.name,
                tasks=sum(1 for t in self._cache.tasks_on_node(node.id) if t.value.last_status != pb.STOPPED),
            )
            metrics = self._agents.metrics(node.id)
            if metrics is not None:
                row.cpu_percent = metrics.cpu_percent
                row.memory_used_bytes = metrics.memory_used_bytes
                row.memory_total_bytes = metrics.memory_total_bytes
                row.sampled_at.CopyFrom(metrics.sampled_at)
            response.nodes.append(row)
        return response
