"""What one agent stream was sent, and the next desired-state message for it.

The first message on a stream is a full snapshot; after it, each message is a
delta (`berth.deltas`) holding only the tasks and routes whose version moved
since the previous message, built against that message's revision. What was
sent is remembered as versions, not messages: a comparison per task of the
node, and the route table's changes computed once per table for every stream
that sent it (`DesiredStates.route_changes`), with no encoding. A full snapshot goes again whenever a
delta would not be smaller, and when the agent asks (`resync`: it missed a
delta, or holds something else), so a gap is always closed by a snapshot.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from berth.deltas import changes
from berth.v1 import agent_pb2 as agent_pb
from controlplane.desired import DesiredStates, Projection, RouteTable
from controlplane.metrics import DESIRED_BYTES, DESIRED_MESSAGES, DESIRED_RESYNCS

# Encoded bytes of one removed key beyond its text (field tags and lengths).
_REMOVED_OVERHEAD = 6
# Seconds between two snapshots a stream's agent asked for: a snapshot can be megabytes,
# so an agent asking again and again is answered at this pace, not at every ask.
RESYNC_INTERVAL = 1.0


class DesiredStream:
    """One stream's sender of desired state: a snapshot first, then deltas."""

    def __init__(
        self, desired: DesiredStates, node_id: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._desired = desired
        self._node_id = node_id
        self._clock = clock
        # None: nothing sent yet: the next message is a snapshot.
        self._sent_tasks: dict[str, object] | None = None
        self._resync_wanted = False
        self._resynced_at = -RESYNC_INTERVAL
        # The route table last sent (shared with every stream that sent it: not a copy).
        self._sent_table: RouteTable | None = None
        self._sent_revision = 0
        self.snapshots = 0
        self.deltas = 0

    def resync(self) -> None:
        """The agent asked for a full snapshot: the next message is one, whatever changed
        (within RESYNC_INTERVAL of the last one it asked for: once that has passed)."""
        self._resync_wanted = True

    def resync_due_in(self) -> float | None:
        """Seconds until a resync asked for can be answered; None when none waits."""
        if not self._resync_wanted:
            return None
        return max(0.0, self._resynced_at + RESYNC_INTERVAL - self._clock())

    def next_message(self) -> agent_pb.ControlMessage | None:
        """The message that brings the agent up to date; None when it already is."""
        projection = self._desired.project(self._node_id)
        if self._sent_tasks is None or self._sent_table is None:
            return self._snapshot(projection)
        if self._resync_wanted and self.resync_due_in() == 0:
            self._resync_wanted = False
            self._resynced_at = self._clock()
            DESIRED_RESYNCS.inc()
            return self._snapshot(projection)
        current = ((entry[0], entry[1], entry) for entry in projection.tasks)
        tasks, removed_tasks = changes(self._sent_tasks, current)
        routes = self._desired.route_changes(self._sent_table, projection.table)
        if not (tasks or removed_tasks or routes.routes or routes.removed):
            return None
        delta_size = (
            sum(entry[3] for entry in tasks)
            + sum(entry[3] for entry in routes.routes)
            + sum(len(task_id) + _REMOVED_OVERHEAD for task_id in removed_tasks)
            + sum(len(c) + len(n) + _REMOVED_OVERHEAD for c, n in routes.removed)
        )
        if delta_size >= projection.size():
            return self._snapshot(projection)
        delta = agent_pb.DesiredStateDelta(
            revision=projection.revision,
            base_revision=self._sent_revision,
            tasks=[entry[2] for entry in tasks],
            removed_task_ids=removed_tasks,
            routes=[entry[2] for entry in routes.routes],
            removed_routes=[agent_pb.RouteKey(cluster=c, name=n) for c, n in routes.removed],
        )
        self._remember(projection)
        self.deltas += 1
        DESIRED_MESSAGES.labels("delta").inc()
        DESIRED_BYTES.labels("delta").inc(delta_size)
        return agent_pb.ControlMessage(desired_delta=delta)

    def _snapshot(self, projection: Projection) -> agent_pb.ControlMessage:
        self._resync_wanted = False  # whatever it was sent for, it answers a resync too
        self._remember(projection)
        self.snapshots += 1
        DESIRED_MESSAGES.labels("snapshot").inc()
        DESIRED_BYTES.labels("snapshot").inc(projection.size())
        return agent_pb.ControlMessage(desired_state=projection.snapshot())

    def _remember(self, projection: Projection) -> None:
        self._sent_tasks = {key: version for key, version, _, _ in projection.tasks}
        self._sent_table = projection.table
        self._sent_revision = projection.revision
