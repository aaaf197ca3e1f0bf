"""RecommendResources: only RUNNING tasks of the PRIMARY deployment count; bad input is refused."""

from __future__ import annotations

from typing import Any

import pytest

from berth.errors import InvalidArgument, NotFound
from berth.v1 import operator_pb2 as api
from berth.v1 import resources_pb2 as pb
from controlplane.rightsizing_view import RightsizingView
from controlplane.store import Versioned
from controlplane.usage import ContainerSample

MIB = 1024 * 1024


class FakeCache:
    def __init__(self, service: pb.Service, taskdefs: list[pb.TaskDefinition], tasks: list[pb.Task]) -> None:
        self._service, self._taskdefs, self._tasks = service, taskdefs, tasks

    def service(self, cluster: str, name: str) -> Versioned[pb.Service] | None:
        match = (cluster, name) == (self._service.cluster, self._service.name)
        return Versioned("s", self._service, 1) if match else None

    def taskdef(self, family: str, revision: int) -> Versioned[pb.TaskDefinition] | None:
        for td in self._taskdefs:
            if (td.family, td.revision) == (family, revision):
                return Versioned("t", td, 1)
        return None

    def tasks_of_service(self, cluster: str, service: str) -> list[Versioned[pb.Task]]:
        return [Versioned(t.id, t, 1) for t in self._tasks]


class FakeWindow:
    def __init__(self, samples: dict[str, list[ContainerSample]]) -> None:
        self._samples = samples

    def container_samples(self, task_id: str, container: str) -> list[ContainerSample]:
        return [s for s in self._samples.get(task_id, []) if s.name == container]


def _samples(cpu: float) -> list[ContainerSample]:
    return [ContainerSample("web", 1000.0 + i * 4, cpu, 20 * MIB) for i in range(11)]


def _view() -> RightsizingView:
    service = pb.Service(
        cluster="default",
        name="web",
        task_definition="web:2",
        deployments=[
            pb.Deployment(id=2, task_definition="web:2", status=pb.PRIMARY),
            pb.Deployment(id=1, task_definition="web:1", status=pb.DEPLOYMENT_ACTIVE),
        ],
    )
    web = pb.ContainerDefinition(name="web", cpu=512, memory_reservation=256)
    taskdefs = [
        pb.TaskDefinition(family="web", revision=1, container_definitions=[web]),
        pb.TaskDefinition(family="web", revision=2, container_definitions=[web]),
    ]
    tasks = [
        pb.Task(id="new", task_definition="web:2", last_status=pb.RUNNING),
        pb.Task(id="old", task_definition="web:1", last_status=pb.RUNNING),
        pb.Task(id="gone", task_definition="web:2", last_status=pb.STOPPED),
    ]
    window = FakeWindow({"new": _samples(40.0), "old": _samples(900.0), "gone": _samples(900.0)})
    cache: Any = FakeCache(service, taskdefs, tasks)
    return RightsizingView(cache, window)  # type: ignore[arg-type]


def test_only_running_tasks_of_the_primary_definition_count() -> None:
    response = _view().recommend(api.RecommendResourcesRequest(cluster="default", service="web"))
    assert response.task_definition == "web:2"
    [row] = response.containers
    assert (row.current_cpu, row.current_memory_mib, row.samples) == (512, 256, 11)
    assert (row.recommended_cpu, row.recommended_memory_mib) == (48, 24)  # 40 -> 46 -> 48; 20 -> 24


@pytest.mark.parametrize(
    ("cluster", "service", "error"),
    [
        ("", "web", InvalidArgument),
        ("default", "", InvalidArgument),
        ("default", "Bad_Name", InvalidArgument),
        ("default", "x" * 300, InvalidArgument),
        ("default", "nope", NotFound),
        ("other", "web", NotFound),
    ],
)
def test_bad_requests_are_refused(cluster: str, service: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        _view().recommend(api.RecommendResourcesRequest(cluster=cluster, service=service))
