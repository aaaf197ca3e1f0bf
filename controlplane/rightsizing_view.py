"""The RecommendResources RPC: a service's containers' reservations against their measured usage.

Joins the cluster cache (the service, its PRIMARY deployment's task
definition, its RUNNING tasks of that definition) with this replica's usage
window, and leaves the arithmetic to `controlplane.rightsizing`. Tasks of
older deployments are left out: their containers may be defined otherwise.
"""

from __future__ import annotations

from berth.errors import InvalidArgument, NotFound
from berth.names import check_dns_label, parse_task_definition_ref
from berth.v1 import operator_pb2 as api
from berth.v1 import resources_pb2 as pb
from controlplane.cache import ClusterCache
from controlplane.rightsizing import recommend
from controlplane.usage import ContainerSample, UsageWindow


def primary_task_definition(service: pb.Service) -> str:
    """The PRIMARY deployment's "family:revision" (the service's own before deployments existed)."""
    for deployment in service.deployments:
        if deployment.status == pb.PRIMARY:
            return deployment.task_definition
    return service.task_definition


class RightsizingView:
    def __init__(self, cache: ClusterCache, window: UsageWindow) -> None:
        self._cache = cache
        self._window = window

    def recommend(self, request: api.RecommendResourcesRequest) -> api.RecommendResourcesResponse:
        if not request.cluster:
            raise InvalidArgument("give the service's cluster")
        check_dns_label("cluster", request.cluster)
        check_dns_label("service", request.service)
        found = self._cache.service(request.cluster, request.service)
        if found is None:
            raise NotFound(f"service {request.service!r} does not exist in cluster {request.cluster!r}")
        ref = primary_task_definition(found.value)
        family, revision = parse_task_definition_ref(ref)
        taskdef = self._cache.taskdef(family, revision or 0)
        if revision is None or taskdef is None:
            raise NotFound(f"task definition {ref!r} of service {request.service!r} is not known")
        running = [
            t.value
            for t in self._cache.tasks_of_service(request.cluster, request.service)
            if t.value.last_status == pb.RUNNING and t.value.task_definition == ref
        ]
        response = api.RecommendResourcesResponse(task_definition=ref)
        for container in taskdef.value.container_definitions:
            samples: list[ContainerSample] = []
            for task in running:
                samples.extend(self._window.container_samples(task.id, container.name))
            found_rec = recommend(container, samples)
            row = api.ContainerRecommendation(
                container=found_rec.container,
                current_cpu=found_rec.current_cpu,
                current_memory_mib=found_rec.current_memory_mib,
                samples=found_rec.samples,
                window_seconds=found_rec.window_seconds,
                reason=found_rec.reason,
            )
            if found_rec.cpu is not None:
                row.recommended_cpu = found_rec.cpu
            if found_rec.memory_mib is not None:
                row.recommended_memory_mib = found_rec.memory_mib
            response.containers.append(row)
        return response
