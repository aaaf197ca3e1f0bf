"""A few cluster operations on the MemoryStore: the rules they enforce before writing."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from berth.errors import FailedPrecondition, NotFound
from berth.v1 import resources_pb2 as pb
from controlplane import lifecycle
from controlplane.cache import ClusterCache
from controlplane.operations.clusters import Clusters, ensure_default_cluster
from controlplane.operations.services import Services, ServiceSpec
from controlplane.operations.taskdefs import TaskDefinitions
from controlplane.operations.tasks import Tasks
from controlplane.store import Delete, keys
from controlplane.store.memory import MemoryStore
from controlplane.vips import VipAllocator
from tests.unit.conftest import caught_up, put

CIDR = "10.96.0.0/24"


@dataclass
class Ops:
    clusters: Clusters
    taskdefs: TaskDefinitions
    services: Services
    tasks: Tasks


@pytest.fixture()
async def ops(store: MemoryStore, cache: ClusterCache) -> Ops:
    return await build(store, cache)


async def build(store: MemoryStore, cache: ClusterCache) -> Ops:
    """The operations on `store`, with the default cluster and a task definition `web`."""
    await ensure_default_cluster(store)
    clusters = Clusters(store, cache)
    taskdefs = TaskDefinitions(store)
    await taskdefs.register(
        pb.TaskDefinition(
            family="web",
            container_definitions=[
                pb.ContainerDefinition(
                    name="web",
                    image="berth-busybox:2",
                    memory=64,
                    essential=True,
                    port_mappings=[pb.PortMapping(container_port=8080)],
                )
            ],
        )
    )
    return Ops(
        clusters=clusters,
        taskdefs=taskdefs,
        services=Services(store, cache, clusters, taskdefs, VipAllocator(store, CIDR)),
        tasks=Tasks(store, cache, clusters, taskdefs),
    )


async def test_a_cluster_with_a_service_or_a_live_task_is_not_deleted_until_they_are_gone(
    store: MemoryStore, cache: ClusterCache, ops: Ops
) -> None:
    await ops.clusters.create("staging")
    await ops.services.create(
        ServiceSpec(cluster="staging", name="api", task_definition="web", desired_count=1)
    )
    task = await ops.tasks.run("staging", "web")

    with pytest.raises(FailedPrecondition) as refused:
        await ops.clusters.delete("staging")
    message = str(refused.value)
    assert "1 service(s) (api)" in message
    assert f"1 task(s) not STOPPED ({task.id[:12]})" in message

    await store.commit([Delete(keys.service("staging", "api"))])  # as the service controller would
    with pytest.raises(FailedPrecondition, match=r"still has 1 task\(s\) not STOPPED") as refused:
        await ops.clusters.delete("staging")
    assert "service(s)" not in str(refused.value)

    stopped = lifecycle.mark_stopped(task, pb.USER_INITIATED, "done")
    assert stopped is not None
    await put(store, keys.task(task.id), stopped)
    await ops.clusters.delete("staging")
    assert await store.get(keys.cluster("staging"), pb.Cluster) is None


async def test_listing_the_tasks_of_a_service_that_does_not_exist_is_not_found(
    cache: ClusterCache, store: MemoryStore, ops: Ops
) -> None:
    await caught_up(cache, store)
    with pytest.raises(NotFound, match="service 'nosuch' does not exist in cluster 'default'"):
        await ops.tasks.all("default", service="nosuch")
    await ops.services.create(
        ServiceSpec(cluster="default", name="web", task_definition="web", desired_count=0)
    )
    await caught_up(cache, store)
    assert await ops.tasks.all("default", service="web") == []


async def test_each_service_gets_its_own_virtual_ip(store: MemoryStore, ops: Ops) -> None:
    ports = [pb.ServicePort(port=80, container_port=8080)]
    first = await ops.services.create(
        ServiceSpec(cluster="default", name="a", task_definition="web", desired_count=0, ports=ports)
    )
    second = await ops.services.create(
        ServiceSpec(cluster="default", name="b", task_definition="web", desired_count=0, ports=ports)
    )
    assert first.vip and second.vip and first.vip != second.vip
    assert first.vip.startswith("10.96.0.") and second.vip.startswith("10.96.0.")
    claims, _ = await store.scan_raw(keys.VIPS)
    assert {(c.key, c.value) for c in claims} == {
        (keys.vip(first.vip), b"default/a"),
        (keys.vip(second.vip), b"default/b"),
    }


async def test_services_created_at_once_still_get_distinct_virtual_ips() -> None:
    # Every store call yields, so both creates read the same free address
    # and race to claim it; the claim's condition makes the loser pick again.
    store = MemoryStore(interleave=True)
    racing = await build(store, ClusterCache(store))  # creating services reads no cache
    ports = [pb.ServicePort(port=80, container_port=8080)]
    created = await asyncio.gather(
        *(
            racing.services.create(
                ServiceSpec(cluster="default", name=name, task_definition="web", desired_count=0, ports=ports)
            )
            for name in ("a", "b", "c")
        )
    )
    assert len({service.vip for service in created}) == 3


async def test_clusters_are_described_with_their_counts(
    cache: ClusterCache, store: MemoryStore, ops: Ops
) -> None:
    await ops.clusters.create("staging")
    await ops.services.create(
        ServiceSpec(cluster="staging", name="api", task_definition="web", desired_count=0)
    )
    await ops.services.create(
        ServiceSpec(cluster="staging", name="old", task_definition="web", desired_count=0)
    )
    await ops.services.delete("staging", "old")  # DRAINING: no longer active
    pending = await ops.tasks.run("staging", "web")
    running = await ops.tasks.run("staging", "web")
    running.last_status = pb.RUNNING
    await put(store, keys.task(running.id), running)
    await put(store, keys.node("node-1"), pb.Node(id="node-1", name="h1", status=pb.READY, cluster="staging"))
    # A node of another cluster (here: the default, as records without one read) is not counted.
    await put(store, keys.node("node-2"), pb.Node(id="node-2", name="h2", status=pb.READY))
    await caught_up(cache, store)

    described = await ops.clusters.describe("staging")
    assert (described.cluster.name, described.running_tasks, described.pending_tasks) == ("staging", 1, 1)
    assert (described.active_services, described.registered_container_instances) == (1, 1)
    assert pending.last_status == pb.PENDING
    every = await ops.clusters.describe_all()
    assert [d.cluster.name for d in every] == ["default", "staging"]
    assert every[1] == described
    assert (every[0].running_tasks, every[0].active_services, every[0].registered_container_instances) == (
        0,
        0,
        1,
    )
    with pytest.raises(NotFound):
        await ops.clusters.describe("nosuch")
