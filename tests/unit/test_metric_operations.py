"""Custom metrics at the control plane's door: the service must exist, a task's value is
accepted only for a RUNNING task of that service, and an agent speaks only for tasks placed
on its own node. A refused put records nothing."""

from __future__ import annotations

import math
from typing import Any

import pytest

from agent.runtime.docker_state import task_addresses
from berth.errors import InvalidArgument, NotFound
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb
from controlplane.cache import ClusterCache
from controlplane.custom_metrics import CustomMetrics
from controlplane.operations.metrics import Metrics
from controlplane.store import keys
from controlplane.store.memory import MemoryStore
from tests.unit.conftest import caught_up, put

RUNNING = "a" * 32
PENDING = "b" * 32
ELSEWHERE = "c" * 32
LONE = "d" * 32


@pytest.fixture()
async def metrics(store: MemoryStore, cache: ClusterCache) -> Metrics:
    await put(store, keys.cluster("default"), pb.Cluster(name="default"))
    await put(store, keys.service("default", "web"), pb.Service(cluster="default", name="web"))
    for task_id, status, node, service in [
        (RUNNING, pb.RUNNING, "n1", "web"),
        (PENDING, pb.PENDING, "n1", "web"),
        (ELSEWHERE, pb.RUNNING, "n2", "web"),
        (LONE, pb.RUNNING, "n1", ""),
    ]:
        await put(
            store,
            keys.task(task_id),
            pb.Task(id=task_id, cluster="default", service=service, node_id=node, last_status=status),
        )
    await caught_up(cache, store)
    return Metrics(cache, CustomMetrics())


async def test_an_operator_puts_service_and_task_values(metrics: Metrics) -> None:
    metrics.put("", "web", "queue_depth", 12.0, "", now=1.0)
    metrics.put("default", "web", "rps", 3.0, RUNNING, now=1.0)
    assert [(s.name, s.task_id, s.value) for s in metrics.latest("default", "web", now=2.0)] == [
        ("queue_depth", "", 12.0),
        ("rps", RUNNING, 3.0),
    ]


@pytest.mark.parametrize(
    ("cluster", "service", "name", "value", "task_id", "error"),
    [
        ("default", "api", "rps", 1.0, "", NotFound),
        ("prod", "web", "rps", 1.0, "", NotFound),
        ("default", "Web!", "rps", 1.0, "", InvalidArgument),
        ("default", "web", "Bad-Name", 1.0, "", InvalidArgument),
        ("default", "web", "rps", math.nan, "", InvalidArgument),
        ("default", "web", "rps", math.inf, "", InvalidArgument),
        ("default", "web", "rps", 1e15, "", InvalidArgument),
        ("default", "web", "rps", 1.0, "not-a-task", InvalidArgument),
        ("default", "web", "rps", 1.0, "e" * 32, NotFound),
        ("default", "web", "rps", 1.0, LONE, NotFound),
        ("default", "web", "rps", 1.0, PENDING, InvalidArgument),
    ],
)
async def test_bad_operator_puts_are_refused_and_record_nothing(
    metrics: Metrics,
    cluster: str,
    service: str,
    name: str,
    value: float,
    task_id: str,
    error: type[Exception],
) -> None:
    with pytest.raises(error) as refused:
        metrics.put(cluster, service, name, value, task_id, now=1.0)
    assert "\n" not in str(refused.value)
    assert metrics.latest("default", "web", now=1.0) == []


async def test_an_agent_speaks_for_its_own_running_service_tasks_only(metrics: Metrics) -> None:
    metrics.put_from_node("n1", agent_pb.MetricPut(task_id=RUNNING, name="rps", value=5.0), now=1.0)
    for node, task_id in [("n1", ELSEWHERE), ("n1", PENDING), ("n1", LONE), ("n1", ""), ("n2", RUNNING)]:
        with pytest.raises(InvalidArgument):
            metrics.put_from_node(node, agent_pb.MetricPut(task_id=task_id, name="rps", value=9.0), now=1.0)
    with pytest.raises(InvalidArgument):
        metrics.put_from_node("n1", agent_pb.MetricPut(task_id=RUNNING, name="rps", value=math.nan), now=1.0)
    assert [(s.task_id, s.value) for s in metrics.latest("default", "web", now=2.0)] == [(RUNNING, 5.0)]
    observed = metrics.custom.observe("default", "web", "rps", running_tasks=2, now=2.0)
    assert observed is not None and (observed.value, observed.counted, observed.missing) == (5.0, 1, 1)


def test_container_addresses_come_from_the_engine_list() -> None:
    rows: list[dict[str, Any]] = [
        {
            "Labels": {"berth.task-id": RUNNING},
            "NetworkSettings": {"Networks": {"bridge": {"IPAddress": "172.17.0.5"}, "none": {}}},
        },
        {"Labels": {"berth.task-id": PENDING}, "NetworkSettings": {"Networks": {"host": {"IPAddress": ""}}}},
        {"Labels": {}, "NetworkSettings": {"Networks": {"bridge": {"IPAddress": "172.17.0.6"}}}},
        {"Labels": None, "NetworkSettings": None},
    ]
    assert task_addresses(rows) == {"172.17.0.5": RUNNING}
