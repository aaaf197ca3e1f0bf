"""The scheduler's pure planner: filters, strategies, constraints, and its reasons."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from berth.errors import InvalidArgument
from berth.v1 import resources_pb2 as pb
from controlplane.scheduler.expressions import parse_expression
from controlplane.scheduler.model import NodeState, PlacementRequest, Plan
from controlplane.scheduler.planner import Planner, place, record
from controlplane.scheduler.policies import compile_constraints, compile_strategy


def node(
    node_id: str,
    cpu: int = 2048,
    memory: int = 4096,
    status: pb.NodeStatus.ValueType = pb.READY,
    **attributes: str,
) -> NodeState:
    return NodeState(
        pb.Node(id=node_id, status=status, cpu_units=cpu, memory_mib=memory, attributes=attributes),
        cpu,
        memory,
    )


def requests(
    count: int,
    memory: int = 256,
    group: str = "web",
    ports: tuple[tuple[int, int], ...] = (),
    strategy: list[tuple[str, str]] | None = None,
    constraints: list[tuple[str, str]] | None = None,
) -> list[PlacementRequest]:
    scorers = compile_strategy([pb.PlacementStrategy(type=t, field=f) for t, f in strategy or []])
    filters = compile_constraints(
        [pb.PlacementConstraint(type=t, expression=e) for t, e in constraints or []]
    )
    return [PlacementRequest(f"t{i}", group, 128, memory, ports, filters, scorers) for i in range(count)]


def counts(plan_nodes: list[str]) -> dict[str, int]:
    return dict(Counter(plan_nodes))


def test_spread_balances_a_service_across_nodes() -> None:
    plan = place([node("a"), node("b"), node("c")], requests(6))
    assert counts([p.node_id for p in plan.placements]) == {"a": 2, "b": 2, "c": 2}


def test_spread_by_attribute_balances_zones_not_nodes() -> None:
    nodes = [node("a1", zone="a"), node("a2", zone="a"), node("b1", zone="b")]
    plan = place(nodes, requests(4, strategy=[("spread", "attribute:zone")]))
    by_zone = Counter("a" if p.node_id.startswith("a") else "b" for p in plan.placements)
    assert by_zone == {"a": 2, "b": 2}


@pytest.mark.parametrize("field", ["memory", "cpu"])
def test_binpack_fills_one_node_before_the_next(field: str) -> None:
    nodes = [node("a", cpu=512, memory=1024), node("b", cpu=512, memory=1024)]
    plan = place(nodes, requests(5, memory=256, strategy=[("binpack", field)]))
    placed_on = [p.node_id for p in plan.placements]
    assert placed_on[:4] == [placed_on[0]] * 4
    assert placed_on[4] != placed_on[0]


def test_distinct_instance_places_one_per_node_and_says_why_not_more() -> None:
    plan = place([node("a"), node("b"), node("c")], requests(4, constraints=[("distinctInstance", "")]))
    assert sorted(p.node_id for p in plan.placements) == ["a", "b", "c"]
    (failure,) = plan.failures
    assert failure.reason == (
        "no node has room under distinctInstance (3 nodes: already runs a task of this service)"
    )


@pytest.mark.parametrize(
    ("expression", "allowed"),
    [
        ("attribute:zone == a", {"a1"}),
        ("attribute:zone != a", {"b1", "none"}),
        ("attribute:zone in [a, b]", {"a1", "b1"}),
        ("attribute:zone in [a, b] and attribute:disk == ssd", {"b1"}),
    ],
)
def test_member_of_expressions(expression: str, allowed: set[str]) -> None:
    nodes = [node("a1", zone="a"), node("b1", zone="b", disk="ssd"), node("none")]
    plan = place(nodes, requests(6, memory=1, constraints=[("memberOf", expression)]))
    assert {p.node_id for p in plan.placements} == allowed


def test_member_of_failure_names_the_expression() -> None:
    plan = place([node("a1", zone="a")], requests(1, constraints=[("memberOf", "attribute:zone == c")]))
    assert plan.failures[0].reason == (
        "no node has attributes matching 'attribute:zone == c' (1 node: does not match attribute:zone == c)"
    )


@pytest.mark.parametrize(
    ("strategy", "constraint"),
    [
        (("binpack", "disk"), None),
        (("spread", "attribute:"), None),
        (("pack", ""), None),
        (None, ("memberOf", "zone = a")),
        (None, ("memberOf", "attribute:zone in a, b")),
        (None, ("sameHost", "")),
    ],
)
def test_bad_rules_are_refused_in_one_line(
    strategy: tuple[str, str] | None, constraint: tuple[str, str] | None
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        if strategy:
            compile_strategy([pb.PlacementStrategy(type=strategy[0], field=strategy[1])])
        if constraint:
            compile_constraints([pb.PlacementConstraint(type=constraint[0], expression=constraint[1])])
    assert "\n" not in str(raised.value)


def test_expression_parsing() -> None:
    (clause,) = parse_expression("attribute:ecs.availability-zone in [us-east-1a, us-east-1b]")
    assert (clause.attribute, clause.operator, clause.values) == (
        "ecs.availability-zone",
        "in",
        ("us-east-1a", "us-east-1b"),
    )


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
        [node("a", memory=100), busy, node("c", status=pb.DOWN), node("d", status=pb.DRAINING)],
        requests(1, ports=((8080, pb.TCP),)),
    )
    (failure,) = plan.failures
    assert failure.reason.startswith("no node fits the task (")
    assert "1 node: insufficient memory" in failure.reason
    assert "1 node: port 8080/tcp in use" in failure.reason
    assert "1 node: node DOWN" in failure.reason
    assert "1 node: node DRAINING" in failure.reason


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


def test_planning_one_request_at_a_time_gives_the_plan_of_all_at_once() -> None:
    """The scheduling controller stops between requests to let the event loop run: the
    incremental Planner must place exactly as one call of place() does."""

    def fleet() -> list[NodeState]:
        return [node(f"n{i}", zone="ab"[i % 2], memory=1024) for i in range(12)]

    asked = requests(40, strategy=[("spread", "attribute:zone")]) + requests(10, group="db", memory=900)
    whole = place(fleet(), asked, sample_size=4, rng=random.Random(7))
    planner = Planner(fleet(), sample_size=4, rng=random.Random(7))
    stepwise = Plan()
    for request in asked:
        record(stepwise, planner.place(request))
    assert stepwise == whole
    assert whole.failures  # some db tasks do not fit: failures are carried the same way
