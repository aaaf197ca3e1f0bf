"""One agent stream's desired state (controlplane.desired_stream): a snapshot first, then deltas."""

from __future__ import annotations

import pytest

from berth.deltas import apply_delta
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb
from controlplane.cache import ClusterCache
from controlplane.desired import DesiredStates
from controlplane.desired_stream import RESYNC_INTERVAL, DesiredStream
from controlplane.store import Delete, keys
from controlplane.store.memory import MemoryStore
from tests.unit.conftest import caught_up, put
from tests.unit.test_desired import WEB, service, task


@pytest.fixture()
async def desired(store: MemoryStore, cache: ClusterCache) -> DesiredStates:
    await put(store, keys.taskdef("web", 1), WEB)
    for node in ("n1", "n2"):
        await put(store, keys.node(node), pb.Node(id=node, address=f"10.0.0.{node[1]}", status=pb.READY))
    for index in range(20):
        await put(
            store,
            keys.service("default", f"svc{index:02}"),
            service(f"svc{index:02}", f"10.96.0.{index + 2}"),
        )
    await put(store, keys.task("a"), task("a", "n1", service="svc00", host_port=32001))
    await put(store, keys.task("b"), task("b", "n2", service="svc01", host_port=32002))
    await caught_up(cache, store)
    return DesiredStates(cache)


class Agent:
    """What an agent holds: the snapshot, brought up to date by each delta."""

    def __init__(self) -> None:
        self.state: agent_pb.DesiredState | None = None

    def take(self, message: agent_pb.ControlMessage | None) -> str:
        if message is None:
            return "nothing"
        if message.HasField("desired_state"):
            self.state = message.desired_state
            return "snapshot"
        assert self.state is not None
        applied = apply_delta(self.state, message.desired_delta)
        assert applied is not None, "a delta the control plane built must apply to what it sent"
        self.state = applied
        return "delta"


async def test_a_snapshot_first_then_deltas_that_keep_the_agent_equal_to_a_fresh_snapshot(
    store: MemoryStore, cache: ClusterCache, desired: DesiredStates
) -> None:
    stream, agent = DesiredStream(desired, "n1"), Agent()
    assert agent.take(stream.next_message()) == "snapshot"
    assert agent.take(stream.next_message()) == "nothing"

    # One endpoint change on another node: a delta holding that one route only.
    sent_revision = cache.revision
    await put(store, keys.task("b"), task("b", "n2", service="svc01", host_port=32003))
    await caught_up(cache, store)
    message = stream.next_message()
    assert message is not None and message.HasField("desired_delta")
    delta = message.desired_delta
    assert (delta.base_revision, delta.revision) == (sent_revision, cache.revision)
    assert [(r.name, [e.port for e in r.endpoints]) for r in delta.routes] == [("svc01", [32003])]
    assert not delta.tasks and not delta.removed_task_ids and not delta.removed_routes
    assert message.ByteSize() * 10 < desired.build("n1")[1].ByteSize()
    assert agent.take(message) == "delta"
    assert agent.state == desired.build("n1")[1]

    # A task placed on n1, one stopped, a service deleted: each reaches the agent as a delta.
    changes = [
        (keys.task("c"), task("c", "n1", pb.PENDING)),
        (keys.task("a"), task("a", "n1", pb.STOPPED, pb.DESIRED_STOPPED, service="svc00", host_port=32001)),
        (keys.service("default", "svc05"), None),
    ]
    for key, value in changes:
        if value is None:
            await store.commit([Delete(key)])
        else:
            await put(store, key, value)
        await caught_up(cache, store)
        assert agent.take(stream.next_message()) == "delta", key
        assert agent.state == desired.build("n1")[1], key
    assert agent.state is not None
    assert [t.task_id for t in agent.state.tasks] == ["c"]
    assert "svc05" not in [r.name for r in agent.state.routes]
    assert (stream.snapshots, stream.deltas) == (1, 4)


async def test_a_resync_sends_a_full_snapshot_even_with_nothing_changed_at_most_once_a_second(
    desired: DesiredStates,
) -> None:
    now = [100.0]
    stream = DesiredStream(desired, "n1", clock=lambda: now[0])
    assert Agent().take(stream.next_message()) == "snapshot"
    assert stream.resync_due_in() is None
    stream.resync()
    assert stream.resync_due_in() == 0
    assert Agent().take(stream.next_message()) == "snapshot"
    assert stream.next_message() is None

    # Asked again at once (a confused or hostile agent): answered when the interval has passed.
    now[0] += 0.25
    stream.resync()
    assert stream.resync_due_in() == pytest.approx(RESYNC_INTERVAL - 0.25)
    assert stream.next_message() is None
    now[0] += RESYNC_INTERVAL
    assert Agent().take(stream.next_message()) == "snapshot"
    assert stream.resync_due_in() is None
    assert stream.snapshots == 3


async def test_a_delta_no_smaller_than_the_snapshot_is_sent_as_a_snapshot(
    store: MemoryStore, cache: ClusterCache
) -> None:
    await put(store, keys.taskdef("web", 1), WEB)
    await put(store, keys.task("a"), task("a", "n1"))
    await caught_up(cache, store)
    stream = DesiredStream(DesiredStates(cache), "n1")
    assert Agent().take(stream.next_message()) == "snapshot"
    # The node's only task changed and there is no route table: the delta would be all of it.
    await put(store, keys.task("a"), task("a", "n1", desired=pb.DESIRED_STOPPED))
    await caught_up(cache, store)
    assert Agent().take(stream.next_message()) == "snapshot"


async def test_the_route_changes_are_computed_once_for_every_stream_that_sent_the_same_table(
    store: MemoryStore, cache: ClusterCache, desired: DesiredStates
) -> None:
    old = desired.routes()
    await put(store, keys.task("b"), task("b", "n2", service="svc01", host_port=32009))
    await caught_up(cache, store)
    new = desired.routes()
    assert desired.routes() is new  # one table per cache revision
    assert desired.route_changes(old, new) is desired.route_changes(old, new)
    assert [entry[0] for entry in desired.route_changes(old, new).routes] == [("default", "svc01")]


async def test_a_change_that_no_route_shows_sends_the_agent_nothing(
    store: MemoryStore, cache: ClusterCache, desired: DesiredStates
) -> None:
    stream = DesiredStream(desired, "n1")
    assert Agent().take(stream.next_message()) == "snapshot"
    # A node joins: every route's inputs moved (the nodes), none of their contents did.
    await put(store, keys.node("n3"), pb.Node(id="n3", address="10.0.0.3", status=pb.READY))
    await caught_up(cache, store)
    assert stream.next_message() is None


async def test_a_task_rewritten_with_nothing_its_agent_is_sent_changed_sends_nothing(
    store: MemoryStore, cache: ClusterCache, desired: DesiredStates
) -> None:
    await put(store, keys.task("z"), task("z", "n1"))
    await caught_up(cache, store)
    stream = DesiredStream(desired, "n1")
    assert Agent().take(stream.next_message()) == "snapshot"
    # Its host port is recorded (not part of an assignment; the task serves no service).
    await put(store, keys.task("z"), task("z", "n1", host_port=32100))
    await caught_up(cache, store)
    assert stream.next_message() is None
    await put(store, keys.task("z"), task("z", "n1", desired=pb.DESIRED_STOPPED, host_port=32100))
    await caught_up(cache, store)
    message = stream.next_message()
    assert message is not None and [t.task_id for t in message.desired_delta.tasks] == ["z"]
