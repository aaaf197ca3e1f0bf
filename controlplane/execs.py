"""Commands run in task containers (`berth exec`), relayed over the agents' own streams.

The same road as logs (`controlplane.logs` says why the agent's stream and
not a port on the agent): `open` sends an ExecInput with `start` and a fresh
request_id down the node's stream; the agent answers at once with
`started`, then output, then `exit`, each an ExecOutput with that id, which
`deliver` routes to the relay (only from the session the request went down,
so no agent can answer another node's command). Stdin and window sizes go
down the same stream (`send`); `room` holds the caller back while the
node's stream has more than PENDING_DOWN messages waiting, so a fast stdin
cannot pile up in this replica.

A relay holds at most RELAY_OUTPUTS unread messages: a caller slower than
the command's output is ended with an error and the agent told to stop
(`cancel`), so neither side buffers without bound. `close`, when the caller
goes away, also cancels the agent's side; the agent's stream ending ends
every relay on it. An agent that does not answer within ANSWER_WITHIN
seconds (older than exec, or wedged) ends the relay with an error.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from berth.errors import FailedPrecondition
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb
from controlplane.registry import AgentRegistry, AgentSession

log = logging.getLogger(__name__)

RELAY_OUTPUTS = 256
PENDING_DOWN = 64
ANSWER_WITHIN = 15.0
NO_ANSWER = "the node's agent did not answer the exec request (is it older than this control plane?)"
TOO_SLOW = "the command's output came faster than it was read; the relay was ended"
AGENT_GONE = "the node's agent disconnected; the command's exit code is unknown"


@dataclass
class ExecRelay:
    """One command's outputs, in order; the last one is `exit`."""

    request_id: str
    task_id: str
    session: AgentSession
    queue: asyncio.Queue[pb.ExecOutput] = field(default_factory=asyncio.Queue)
    ended: bool = False

    async def outputs(self, answer_within: float = ANSWER_WITHIN) -> AsyncIterator[pb.ExecOutput]:
        """The outputs until `exit`; a lone `exit` with NO_ANSWER when the agent stays silent."""
        try:
            output = await asyncio.wait_for(self.queue.get(), answer_within)
        except TimeoutError:
            yield pb.ExecOutput(exit=pb.ExecExit(code=-1, error=NO_ANSWER))
            return
        while True:
            yield output
            if output.HasField("exit"):
                return
            output = await self.queue.get()


def ended_with(error: str) -> pb.ExecOutput:
    return pb.ExecOutput(exit=pb.ExecExit(code=-1, error=error))


class ExecRouter:
    def __init__(self, agents: AgentRegistry) -> None:
        self._agents = agents
        self._relays: dict[str, ExecRelay] = {}

    def open(self, node_id: str, start: pb.ExecStart) -> ExecRelay:
        """Start the command on the node; FailedPrecondition when this replica does not hold its stream."""
        session = self._agents.session(node_id)
        if session is None:
            raise FailedPrecondition(
                f"node {node_id} holds no stream to this control-plane replica (its agent is "
                "disconnected, or connected to another replica, which alone can run commands there)"
            )
        sent = pb.ExecStart()
        sent.CopyFrom(start)
        sent.request_id = uuid.uuid4().hex
        relay = ExecRelay(sent.request_id, sent.task, session)
        self._relays[sent.request_id] = relay
        session.send(agent_pb.ControlMessage(exec_input=pb.ExecInput(request_id=sent.request_id, start=sent)))
        log.info("event=exec_request node=%s task=%s request=%s", node_id, sent.task, sent.request_id)
        return relay

    def send(self, relay: ExecRelay, message: pb.ExecInput) -> None:
        """Stdin, its end or a window size for the command (already checked)."""
        if relay.ended:
            return
        sent = pb.ExecInput()
        sent.CopyFrom(message)
        sent.request_id = relay.request_id
        relay.session.send(agent_pb.ControlMessage(exec_input=sent))

    async def room(self, relay: ExecRelay) -> None:
        """Wait until the node's stream has room for one more message (the caller of a
        relay that ends meanwhile is cancelled by `Execs.run`)."""
        session = relay.session
        while not relay.ended and len(session.requests) >= PENDING_DOWN:
            session.drained.clear()
            await session.drained.wait()

    def deliver(self, session: AgentSession, output: pb.ExecOutput) -> None:
        """An output from an agent (already checked); dropped unless it answers this session's request."""
        relay = self._relays.get(output.request_id)
        if relay is None or relay.session is not session or relay.ended:
            return
        if output.HasField("exit"):
            self._end(relay, output)
        elif relay.queue.qsize() >= RELAY_OUTPUTS:
            self._cancel(relay)
            self._end(relay, ended_with(TOO_SLOW))
        else:
            relay.queue.put_nowait(output)

    def fail(self, relay: ExecRelay, error: str) -> None:
        """End the relay with an error of the caller's making, and stop the agent's side."""
        if not relay.ended:
            self._cancel(relay)
            self._end(relay, ended_with(error))

    def close(self, relay: ExecRelay) -> None:
        """The caller is done (or gone): forget the relay, and stop the agent's side if still running."""
        if not relay.ended:
            self._cancel(relay)
            relay.ended = True
        self._relays.pop(relay.request_id, None)

    def disconnected(self, session: AgentSession) -> None:
        """The agent's stream ended: every relay waiting on it ends with an error."""
        for relay in [r for r in self._relays.values() if r.session is session]:
            self._end(relay, ended_with(AGENT_GONE))

    def open_requests(self) -> int:
        return len(self._relays)

    def _end(self, relay: ExecRelay, last: pb.ExecOutput) -> None:
        final = pb.ExecOutput()
        final.CopyFrom(last)
        final.request_id = relay.request_id
        relay.ended = True
        relay.queue.put_nowait(final)
        self._relays.pop(relay.request_id, None)

    def _cancel(self, relay: ExecRelay) -> None:
        relay.session.send(
            agent_pb.ControlMessage(exec_input=pb.ExecInput(request_id=relay.request_id, cancel=True))
        )
