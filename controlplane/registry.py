"""Which agents hold a stream to this replica, their latest metrics, and what to tell them.

Kept in memory only (metrics never go to etcd); a short window per
node is enough for `berth node list` and, later, autoscaling. Besides its
desired state, a stream carries requests to the agent (log requests,
`controlplane.logs`; exec input, `controlplane.execs`): `send` queues one and
wakes the stream's sender, which sets `drained` each time it has sent them all.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb

METRICS_WINDOW = 60


@dataclass
class AgentSession:
    node_id: str
    metrics: deque[pb.NodeMetrics] = field(default_factory=lambda: deque(maxlen=METRICS_WINDOW))
    # Requests for the agent, sent ahead of the next desired state; `wake` is set by the stream.
    requests: deque[agent_pb.ControlMessage] = field(default_factory=deque)
    wake: Callable[[], None] = lambda: None
    drained: asyncio.Event = field(default_factory=asyncio.Event)

    def send(self, message: agent_pb.ControlMessage) -> None:
        self.requests.append(message)
        self.wake()


class AgentRegistry:
    def __init__(self) -> None:
        self._sessions: dict[str, AgentSession] = {}

    def connected(self, node_id: str) -> AgentSession:
        session = AgentSession(node_id)
        self._sessions[node_id] = session
        return session

    def disconnected(self, session: AgentSession) -> None:
        # A newer stream from the same node may already have replaced this one.
        if self._sessions.get(session.node_id) is session:
            del self._sessions[session.node_id]

    def is_connected(self, node_id: str) -> bool:
        return node_id in self._sessions

    def session(self, node_id: str) -> AgentSession | None:
        """The node's stream to this replica, if it holds one."""
        return self._sessions.get(node_id)

    def record_heartbeat(self, session: AgentSession, metrics: pb.NodeMetrics | None) -> None:
        if metrics is not None:
            session.metrics.append(metrics)

    def metrics(self, node_id: str) -> pb.NodeMetrics | None:
        session = self._sessions.get(node_id)
        if session is None or not session.metrics:
            return None
        return session.metrics[-1]

    def connected_ids(self) -> list[str]:
        return list(self._sessions)
