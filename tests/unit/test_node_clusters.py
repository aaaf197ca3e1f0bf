"""Nodes join the cluster their agent names: it must exist, a node moves only when it runs
nothing, and a cluster with nodes (or services, or tasks) is not deleted."""

from __future__ import annotations

import pytest

from berth.errors import (
    ClusterHasNodes,
    ClusterHasServices,
    ClusterHasTasks,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from berth.v1 import resources_pb2 as pb
from controlplane import lifecycle
from controlplane.cache import ClusterCache
from controlplane.operations.clusters import Clusters, ensure_default_cluster
from controlplane.operations.nodes import NodeFacts, Nodes
from controlplane.operations.services import Services, ServiceSpec
from controlplane.operations.taskdefs import TaskDefinitions
from controlplane.operations.tasks import Tasks
from controlplane.registry import AgentRegistry
from controlplane.store import Delete, keys
from controlplane.store.memory import MemoryStore
from controlplane.vips import VipAllocator
from tests.unit.conftest import caught_up, put

WEB = pb.TaskDefinition(
    family="web",
    container_definitions=[
        pb.ContainerDefinition(name="web", image="berth-busybox:2", memory=64, essential=True)
    ],
)


def facts(node_id: str = "", cluster: str = "", name: str = "h1") -> NodeFacts:
    return NodeFacts(
        node_id=node_id,
        name=name,
        address="10.0.0.1",
        cpu_units=1024,
        memory_mib=1024,
        agent_version="test",
        attributes={},
        cluster=cluster,
    )


@pytest.fixture()
async def clusters(store: MemoryStore, cache: ClusterCache) -> Clusters:
    await ensure_default_cluster(store)
    return Clusters(store, cache)


@pytest.fixture()
def nodes(store: MemoryStore, cache: ClusterCache, clusters: Clusters) -> Nodes:
    return Nodes(store, cache, AgentRegistry(), clusters=clusters)


async def test_a_node_joins_the_cluster_it_names_and_the_default_when_it_names_none(
    clusters: Clusters, nodes: Nodes
) -> None:
    await clusters.create("blue")
    assert (await nodes.register(facts(cluster="blue"))).cluster == "blue"
    assert (await nodes.register(facts())).cluster == "default"


async def test_an_unknown_cluster_is_refused_and_nothing_is_written(store: MemoryStore, nodes: Nodes) -> None:
    before = store.revision
    with pytest.raises(NotFound) as refused:
        await nodes.register(facts(cluster="blue"))
    assert str(refused.value) == "cluster 'blue' does not exist; create it with `berth cluster create blue`"
    with pytest.raises(InvalidArgument, match="cluster name 'Blue!' is not a DNS label"):
        await nodes.register(facts(cluster="Blue!"))
    assert store.revision == before


async def test_a_node_moves_to_another_cluster_only_when_it_runs_no_live_task(
    store: MemoryStore, cache: ClusterCache, clusters: Clusters, nodes: Nodes
) -> None:
    await clusters.create("blue")
    node = await nodes.register(facts())
    task = lifecycle.new_task("default", WEB)
    task.node_id = node.id
    await put(store, keys.task(task.id), task)
    await caught_up(cache, store)

    before = store.revision
    with pytest.raises(FailedPrecondition) as refused:
        await nodes.register(facts(node.id, cluster="blue"))
    message = str(refused.value)
    assert f"is in cluster 'default' and still has 1 task(s) not STOPPED ({task.id[:12]})" in message
    assert "cannot move to cluster 'blue'" in message
    assert store.revision == before
    assert (await nodes.register(facts(node.id))).cluster == "default"  # staying is fine

    stopped = lifecycle.mark_stopped(task, pb.USER_INITIATED, "done")
    assert stopped is not None
    await put(store, keys.task(task.id), stopped)
    moved = await nodes.register(facts(node.id, cluster="blue"))
    assert moved.cluster == "blue" and moved.id == node.id


async def test_a_record_without_a_cluster_is_the_default_clusters(
    store: MemoryStore, cache: ClusterCache, nodes: Nodes
) -> None:
    await put(store, keys.node("node-old"), pb.Node(id="node-old", name="old", status=pb.READY))
    await caught_up(cache, store)
    refreshed = await nodes.register(facts("node-old", name="old"))
    assert refreshed.cluster == "default"
    await caught_up(cache, store)
    assert [s.node.id for s in nodes.summaries("default")] == ["node-old"]
    assert nodes.summaries("blue") == []


async def test_a_cluster_with_nodes_is_not_deleted_until_they_are_removed(
    store: MemoryStore, cache: ClusterCache, clusters: Clusters, nodes: Nodes
) -> None:
    await clusters.create("blue")
    first = await nodes.register(facts(cluster="blue", name="b1"))
    second = await nodes.register(facts(cluster="blue", name="b2"))
    await nodes.register(facts(name="d1"))
    with pytest.raises(ClusterHasNodes) as refused:
        await clusters.delete("blue")
    assert str(refused.value) == (
        "cluster 'blue' still has 2 container instances; drain and remove them first"
    )
    assert isinstance(refused.value, FailedPrecondition)
    await caught_up(cache, store)
    await nodes.remove(first.id, force=False)
    with pytest.raises(ClusterHasNodes, match="still has 1 container instances"):
        await clusters.delete("blue")
    await nodes.remove(second.id, force=False)
    await clusters.delete("blue")
    assert await store.get(keys.cluster("blue"), pb.Cluster) is None


async def test_services_and_tasks_refuse_a_delete_with_their_own_error_types(
    store: MemoryStore, cache: ClusterCache, clusters: Clusters
) -> None:
    taskdefs = TaskDefinitions(store)
    await taskdefs.register(WEB)
    services = Services(store, cache, clusters, taskdefs, VipAllocator(store, "10.96.0.0/24"))
    tasks = Tasks(store, cache, clusters, taskdefs)
    await clusters.create("blue")
    await services.create(ServiceSpec(cluster="blue", name="api", task_definition="web", desired_count=0))
    await tasks.run("blue", "web")
    with pytest.raises(ClusterHasServices, match=r"still has 1 service\(s\) \(api\) and 1 task\(s\)"):
        await clusters.delete("blue")
    await store.commit([Delete(keys.service("blue", "api"))])
    with pytest.raises(ClusterHasTasks, match=r"still has 1 task\(s\) not STOPPED"):
        await clusters.delete("blue")
