"""Which nodes a task may use at all: its cluster's (InCluster) and, when it was started
on given nodes, only those (PinnedNodes); and the pending reasons that name that scope."""

from __future__ import annotations

import random

import pytest

from berth.v1 import resources_pb2 as pb
from controlplane.scheduler.filters import InCluster, PinnedNodes
from controlplane.scheduler.model import NodeState, PlacementRequest
from controlplane.scheduler.planner import place


def node(
    node_id: str, cluster: str = "", status: pb.NodeStatus.ValueType = pb.READY, memory: int = 4096
) -> NodeState:
    return NodeState(
        pb.Node(id=node_id, cluster=cluster, status=status, cpu_units=2048, memory_mib=memory), 2048, memory
    )


def request(
    task_id: str = "t0", cluster: str = "default", pinned: frozenset[str] = frozenset(), memory: int = 256
) -> PlacementRequest:
    return PlacementRequest(task_id, f"{cluster}/web", 128, memory, cluster=cluster, pinned_nodes=pinned)


@pytest.mark.parametrize(
    ("node_cluster", "task_cluster", "rejected"),
    [
        ("b", "b", None),
        ("default", "default", None),
        ("", "default", None),  # a record from before nodes had a cluster is the default's
        ("", "b", "in cluster default"),
        ("a", "b", "in cluster a"),
        ("b", "default", "in cluster b"),
    ],
)
def test_a_task_fits_only_the_nodes_of_its_own_cluster(
    node_cluster: str, task_cluster: str, rejected: str | None
) -> None:
    assert InCluster().reject(node("n", node_cluster), request(cluster=task_cluster)) == rejected


@pytest.mark.parametrize(
    ("pinned", "node_id", "rejected"),
    [
        (frozenset(), "n1", None),  # not pinned: any node
        (frozenset({"n1"}), "n1", None),
        (frozenset({"n1", "n2"}), "n2", None),
        (frozenset({"n1"}), "n2", "not a node the task is pinned to"),
    ],
)
def test_a_pinned_task_fits_only_its_pinned_nodes(
    pinned: frozenset[str], node_id: str, rejected: str | None
) -> None:
    assert PinnedNodes().reject(node(node_id), request(pinned=pinned)) == rejected


def test_tasks_of_a_cluster_place_only_on_its_nodes() -> None:
    nodes = [node("a1", "a"), node("a2", "a"), node("b1", "b"), node("d1")]
    plan = place(nodes, [request(f"t{i}", cluster="b") for i in range(4)])
    assert [p.node_id for p in plan.placements] == ["b1"] * 4
    plan = place(nodes, [request(f"t{i}", cluster="a") for i in range(4)])
    assert {p.node_id for p in plan.placements} == {"a1", "a2"}
    plan = place(nodes, [request(f"t{i}") for i in range(2)])
    assert {p.node_id for p in plan.placements} == {"d1"}


def test_sampling_draws_from_the_tasks_own_cluster() -> None:
    nodes = [node(f"a{i}", "a") for i in range(300)] + [node("b1", "b")]
    plan = place(nodes, [request(cluster="b")], sample_size=2, rng=random.Random(7))
    assert [p.node_id for p in plan.placements] == ["b1"]


def test_a_cluster_without_nodes_of_its_own_uses_the_default_clusters() -> None:
    plan = place([node("a1", "a"), node("d1")], [request(f"t{i}", cluster="b") for i in range(2)])
    assert [p.node_id for p in plan.placements] == ["d1", "d1"]
    plan = place([node("a1", "a"), node("d1", memory=100)], [request(cluster="b", memory=512)])
    assert plan.failures[0].reason == (
        "cluster b has no node of its own (its tasks use the default's): "
        "no node of cluster default has 512 MiB of free memory (1 node: insufficient memory)"
    )
    plan = place([node("a1", "a")], [request(cluster="b")])
    assert plan.failures[0].reason == (
        "cluster b has no node of its own (its tasks use the default's): "
        "no node of cluster default is registered (1 node in other clusters)"
    )
    # One DOWN node makes the cluster's own nodes the only ones it uses.
    plan = place([node("b1", "b", pb.DOWN), node("d1")], [request(cluster="b")])
    assert plan.failures[0].reason == "no node of cluster b has the READY status (1 node: node DOWN)"
    plan = place([], [request(cluster="b")])
    assert plan.failures[0].reason == "no nodes are registered"


def test_the_reason_counts_only_the_clusters_own_nodes() -> None:
    nodes = [node("a1", "a"), node("b1", "b", pb.DOWN), node("b2", "b", pb.DRAINING)]
    plan = place(nodes, [request(cluster="b")])
    reason = plan.failures[0].reason
    assert reason.startswith("no node of cluster b has the READY status (")
    assert "1 node: node DOWN" in reason and "1 node: node DRAINING" in reason
    assert "cluster a" not in reason

    plan = place([node("a1", "a"), node("b1", "b", memory=100)], [request(cluster="b", memory=512)])
    assert plan.failures[0].reason == (
        "no node of cluster b has 512 MiB of free memory (1 node: insufficient memory)"
    )


def test_a_single_cluster_keeps_its_plain_reasons() -> None:
    plan = place([node("d1", memory=100)], [request(memory=512)])
    assert plan.failures[0].reason == "no node has 512 MiB of free memory (1 node: insufficient memory)"


def test_a_pinned_task_waits_for_its_own_nodes() -> None:
    nodes = [node("n1", "b", pb.DRAINING), node("n2", "b"), node("n3", "b")]
    pinned = frozenset({"n1"})
    plan = place(nodes, [request(cluster="b", pinned=pinned)])
    assert not plan.placements
    assert plan.failures[0].reason == (
        "no node the task is pinned to (n1) has the READY status (1 node: node DRAINING)"
    )
    plan = place(nodes, [request(f"t{i}", cluster="b", pinned=frozenset({"n1", "n3"})) for i in range(3)])
    assert [p.node_id for p in plan.placements] == ["n3"] * 3


def test_a_pinned_node_that_is_gone_or_elsewhere_is_named() -> None:
    plan = place([node("n1", "a"), node("n2", "b")], [request(cluster="b", pinned=frozenset({"n1"}))])
    assert plan.failures[0].reason == "no node the task is pinned to (n1) is registered in cluster b"
