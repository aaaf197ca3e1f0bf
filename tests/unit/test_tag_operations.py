"""Tags on the MemoryStore: given at creation, listed, changed and removed in place;
tasks pinned to nodes (StartTask); task definition families by status."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from berth.errors import FailedPrecondition, InvalidArgument, NotFound
from berth.v1 import resources_pb2 as pb
from controlplane.cache import ClusterCache
from controlplane.operations.clusters import Clusters, ensure_default_cluster
from controlplane.operations.nodes import NodeFacts, Nodes
from controlplane.operations.services import ServiceChange, Services, ServiceSpec
from controlplane.operations.tags import Resource, Tags
from controlplane.operations.taskdefs import TaskDefinitions
from controlplane.operations.tasks import Tasks
from controlplane.registry import AgentRegistry
from controlplane.store import keys
from controlplane.store.memory import MemoryStore
from controlplane.vips import VipAllocator


def web(family: str = "web", tags: list[pb.Tag] | None = None) -> pb.TaskDefinition:
    return pb.TaskDefinition(
        family=family,
        container_definitions=[
            pb.ContainerDefinition(name="web", image="berth-busybox:2", memory=64, essential=True)
        ],
        tags=tags or [],
    )


def tag(key: str, value: str = "") -> pb.Tag:
    return pb.Tag(key=key, value=value)


def pairs(tags: list[pb.Tag]) -> list[tuple[str, str]]:
    return [(t.key, t.value) for t in tags]


@dataclass
class Ops:
    clusters: Clusters
    taskdefs: TaskDefinitions
    services: Services
    tasks: Tasks
    nodes: Nodes
    tags: Tags


@pytest.fixture()
async def ops(store: MemoryStore, cache: ClusterCache) -> Ops:
    await ensure_default_cluster(store)
    clusters = Clusters(store, cache)
    taskdefs = TaskDefinitions(store)
    await taskdefs.register(web())
    return Ops(
        clusters=clusters,
        taskdefs=taskdefs,
        services=Services(store, cache, clusters, taskdefs, VipAllocator(store, "10.96.0.0/24")),
        tasks=Tasks(store, cache, clusters, taskdefs),
        nodes=Nodes(store, cache, AgentRegistry(), clusters=clusters),
        tags=Tags(store),
    )


async def test_tags_given_at_creation_are_stored_on_each_kind(ops: Ops) -> None:
    cluster = await ops.clusters.create("blue", tags=[tag("team", "a")])
    assert pairs(list(cluster.tags)) == [("team", "a")]
    td = await ops.taskdefs.register(web(tags=[tag("tier", "web")]))
    service = await ops.services.create(
        ServiceSpec(cluster="blue", name="api", task_definition="web", desired_count=0, tags=[tag("svc")])
    )
    task = await ops.tasks.run("blue", "web", started_by="ci-42", tags=[tag("job", "1")])
    assert task.started_by == "ci-42"

    assert pairs(await ops.tags.list(Resource("cluster", "", "blue"))) == [("team", "a")]
    assert pairs(await ops.tags.list(Resource("task-definition", "", f"web:{td.revision}"))) == [
        ("tier", "web")
    ]
    assert pairs(await ops.tags.list(Resource("service", "blue", service.name))) == [("svc", "")]
    assert pairs(await ops.tags.list(Resource("task", "blue", task.id))) == [("job", "1")]


async def test_bad_tags_at_creation_write_nothing(store: MemoryStore, ops: Ops) -> None:
    before = store.revision
    with pytest.raises(InvalidArgument, match="reserved"):
        await ops.clusters.create("blue", tags=[tag("aws:x")])
    with pytest.raises(InvalidArgument, match="given twice"):
        await ops.taskdefs.register(web(tags=[tag("a"), tag("a")]))
    with pytest.raises(InvalidArgument, match="is invalid"):
        await ops.services.create(
            ServiceSpec(
                cluster="default", name="api", task_definition="web", desired_count=0, tags=[tag("a;b")]
            )
        )
    with pytest.raises(InvalidArgument, match="startedBy"):
        await ops.tasks.run("default", "web", started_by="not allowed")
    with pytest.raises(InvalidArgument, match="51 tags"):
        await ops.tasks.run("default", "web", tags=[tag(f"k{i}") for i in range(51)])
    assert store.revision == before


async def test_tag_and_untag_change_the_record_in_place(store: MemoryStore, ops: Ops) -> None:
    await ops.clusters.create("blue", tags=[tag("team", "a"), tag("env", "dev")])
    blue = Resource("cluster", "", "blue")
    after = await ops.tags.tag(blue, [tag("env", "prod"), tag("owner", "me")])
    assert pairs(after) == [("team", "a"), ("env", "prod"), ("owner", "me")]
    stored = await store.get(keys.cluster("blue"), pb.Cluster)
    assert stored is not None and pairs(list(stored.value.tags)) == pairs(after)

    revision = store.revision
    assert pairs(await ops.tags.tag(blue, [tag("env", "prod")])) == pairs(after)
    assert store.revision == revision, "tagging with what is there already writes nothing"

    assert pairs(await ops.tags.untag(blue, ["team", "nosuch"])) == [("env", "prod"), ("owner", "me")]
    with pytest.raises(InvalidArgument, match="reserved"):
        await ops.tags.tag(blue, [tag("AWS:x")])
    with pytest.raises(InvalidArgument, match="at most 50"):
        await ops.tags.tag(blue, [tag(f"k{i}") for i in range(49)])
    assert len(await ops.tags.list(blue)) == 2


async def test_a_service_update_and_its_tags_do_not_overwrite_each_other(
    store: MemoryStore, ops: Ops
) -> None:
    await ops.services.create(
        ServiceSpec(cluster="default", name="api", task_definition="web", desired_count=1)
    )
    await ops.services.update("default", "api", ServiceChange(desired_count=2))
    resource = Resource("service", "default", "api")
    await ops.tags.tag(resource, [tag("a", "1")])
    _, service, _ = await ops.services.existing("default", "api")
    assert service.desired_count == 2 and pairs(list(service.tags)) == [("a", "1")]


async def test_missing_resources_are_not_found_with_what_was_looked_for(ops: Ops) -> None:
    task = await ops.tasks.run("default", "web")
    cases = [
        (Resource("cluster", "", "nosuch"), "cluster 'nosuch' does not exist"),
        (Resource("service", "default", "nosuch"), "service 'nosuch' does not exist in cluster 'default'"),
        (Resource("task-definition", "", "web:9"), "task definition web:9 does not exist"),
        (Resource("task", "default", "0" * 32), f"task {'0' * 32} does not exist in cluster 'default'"),
    ]
    await ops.clusters.create("blue")
    cases.append((Resource("task", "blue", task.id), f"task {task.id} does not exist in cluster 'blue'"))
    for resource, message in cases:
        with pytest.raises(NotFound) as missing:
            await ops.tags.list(resource)
        assert str(missing.value) == message
        with pytest.raises(NotFound):
            await ops.tags.tag(resource, [tag("a")])
        with pytest.raises(NotFound):
            await ops.tags.untag(resource, ["a"])


async def test_bad_resource_names_are_invalid(ops: Ops) -> None:
    for resource in (
        Resource("cluster", "", "Bad!"),
        Resource("task-definition", "", "web"),  # no revision
        Resource("task", "default", "abc123"),  # a prefix is not enough
    ):
        with pytest.raises(InvalidArgument):
            await ops.tags.list(resource)


def facts(cluster: str, name: str) -> NodeFacts:
    return NodeFacts("", name, "10.0.0.1", 1024, 1024, "test", {}, cluster)


async def test_a_task_is_pinned_only_to_ready_nodes_of_its_cluster(ops: Ops) -> None:
    await ops.clusters.create("blue")
    b1 = await ops.nodes.register(facts("blue", "b1"))
    b2 = await ops.nodes.register(facts("blue", "b2"))
    d1 = await ops.nodes.register(facts("", "d1"))
    task = await ops.tasks.run("blue", "web", nodes=[b2.id, b1.id, b2.id])
    assert list(task.pinned_nodes) == [b2.id, b1.id]

    with pytest.raises(NotFound, match=f"node {d1.id} does not exist in cluster 'blue'"):
        await ops.tasks.run("blue", "web", nodes=[b1.id, d1.id])
    with pytest.raises(NotFound, match="node node-000000000000 does not exist"):
        await ops.tasks.run("blue", "web", nodes=["node-000000000000"])
    with pytest.raises(InvalidArgument, match="node id"):
        await ops.tasks.run("blue", "web", nodes=["Not A Node"])
    with pytest.raises(InvalidArgument, match="the limit is 10"):
        await ops.tasks.run("blue", "web", nodes=[f"node-{i}" for i in range(11)])
    await ops.nodes.set_status(b1.id, pb.DRAINING)
    with pytest.raises(FailedPrecondition, match=f"node {b1.id} is DRAINING"):
        await ops.tasks.run("blue", "web", nodes=[b1.id])


async def test_families_by_status_and_prefix(ops: Ops) -> None:
    await ops.taskdefs.register(web("webapp"))
    await ops.taskdefs.register(web("worker"))
    await ops.taskdefs.register(web("worker"))
    await ops.taskdefs.register(web("gone"))
    await ops.taskdefs.deregister("gone:1")
    await ops.taskdefs.deregister("worker:1")  # worker:2 is still ACTIVE

    assert await ops.taskdefs.families() == ["web", "webapp", "worker"]
    assert await ops.taskdefs.families("INACTIVE") == ["gone"]
    assert await ops.taskdefs.families("ALL") == ["gone", "web", "webapp", "worker"]
    assert await ops.taskdefs.families("ALL", prefix="web") == ["web", "webapp"]
    assert await ops.taskdefs.families(prefix="webapp") == ["webapp"]
    assert await ops.taskdefs.families(prefix="zzz") == []
    with pytest.raises(InvalidArgument, match="use ACTIVE, INACTIVE or ALL"):
        await ops.taskdefs.families("DELETED")
    with pytest.raises(InvalidArgument):
        await ops.taskdefs.families(prefix="bad/prefix")
