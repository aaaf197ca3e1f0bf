"""Limits on what callers may create: ports, quotas, registration rate, VIPs, node removal."""

from __future__ import annotations

import asyncio
import ipaddress
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from berth.errors import Conflict, FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from berth.v1 import resources_pb2 as pb
from controlplane import lifecycle
from controlplane.cache import ClusterCache
from controlplane.controllers.housekeeping import Housekeeper
from controlplane.limits import PortPolicy, Quotas, TokenBucket, parse_ports, port_policy
from controlplane.operations.clusters import Clusters, ensure_default_cluster
from controlplane.operations.nodes import NodeFacts, Nodes
from controlplane.operations.services import ServiceChange, Services, ServiceSpec
from controlplane.operations.taskdefs import TaskDefinitions
from controlplane.registry import AgentRegistry
from controlplane.store import keys
from controlplane.store.memory import MemoryStore
from controlplane.vips import VipAllocator, usable_range
from tests.unit.conftest import caught_up, put

# -- load-balancer ports -------------------------------------------------------

POLICY = port_policy(
    listen="127.0.0.1:7400",
    metrics_listen="0.0.0.0:9400",
    etcd_endpoints=["http://10.0.0.5:12379"],
    embedded_etcd_ports=[41000, 41001],
    extra_reserved=[9100],
    allowed_privileged=[80, 443],
)


@pytest.mark.parametrize(
    ("port", "why"),
    [
        (22, "below 1024"),
        (53, "DNS"),
        (2379, "etcd's standard client port"),
        (2380, "etcd's standard peer port"),
        (41000, "embedded etcd"),
        (41001, "embedded etcd"),
        (12379, "cluster's etcd"),
        (7400, "control plane's API port"),
        (9400, "metrics port"),
        (9100, "--lb-reserved-ports"),
    ],
)
def test_ports_berth_or_the_host_use_are_refused_with_the_reason(port: int, why: str) -> None:
    with pytest.raises(FailedPrecondition, match=why):
        POLICY.check(port)


def test_allowed_privileged_ports_and_ordinary_ports_pass() -> None:
    for port in (80, 443, 1024, 8080, 65535):
        POLICY.check(port)
    with pytest.raises(InvalidArgument, match="out of range"):
        POLICY.check(0)


@settings(max_examples=500, deadline=None)
@given(
    port=st.integers(min_value=-10, max_value=70000),
    allowed=st.frozensets(st.integers(min_value=1, max_value=1100), max_size=5),
    reserved=st.frozensets(st.integers(min_value=1, max_value=65535), max_size=5),
)
def test_a_port_passes_exactly_when_in_range_not_reserved_and_not_privileged_unless_allowed(
    port: int, allowed: frozenset[int], reserved: frozenset[int]
) -> None:
    policy = PortPolicy(reserved={p: "test" for p in reserved}, allowed_privileged=allowed)
    expected = 1 <= port <= 65535 and port not in reserved and (port >= 1024 or port in allowed)
    try:
        policy.check(port)
        passed = True
    except (InvalidArgument, FailedPrecondition) as error:
        passed = False
        assert "\n" not in str(error)
    assert passed == expected


def test_port_lists_parse_or_say_what_is_wrong() -> None:
    assert parse_ports("80, 443,", "--lb-allowed-ports") == [80, 443]
    assert parse_ports("", "--lb-allowed-ports") == []
    for bad in ("http", "0", "70000", "²"):
        with pytest.raises(ValueError, match="--lb-allowed-ports"):
            parse_ports(bad, "--lb-allowed-ports")


# -- registration rate ---------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    rate=st.floats(min_value=0.1, max_value=100),
    burst=st.integers(min_value=1, max_value=50),
    steps=st.lists(st.floats(min_value=0, max_value=2), min_size=1, max_size=200),
)
def test_a_token_bucket_never_admits_more_than_its_burst_plus_rate_times_time(
    rate: float, burst: int, steps: list[float]
) -> None:
    now = [0.0]
    bucket = TokenBucket(rate, burst, clock=lambda: now[0])
    admitted = 0
    for step in steps:
        now[0] += step
        admitted += bucket.try_take()
    assert admitted <= burst + rate * now[0] + 1e-6


