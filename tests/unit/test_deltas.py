"""Desired-state deltas (berth.deltas): diff and apply are inverse, and a gap is never applied."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.hollow import DeltaLoss
from agent.session import DesiredReceiver, Outbox
from berth.deltas import apply_delta, changes, diff
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb

TASK_IDS = ["t1", "t2", "t3", "t4", "t5"]
SERVICES = [("default", "web"), ("default", "api"), ("other", "web"), ("a-b", "x"), ("a", "x")]

assignments = st.builds(
    agent_pb.TaskAssignment,
    task_id=st.sampled_from(TASK_IDS),
    desired_status=st.sampled_from([pb.DESIRED_RUNNING, pb.DESIRED_STOPPED]),
    last_status=st.sampled_from([pb.PENDING, pb.RUNNING]),
    stopped_reason=st.sampled_from(["", "scaled in"]),
    restarts=st.integers(0, 3),
)
endpoints = st.builds(
    pb.Endpoint,
    task_id=st.sampled_from(TASK_IDS),
    address=st.sampled_from(["10.0.0.1", "10.0.0.2"]),
    port=st.integers(32000, 32003),
    service_port=st.just(80),
)


@st.composite
def routes(draw: st.DrawFn) -> agent_pb.ServiceRoute:
    cluster, name = draw(st.sampled_from(SERVICES))
    return agent_pb.ServiceRoute(
        cluster=cluster,
        name=name,
        vip=draw(st.sampled_from(["10.96.0.2", "10.96.0.3"])),
        ports=[pb.ServicePort(port=80, container_port=8080)],
        endpoints=draw(st.lists(endpoints, max_size=3)),
    )


@st.composite
def states(draw: st.DrawFn) -> agent_pb.DesiredState:
    """A canonical snapshot, as the control plane builds one: keys once each, sorted."""
    tasks = {t.task_id: t for t in draw(st.lists(assignments, max_size=6))}
    table = {(r.cluster, r.name): r for r in draw(st.lists(routes(), max_size=6))}
    return agent_pb.DesiredState(
        revision=draw(st.integers(0, 1_000)),
        tasks=[tasks[key] for key in sorted(tasks)],
        routes=[table[key] for key in sorted(table)],
    )


@given(states(), states())
def test_applying_the_diff_of_two_states_to_the_first_gives_the_second(
    a: agent_pb.DesiredState, b: agent_pb.DesiredState
) -> None:
    delta = diff(a, b)
    assert delta.base_revision == a.revision and delta.revision == b.revision
    assert apply_delta(a, delta) == b


@given(states(), states(), st.integers(0, 1_000))
def test_a_delta_built_against_another_revision_is_a_gap(
    a: agent_pb.DesiredState, b: agent_pb.DesiredState, held: int
) -> None:
    delta = diff(a, b)
    other = agent_pb.DesiredState(revision=held, tasks=a.tasks, routes=a.routes)
    result = apply_delta(other, delta)
    assert (result is None) == (held != a.revision)


@given(states())
def test_a_state_diffed_with_itself_changes_nothing(a: agent_pb.DesiredState) -> None:
    delta = diff(a, a)
    assert not delta.tasks and not delta.removed_task_ids and not delta.routes and not delta.removed_routes


@pytest.mark.parametrize(
    ("sent", "current", "changed", "removed"),
    [
        ({}, [], [], []),
        ({}, [("a", 1, "A")], ["A"], []),
        ({"a": 1}, [("a", 1, "A")], [], []),
        ({"a": 1}, [("a", 2, "A2")], ["A2"], []),
        ({"a": 1, "b": 1}, [("b", 1, "B")], [], ["a"]),
        ({"a": 1}, [("b", 1, "B")], ["B"], ["a"]),
    ],
)
def test_changes_are_the_entries_whose_version_moved_and_the_keys_gone(
    sent: dict[str, int], current: list[tuple[str, int, str]], changed: list[str], removed: list[str]
) -> None:
    assert changes(sent, current) == (changed, removed)


def _state(revision: int, *task_ids: str) -> agent_pb.DesiredState:
    return agent_pb.DesiredState(
        revision=revision, tasks=[agent_pb.TaskAssignment(task_id=task_id) for task_id in task_ids]
    )


async def _queued(outbox: Outbox) -> list[agent_pb.AgentMessage]:
    messages = []
    while (message := await outbox.next(0.01)) is not None:
        messages.append(message)
    return messages


async def test_the_agent_applies_deltas_in_sequence_and_asks_once_for_a_snapshot_at_a_gap() -> None:
    outbox = Outbox()
    receiver = DesiredReceiver(outbox)
    first = _state(10, "a")
    assert receiver.receive(agent_pb.ControlMessage(desired_state=first)) == first

    second = _state(12, "a", "b")
    assert receiver.receive(agent_pb.ControlMessage(desired_delta=diff(first, second))) == second
    assert await _queued(outbox) == []

    # A delta built against revision 13, which this agent never got: kept as is, one resync asked.
    third, fourth = _state(13, "b"), _state(14)
    assert receiver.receive(agent_pb.ControlMessage(desired_delta=diff(third, fourth))) is None
    assert receiver.receive(agent_pb.ControlMessage(desired_delta=diff(fourth, _state(15)))) is None
    assert receiver.state == second
    asked = await _queued(outbox)
    assert [m.resync.have_revision for m in asked] == [12]

    # The snapshot closes the gap; deltas apply again.
    fifth = _state(15, "c")
    assert receiver.receive(agent_pb.ControlMessage(desired_state=fifth)) == fifth
    sixth = _state(16, "c", "d")
    assert receiver.receive(agent_pb.ControlMessage(desired_delta=diff(fifth, sixth))) == sixth
    assert receiver.resyncs == 1


async def test_a_delta_before_any_snapshot_asks_for_one() -> None:
    outbox = Outbox()
    receiver = DesiredReceiver(outbox)
    assert receiver.receive(agent_pb.ControlMessage(desired_delta=diff(_state(0), _state(3, "a")))) is None
    assert [m.resync.have_revision for m in await _queued(outbox)] == [0]


async def test_a_lost_delta_makes_the_next_one_a_gap() -> None:
    outbox = Outbox()
    lose = iter([True, False])
    receiver = DesiredReceiver(outbox, lose_delta=lambda: next(lose))
    states = [_state(1), _state(2, "a"), _state(3, "a", "b")]
    receiver.receive(agent_pb.ControlMessage(desired_state=states[0]))
    assert receiver.receive(agent_pb.ControlMessage(desired_delta=diff(states[0], states[1]))) is None
    assert receiver.receive(agent_pb.ControlMessage(desired_delta=diff(states[1], states[2]))) is None
    assert [m.resync.have_revision for m in await _queued(outbox)] == [1]


def test_a_hollow_node_loses_one_delta_per_arming() -> None:
    loss = DeltaLoss()
    node = loss.for_node()
    assert [node(), node()] == [False, False]
    loss.arm()
    assert [node(), node()] == [True, False]
    loss.arm()
    loss.arm()
    assert [node(), node()] == [True, False]
