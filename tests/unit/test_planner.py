"""The scheduler's pure planner: filters, scorers and the reasons it gives."""

from __future__ import annotations

import random

from berth.v1 import resources_pb2 as pb
from controlplane.scheduler.model import NodeState, PlacementRequest
from controlplane.scheduler.planner import place
from controlplane.scheduler.scorers import BinpackMemory, Spread


def node(node_id: str, cpu: int = 2048, memory: int = 4096, status: int = pb.READY) -> NodeState:
    return NodeState(pb.Node(id=node_id, status=status, cpu_units=cpu, memory_mib=memory), cpu, memory)  # type: ignore[arg-type]


def requests(
    count: int, memory: int = 256, group: str = "web", ports: tuple[tuple[int, int], ...] = ()
) -> list[PlacementRequest]:
    return [PlacementRequest(f"t{i}", group, 128, memory, ports) for i in range(count)]


def test_spread_balances_a_service_across_nodes() -> None:
    nodes = [node("a"), node("b"), node("c")]
    plan = place(nodes, requests(6), Spread())
    counts = {n.id: sum(1 for p in plan.placements if p.node_id == n.id) for n in nodes}
    assert counts == {"a": 2, "b": 2, "c": 2}


def test_binpack_fills_one_node_before_the_next() -> None:
    nodes = [node("a", memory=1024), node("b", memory=1024)]
    plan = place(nodes, requests(5, memory=256), BinpackMemory())
    placed_on = [p.node_id for p in plan.placements]
    assert placed_on[:4] == [placed_on[0]] * 4
    assert placed_on[4] != placed_on[0]


def test_reserving_as_it_goes_never_overcommits() -> None:
    nodes = [node("a", memory=1000)]
    plan = place(nodes, requests(5, memory=300))
    assert len(plan.placements) == 3
    assert len(plan.failures) == 2
    assert nodes[0].memory_free == 100


def test_failure_says_what_no_node_had() -> None:
    plan = place([node("a"), node("b")], requests(1, memory=8192))
    (failure,) = plan.failures
    assert failure.reason == "no node has 8192 MiB of free memory (2 nodes: insufficient memory)"


def test_mixed_rejections_are_counted_by_reason() -> None:
    busy = node("b")
    busy.ports_used.add((8080, pb.TCP))
    plan = place(
        [node("a", memory=100), busy, node("c", status=pb.DOWN)], requests(1, ports=((8080, pb.TCP),))
    )
    (failure,) = plan.failures
    assert failure.reason.startswith("no node fits the task (")
    assert "1 node: insufficient memory" in failure.reason
    assert "1 node: port 8080/tcp in use" in failure.reason
    assert "1 node: node DOWN" in failure.reason


def test_static_host_ports_are_not_placed_twice_on_a_node() -> None:
    plan = place([node("a"), node("b")], requests(3, ports=((8080, pb.TCP),)))
    assert sorted(p.node_id for p in plan.placements) == ["a", "b"]
    assert plan.failures[0].reason.startswith("no node has host port 8080/tcp free")


def test_no_nodes_is_its_own_reason() -> None:
    plan = place([], requests(1))
    assert plan.failures[0].reason == "no nodes are registered"


def test_sampling_still_finds_the_only_feasible_node() -> None:
    nodes = [node(f"n{i}", memory=10) for i in range(200)] + [node("big", memory=4096)]
    plan = place(nodes, requests(1, memory=1024), sample_size=8, rng=random.Random(1))
    assert plan.placements[0].node_id == "big"