def test_a_token_bucket_refills_and_zero_rate_means_unlimited() -> None:
    now = [0.0]
    bucket = TokenBucket(2, 3, clock=lambda: now[0])
    assert [bucket.try_take() for _ in range(4)] == [True, True, True, False]
    now[0] += 0.5
    assert bucket.try_take() and not bucket.try_take()
    unlimited = TokenBucket(0, 1)
    assert all(unlimited.try_take() for _ in range(1000))


# -- virtual IPs -----------------------------------------------------------------

WEB = pb.TaskDefinition(
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


async def services_on(
    store: MemoryStore, cache: ClusterCache, cidr: str, quotas: Quotas | None = None
) -> Services:
    await ensure_default_cluster(store)
    clusters = Clusters(store, cache, quotas)
    taskdefs = TaskDefinitions(store, quotas)
    registered = pb.TaskDefinition()
    registered.CopyFrom(WEB)
    await taskdefs.register(registered)
    return Services(store, cache, clusters, taskdefs, VipAllocator(store, cidr), quotas)


async def test_300_services_created_32_at_a_time_all_get_distinct_virtual_ips() -> None:
    store = MemoryStore(interleave=True)
    services = await services_on(store, ClusterCache(store), "10.96.0.0/16")
    gate = asyncio.Semaphore(32)

    async def create(index: int) -> pb.Service:
        async with gate:
            return await services.create(
                ServiceSpec(cluster="default", name=f"s{index}", task_definition="web", desired_count=0)
            )

    created = await asyncio.gather(*(create(i) for i in range(300)))
    vips = {s.vip for s in created}
    assert len(vips) == 300
    network = ipaddress.ip_network("10.96.0.0/16")
    assert all(ipaddress.ip_address(v) in network for v in vips)
    claims, _ = await store.scan_raw(keys.VIPS)
    assert len(claims) == 300


async def test_a_nearly_full_cidr_is_filled_to_the_last_address_then_refused_clearly() -> None:
    # 10.96.0.0/27: 32 addresses, 29 usable (network, first host, broadcast left out).
    store = MemoryStore(interleave=True)
    services = await services_on(store, ClusterCache(store), "10.96.0.0/27")
    created = await asyncio.gather(
        *(
            services.create(
                ServiceSpec(cluster="default", name=f"s{i}", task_definition="web", desired_count=0)
            )
            for i in range(29)
        )
    )
    assert len({s.vip for s in created}) == 29
    with pytest.raises(FailedPrecondition, match=r"no free virtual IP left.*--service-cidr"):
        await services.create(
            ServiceSpec(cluster="default", name="one-more", task_definition="web", desired_count=0)
        )
    assert await store.get(keys.service("default", "one-more"), pb.Service) is None


@settings(max_examples=300, deadline=None)
@given(prefix=st.integers(min_value=8, max_value=30), seed=st.integers(min_value=0, max_value=2**32))
def test_random_vip_candidates_stay_in_the_usable_range(prefix: int, seed: int) -> None:
    network = ipaddress.ip_network(f"10.0.0.0/{prefix}")
    allocator = VipAllocator(MemoryStore(), str(network), random.Random(seed))
    address = asyncio.run(allocator.candidate())
    first, last = usable_range(network)
    assert first <= int(ipaddress.ip_address(address)) <= last
    assert address not in (str(network.network_address), str(network.broadcast_address))


# -- quotas ------------------------------------------------------------------------


async def test_quotas_refuse_with_the_setting_that_raises_them(
    store: MemoryStore, cache: ClusterCache
) -> None:
    quotas = Quotas(clusters=2, services_per_cluster=2, tasks_per_service=5, revisions_per_family=2, nodes=1)
    services = await services_on(store, cache, "10.96.0.0/24", quotas)
    clusters = Clusters(store, cache, quotas)
    taskdefs = TaskDefinitions(store, quotas)
    await caught_up(cache, store)

    await clusters.create("second")  # default + second
    await caught_up(cache, store)
    with pytest.raises(ResourceExhausted, match=r"clusters is limited to 2.*--max-clusters"):
        await clusters.create("third")

    for name in ("a", "b"):
        await services.create(
            ServiceSpec(cluster="default", name=name, task_definition="web", desired_count=0)
        )
    await caught_up(cache, store)
    with pytest.raises(
        ResourceExhausted, match=r"cluster default is limited to 2.*--max-services-per-cluster"
    ):
        await services.create(
            ServiceSpec(cluster="default", name="c", task_definition="web", desired_count=0)
        )
    await services.create(ServiceSpec(cluster="second", name="c", task_definition="web", desired_count=0))

    with pytest.raises(ResourceExhausted, match=r"quota of 5 tasks per service.*--max-tasks-per-service"):
        await services.update("default", "a", ServiceChange(desired_count=6))
    with pytest.raises(ResourceExhausted, match="--max-tasks-per-service"):
        await services.create(ServiceSpec(cluster="second", name="d", task_definition="web", desired_count=6))

    second = pb.TaskDefinition()
    second.CopyFrom(WEB)
    await taskdefs.register(second)  # revisions 1 and 2 of web
    third = pb.TaskDefinition()
    third.CopyFrom(WEB)
    with pytest.raises(ResourceExhausted, match=r"family web is limited to 2.*--max-revisions-per-family"):
        await taskdefs.register(third)

    nodes = Nodes(store, cache, AgentRegistry(), quotas)
    await nodes.register(facts(""))
    await caught_up(cache, store)
    with pytest.raises(ResourceExhausted, match=r"nodes is limited to 1.*--max-nodes"):
        await nodes.register(facts(""))
    known = (await store.scan(keys.NODES, pb.Node))[0][0].value.id
    await nodes.register(facts(known))  # a known node re-registering is not a new one


def facts(node_id: str, name: str = "h1") -> NodeFacts:
    return NodeFacts(
        node_id=node_id,
        name=name,
        address="10.0.0.1",
        cpu_units=1024,
        memory_mib=1024,
        agent_version="test",
        attributes={},
    )


async def test_new_registrations_are_rate_limited_but_known_nodes_are_not(
    store: MemoryStore, cache: ClusterCache
) -> None:
    now = [0.0]
    nodes = Nodes(store, cache, AgentRegistry(), registrations=TokenBucket(1, 2, clock=lambda: now[0]))
    first = await nodes.register(facts(""))
    await nodes.register(facts(""))
    before = store.revision
    with pytest.raises(ResourceExhausted, match="--register-rate"):
        await nodes.register(facts(""))
    assert store.revision == before
    await caught_up(cache, store)
    await nodes.register(facts(first.id))
    now[0] += 1
    await nodes.register(facts(""))


# -- removing nodes ----------------------------------------------------------------


async def test_removing_a_node_with_live_tasks_is_refused_unless_forced(
    store: MemoryStore, cache: ClusterCache
) -> None:
    nodes = Nodes(store, cache, AgentRegistry())
    node = await nodes.register(facts(""))
    await put(store, keys.alive(node.id), b"")
    await put(store, keys.placements(node.id), b"1")
    task = lifecycle.new_task("default", WEB, "web", [], [])
    task.node_id = node.id
    await put(store, keys.task(task.id), task)
    await caught_up(cache, store)

    before = store.revision
    with pytest.raises(FailedPrecondition, match=r"still has 1 task\(s\) not STOPPED.*--force"):
        await nodes.remove("h1", force=False)
    assert store.revision == before
    with pytest.raises(NotFound):
        await nodes.remove("nosuch", force=False)

    removed = await nodes.remove("h1", force=True)
    assert removed.id == node.id
    for key in (keys.node(node.id), keys.alive(node.id), keys.placements(node.id)):
        assert await store.get_raw(key) is None
    lost = await store.get(keys.task(task.id), pb.Task)
    assert lost is not None
    assert lost.value.last_status == pb.STOPPED and lost.value.stop_code == pb.NODE_LOST
    assert "removed by an operator" in lost.value.stopped_reason


async def test_a_connected_node_is_not_removed_without_force(store: MemoryStore, cache: ClusterCache) -> None:
    agents = AgentRegistry()
    nodes = Nodes(store, cache, agents)
    node = await nodes.register(facts(""))
    await caught_up(cache, store)
    agents.connected(node.id)
    with pytest.raises(FailedPrecondition, match="agent connected"):
        await nodes.remove(node.id, force=False)
    await nodes.remove(node.id, force=True)
    assert await store.get_raw(keys.node(node.id)) is None


async def test_a_placement_racing_the_removal_makes_it_fail(store: MemoryStore, cache: ClusterCache) -> None:
    nodes = Nodes(store, cache, AgentRegistry())
    node = await nodes.register(facts(""))
    await caught_up(cache, store)
    real_get_raw = store.get_raw

    async def placement_sneaks_in(key: str):  # type: ignore[no-untyped-def]
        found = await real_get_raw(key)
        if key == keys.placements(node.id):
            await put(store, key, b"1")  # the scheduler commits a placement right after our read
        return found

    store.get_raw = placement_sneaks_in  # type: ignore[method-assign]
    with pytest.raises(Conflict, match="try again"):
        await nodes.remove(node.id, force=True)
    assert await real_get_raw(keys.node(node.id)) is not None


# -- garbage collection of DOWN nodes ---------------------------------------------------


async def test_nodes_down_longer_than_the_setting_are_collected(
    store: MemoryStore, cache: ClusterCache
) -> None:
    old, recent, ready = (
        pb.Node(id="node-old", name="old", status=pb.DOWN),
        pb.Node(id="node-recent", name="recent", status=pb.DOWN),
        pb.Node(id="node-ready", name="ready", status=pb.READY),
    )
    old.down_since.seconds = 1_000
    recent.down_since.seconds = 1_000 + 3_000
    for node in (old, recent, ready):
        await put(store, keys.node(node.id), node)
        await put(store, keys.placements(node.id), b"1")
    await caught_up(cache, store)
    keeper = Housekeeper(store, cache, stopped_task_retention=3600, node_gc_after=3_600)

    assert await keeper.collect_down_nodes(now=1_000 + 3_601) > 0
    await caught_up(cache, store)
    assert {n.value.id for n in cache.nodes()} == {"node-recent", "node-ready"}
    assert await store.get_raw(keys.placements("node-old")) is None
    assert await store.get_raw(keys.placements("node-recent")) is not None

    assert await Housekeeper(store, cache, 3600, node_gc_after=0).collect_down_nodes(now=1e12) == 0


async def test_a_down_node_whose_agent_beats_again_or_with_live_tasks_is_kept(
    store: MemoryStore, cache: ClusterCache
) -> None:
    beating = pb.Node(id="node-beating", name="beating", status=pb.DOWN)
    busy = pb.Node(id="node-busy", name="busy", status=pb.DOWN)
    for node in (beating, busy):
        node.down_since.seconds = 1
        await put(store, keys.node(node.id), node)
    await put(store, keys.alive(beating.id), b"")
    task = lifecycle.new_task("default", WEB, "web", [], [])
    task.node_id = busy.id
    await put(store, keys.task(task.id), task)
    await caught_up(cache, store)
    keeper = Housekeeper(store, cache, stopped_task_retention=3600, node_gc_after=10)
    assert await keeper.collect_down_nodes(now=1e9) == 0
    assert len(cache.nodes()) == 2


async def test_expose_refuses_a_port_tasks_publish_on_their_hosts(
    store: MemoryStore, cache: ClusterCache
) -> None:
    services = await services_on(store, cache, "10.96.0.0/24")
    fixed = pb.TaskDefinition(
        family="fixed",
        container_definitions=[
            pb.ContainerDefinition(
                name="fixed",
                image="berth-busybox:2",
                memory=64,
                essential=True,
                port_mappings=[pb.PortMapping(container_port=80, host_port=9090)],
            )
        ],
    )
    await TaskDefinitions(store).register(fixed)
    ports = [pb.ServicePort(port=80, container_port=8080)]
    await services.create(
        ServiceSpec(cluster="default", name="web", task_definition="web", desired_count=0, ports=ports)
    )
    await services.create(
        ServiceSpec(cluster="default", name="pinned", task_definition="fixed", desired_count=0)
    )
    task = lifecycle.new_task("default", WEB, "", [], [])
    task.network_bindings.add(container_port=8080, host_port=33000, protocol=pb.TCP)
    await put(store, keys.task(task.id), task)
    await caught_up(cache, store)

    with pytest.raises(FailedPrecondition, match=r"port 9090 is a fixed host port \(hostPort\) of fixed:1"):
        await services.expose("default", "web", "LoadBalancer", 9090, 80, pb.TCP)
    with pytest.raises(FailedPrecondition, match=f"port 33000 is a host port of task {task.id[:12]}"):
        await services.expose("default", "web", "LoadBalancer", 33000, 80, pb.TCP)
    await services.expose("default", "web", "LoadBalancer", 9091, 80, pb.TCP)
    with pytest.raises(NotFound, match="not exposed on port 9092"):
        await services.unexpose("default", "web", 9092, pb.TCP)
    unexposed = await services.unexpose("default", "web", 9091, pb.TCP)
    assert list(unexposed.load_balancers) == []
