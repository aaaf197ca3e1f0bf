"""The desired-state projection on a cache over the MemoryStore: what each agent is sent."""

from __future__ import annotations

import pytest

from berth.v1 import resources_pb2 as pb
from controlplane.cache import ClusterCache
from controlplane.desired import DesiredStates
from controlplane.store import keys
from controlplane.store.memory import MemoryStore
from tests.unit.conftest import caught_up, put

WEB = pb.TaskDefinition(
    family="web",
    revision=1,
    container_definitions=[pb.ContainerDefinition(name="web", image="berth-busybox:2")],
)


def task(
    task_id: str,
    node: str,
    status: pb.TaskStatus.ValueType = pb.RUNNING,
    desired: pb.DesiredStatus.ValueType = pb.DESIRED_RUNNING,
    service: str = "",
    host_port: int = 0,
) -> pb.Task:
    return pb.Task(
        id=task_id,
        cluster="default",
        service=service,
        node_id=node,
        task_definition="web:1",
        desired_status=desired,
        last_status=status,
        network_bindings=[pb.NetworkBinding(container_port=8080, host_port=host_port)] if host_port else [],
    )


def service(name: str, vip: str = "", ports: bool = True) -> pb.Service:
    return pb.Service(
        cluster="default",
        name=name,
        vip=vip,
        ports=[pb.ServicePort(port=80, container_port=8080)] if ports else [],
    )


@pytest.fixture()
async def desired(store: MemoryStore, cache: ClusterCache) -> DesiredStates:
    await put(store, keys.taskdef("web", 1), WEB)
    await put(store, keys.node("n1"), pb.Node(id="n1", address="10.0.0.1", status=pb.READY))
    await put(store, keys.node("n2"), pb.Node(id="n2", address="10.0.0.2", status=pb.READY))
    await caught_up(cache, store)
    return DesiredStates(cache)


async def test_a_nodes_snapshot_holds_its_tasks_not_stopped_with_their_task_definitions(
    store: MemoryStore, cache: ClusterCache, desired: DesiredStates
) -> None:
    await put(store, keys.task("b"), task("b", "n1", pb.PENDING))
    await put(store, keys.task("a"), task("a", "n1"))
    await put(store, keys.task("c"), task("c", "n1", pb.STOPPED, pb.DESIRED_STOPPED))
    await put(store, keys.task("d"), task("d", "n2"))
    await caught_up(cache, store)
    _, state = desired.build("n1")
    assert [t.task_id for t in state.tasks] == ["a", "b"]  # sorted, c stopped, d elsewhere
    assert all(t.task_definition == WEB for t in state.tasks)
    assert [t.last_status for t in state.tasks] == [pb.RUNNING, pb.PENDING]
    assert state.revision == cache.revision
    _, other = desired.build("n2")
    assert [t.task_id for t in other.tasks] == ["d"]


async def test_the_fingerprint_changes_with_the_nodes_content_and_not_otherwise(
    store: MemoryStore, cache: ClusterCache, desired: DesiredStates
) -> None:
    await put(store, keys.task("a"), task("a", "n1"))
    await put(store, keys.task("d"), task("d", "n2"))
    await caught_up(cache, store)
    first, _ = desired.build("n1")
    assert desired.build("n1")[0] == first

    # Changes that are not in n1's snapshot leave its fingerprint alone.
    await put(store, keys.task("d"), task("d", "n2", pb.STOPPED, pb.DESIRED_STOPPED))
    await put(store, keys.cluster("other"), pb.Cluster(name="other"))
    await put(store, keys.service("default", "batch"), service("batch", ports=False))
    await caught_up(cache, store)
    assert desired.build("n1")[0] == first

    # Each change to what n1 is sent gives a new one.
    seen = [first]
    changes = [
        (keys.task("a"), task("a", "n1", desired=pb.DESIRED_STOPPED)),
        (keys.task("e"), task("e", "n1", pb.PENDING)),
        (keys.taskdef("web", 1), pb.TaskDefinition(family="web", revision=1, cpu=256)),
        (keys.service("default", "web"), service("web", vip="10.96.0.2")),
    ]
    for key, value in changes:
        await put(store, key, value)
        await caught_up(cache, store)
        fingerprint, _ = desired.build("n1")
        assert fingerprint not in seen, f"writing {key} did not change the fingerprint"
        seen.append(fingerprint)


async def test_the_route_table_has_services_with_ports_and_a_vip_and_only_serving_endpoints(
    store: MemoryStore, cache: ClusterCache, desired: DesiredStates
) -> None:
    await put(store, keys.service("default", "web"), service("web", vip="10.96.0.2"))
    await put(store, keys.service("default", "batch"), service("batch", vip="10.96.0.3", ports=False))
    await put(store, keys.service("default", "novip"), service("novip"))
    await put(store, keys.node("n2"), pb.Node(id="n2", address="10.0.0.2", status=pb.DOWN))
    await put(store, keys.task("ok"), task("ok", "n1", service="web", host_port=32001))
    await put(store, keys.task("pending"), task("pending", "n1", pb.PENDING, service="web", host_port=32002))
    await put(
        store,
        keys.task("stopping"),
        task("stopping", "n1", desired=pb.DESIRED_STOPPED, service="web", host_port=32003),
    )
    await put(store, keys.task("away"), task("away", "n2", service="web", host_port=32004))
    await caught_up(cache, store)
    before, state = desired.build("n1")
    (web,) = state.routes
    assert (web.name, web.vip, [p.port for p in web.ports]) == ("web", "10.96.0.2", [80])
    assert [(e.task_id, e.address, e.port, e.service_port) for e in web.endpoints] == [
        ("ok", "10.0.0.1", 32001, 80)
    ]
    assert [r.name for r in desired.build("n2")[1].routes] == ["web"]  # the same table everywhere

    # The DOWN node comes back: its task serves again, and the fingerprint says so.
    await put(store, keys.node("n2"), pb.Node(id="n2", address="10.0.0.2", status=pb.READY))
    await caught_up(cache, store)
    after, state = desired.build("n1")
    assert after != before
    assert [e.task_id for e in state.routes[0].endpoints] == ["ok", "away"]
