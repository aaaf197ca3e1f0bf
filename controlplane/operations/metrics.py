"""Custom metrics in: from operators (`berth metric put`) and from agents (values their tasks'
containers pushed), checked and recorded into the replica's CustomMetrics; and out, for
`berth metric list`.

Puts are not written to the audit log one by one: an application pushes every few seconds,
which would drown the log's real changes, and a put changes nothing durable (values live in
memory for minutes). Refused puts still are (see controlplane/api/access.py).
"""

from __future__ import annotations

import logging

from berth.errors import InvalidArgument, NotFound
from berth.metric_values import check_name, check_task_id, check_value
from berth.names import check_dns_label
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb
from controlplane.cache import ClusterCache
from controlplane.custom_metrics import CustomMetrics, Sample
from controlplane.operations.clusters import cluster_name

log = logging.getLogger(__name__)


class Metrics:
    def __init__(self, cache: ClusterCache, metrics: CustomMetrics) -> None:
        self._cache = cache
        self.custom = metrics

    def _service(self, cluster: str, service: str) -> str:
        cluster = cluster_name(cluster)
        if self._cache.cluster(cluster) is None:
            raise NotFound(f"cluster {cluster!r} does not exist")
        check_dns_label("service", service)
        if self._cache.service(cluster, service) is None:
            raise NotFound(f"service {service!r} does not exist in cluster {cluster!r}")
        return cluster

    def put(self, cluster: str, service: str, name: str, value: float, task_id: str, now: float) -> None:
        """An operator's value: for the service, or for one of its RUNNING tasks."""
        cluster = self._service(cluster, service)
        check_name(name)
        check_value(value)
        check_task_id(task_id)
        if task_id:
            found = self._cache.task(task_id)
            if found is None or found.value.cluster != cluster or found.value.service != service:
                raise NotFound(f"task {task_id} is not a task of service {service!r}")
            if found.value.last_status != pb.RUNNING:
                raise InvalidArgument(f"task {task_id} is not RUNNING: only running tasks have metrics")
        self.custom.put(cluster, service, name, value, now, task_id)

    def put_from_node(self, node_id: str, put: agent_pb.MetricPut, now: float) -> None:
        """A value an agent relayed from one of its tasks: accepted only for a RUNNING service
        task the cluster has placed on that very node (the node's identity is its certificate's)."""
        check_name(put.name)
        check_value(put.value)
        check_task_id(put.task_id)
        if not put.task_id:
            raise InvalidArgument("a metric from an agent needs the task it came from")
        found = self._cache.task(put.task_id)
        if found is None or found.value.node_id != node_id:
            raise InvalidArgument(f"task {put.task_id} is not placed on node {node_id}")
        task = found.value
        if not task.service:
            raise InvalidArgument(f"task {put.task_id} belongs to no service")
        if task.last_status != pb.RUNNING:
            raise InvalidArgument(f"task {put.task_id} is not RUNNING")
        self.custom.put(task.cluster, task.service, put.name, put.value, now, put.task_id)

    def latest(self, cluster: str, service: str, now: float) -> list[Sample]:
        cluster = self._service(cluster, service)
        return self.custom.latest(cluster, service, now)
