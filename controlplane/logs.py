"""Live container output, fetched from agents over the streams they already hold.

Why over the agent's own stream, and not a port on the agent the control
plane would dial: agents are told, not asked (DESIGN.md). An agent opens
one connection, outbound; a listening port on every host would be one more
thing to firewall, to reach through NAT and to secure, while the stream
already carries the node's identity and gets mTLS with everything else
(issue 10). The cost is that only the replica holding a node's stream can
read its output: `open` on any other replica fails in one line, and the
operator asks again (or the CLI reaches that replica).

Flow: `open` queues a LogRequest (a fresh request_id) on the node's stream;
the agent answers with LogChunks carrying that id, which `deliver` routes
to the reader (only from the session the request went down, so no agent can
answer another node's request). A reader holds at most READER_CHUNKS
unread chunks: one slower than the output is ended with a message saying
so, and the agent told to stop (LogCancel), so neither side buffers without
bound and the agent's stream (status, heartbeats) never waits for a reader.
`close`, when the reader goes away, also cancels the agent's side. An
agent answers every request at once (an empty chunk, then the output); one
that does not within ANSWER_WITHIN seconds (an agent older than logs, or a
wedged one) ends the reader with a message instead of a silent hang.
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

READER_CHUNKS = 64
ANSWER_WITHIN = 15.0
NO_ANSWER = "the node's agent did not answer the log request (is it older than this control plane?)"
TOO_SLOW = "the output came faster than it was read; the stream was ended"
AGENT_GONE = "the node's agent disconnected; its output can no longer be read"


@dataclass
class LogReader:
    """One request's chunks, in order; the last one has `end` set."""

    request_id: str
    task_id: str
    session: AgentSession
    queue: asyncio.Queue[pb.LogChunk] = field(default_factory=asyncio.Queue)
    ended: bool = False

    async def chunks(self, answer_within: float = ANSWER_WITHIN) -> AsyncIterator[pb.LogChunk]:
        """The chunks until the last; a lone end with NO_ANSWER when the agent stays silent."""
        try:
            chunk = await asyncio.wait_for(self.queue.get(), answer_within)
        except TimeoutError:
            yield pb.LogChunk(task_id=self.task_id, end=True, error=NO_ANSWER)
            return
        while True:
            yield chunk
            if chunk.end:
                return
            chunk = await self.queue.get()


class LogRouter:
    def __init__(self, agents: AgentRegistry) -> None:
        self._agents = agents
        self._readers: dict[str, LogReader] = {}

    def open(self, node_id: str, request: agent_pb.LogRequest) -> LogReader:
        """Ask the node's agent for output; FailedPrecondition when this replica does not hold its stream."""
        session = self._agents.session(node_id)
        if session is None:
            raise FailedPrecondition(
                f"node {node_id} holds no stream to this control-plane replica (its agent is "
                "disconnected, or connected to another replica, which alone can read its output)"
            )
        sent = agent_pb.LogRequest()
        sent.CopyFrom(request)
        sent.request_id = uuid.uuid4().hex
        reader = LogReader(sent.request_id, sent.task_id, session)
        self._readers[sent.request_id] = reader
        session.send(agent_pb.ControlMessage(log_request=sent))
        log.info("event=log_request node=%s task=%s request=%s", node_id, sent.task_id, sent.request_id)
        return reader

    def deliver(self, session: AgentSession, chunk: pb.LogChunk) -> None:
        """A chunk from an agent (already checked); dropped unless it answers this session's request."""
        reader = self._readers.get(chunk.request_id)
        if reader is None or reader.session is not session or reader.ended:
            return
        if chunk.end:
            self._end(reader, chunk)
        elif reader.queue.qsize() >= READER_CHUNKS:
            self._cancel(reader)
            self._end(reader, pb.LogChunk(error=TOO_SLOW))
        else:
            reader.queue.put_nowait(chunk)

    def close(self, reader: LogReader) -> None:
        """The reader is done (or gone): forget it, and stop the agent's side if still running."""
        if not reader.ended:
            self._cancel(reader)
            reader.ended = True
        self._readers.pop(reader.request_id, None)

    def disconnected(self, session: AgentSession) -> None:
        """The agent's stream ended: every reader waiting on it ends with a message."""
        for reader in [r for r in self._readers.values() if r.session is session]:
            self._end(reader, pb.LogChunk(error=AGENT_GONE))

    def open_requests(self) -> int:
        return len(self._readers)

    def _end(self, reader: LogReader, last: pb.LogChunk) -> None:
        final = pb.LogChunk()
        final.CopyFrom(last)
        final.request_id, final.task_id, final.end = reader.request_id, reader.task_id, True
        reader.ended = True
        reader.queue.put_nowait(final)
        self._readers.pop(reader.request_id, None)

    def _cancel(self, reader: LogReader) -> None:
        reader.session.send(
            agent_pb.ControlMessage(log_cancel=agent_pb.LogCancel(request_id=reader.request_id))
        )
