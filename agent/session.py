"""The agent's side of the control-plane stream: register, connect, reconnect.

While the control plane is unreachable the agent keeps running what it has
(static stability) and retries with capped backoff.

Up the stream go, in this order of priority: a heartbeat when due (liveness
never waits behind other traffic), status reports, then log chunks
(`agent.logs`) and `berth exec` output (`agent.execs`), which wait for room
in a small queue so a busy container's output slows down rather than piling
up in memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc

from agent.execs import ExecSessions
from agent.logs import LogStreams
from agent.supervisor import TaskSupervisor
from berth.grpc_options import CLIENT_OPTIONS
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import agent_pb2_grpc
from berth.v1 import resources_pb2 as pb

log = logging.getLogger(__name__)

AGENT_VERSION = "0.1.0"

# Log chunks and exec output waiting to go up the stream.
LOG_OUTBOX = 16


class Outbox:
    """Messages waiting to go up one stream: status reports (unbounded, few) and log chunks (bounded)."""

    def __init__(self) -> None:
        self._reports: asyncio.Queue[agent_pb.AgentMessage] = asyncio.Queue()
        self._chunks: asyncio.Queue[agent_pb.AgentMessage] = asyncio.Queue(LOG_OUTBOX)
        self._ready = asyncio.Event()

    def report(self, report: agent_pb.TaskStatusReport) -> None:
        self._reports.put_nowait(agent_pb.AgentMessage(status=report))
        self._ready.set()

    async def chunk(self, chunk: pb.LogChunk) -> None:
        await self._chunks.put(agent_pb.AgentMessage(log_chunk=chunk))
        self._ready.set()

    async def exec_output(self, output: pb.ExecOutput) -> None:
        await self._chunks.put(agent_pb.AgentMessage(exec_output=output))
        self._ready.set()

    async def next(self, timeout: float) -> agent_pb.AgentMessage | None:
        """The next message by priority, or None when `timeout` passes with none."""
        if self._reports.empty() and self._chunks.empty():
            self._ready.clear()
            try:
                await asyncio.wait_for(self._ready.wait(), timeout)
            except TimeoutError:
                return None
        if not self._reports.empty():
            return self._reports.get_nowait()
        if not self._chunks.empty():
            return self._chunks.get_nowait()
        return None


class StreamClosed(Exception):
    """The control plane ended the stream (it is shutting down); reconnect."""


class ControlPlaneSession:
    def __init__(
        self,
        server: str,
        registration: agent_pb.RegisterRequest,
        supervisor: TaskSupervisor,
        on_registered: Callable[[agent_pb.RegisterResponse], None],
        sample_metrics: Callable[[], Awaitable[pb.NodeMetrics | None]],
        channel: grpc.aio.Channel | None = None,
        on_desired: Callable[[agent_pb.DesiredState], None] | None = None,
    ) -> None:
        self._server = server
        self._registration = registration
        self._supervisor = supervisor
        self._on_registered = on_registered
        self._sample_metrics = sample_metrics
        self._shared_channel = channel
        self._on_desired = on_desired
        self.connected = asyncio.Event()

    async def run(self) -> None:
        backoff = 0.2
        while True:
            try:
                if self._shared_channel is not None:
                    await self._session(self._shared_channel)
                else:
                    async with grpc.aio.insecure_channel(
                        self._server, options=[("grpc.keepalive_time_ms", 10_000), *CLIENT_OPTIONS]
                    ) as channel:
                        await self._session(channel)
                backoff = 0.2
            except StreamClosed:
                log.info("event=stream_closed server=%s retry_in=%.1fs", self._server, backoff)
            except grpc.aio.AioRpcError as error:
                if error.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND):
                    log.error("event=session_rejected code=%s error=%r", error.code().name, error.details())
                    if error.code() == grpc.StatusCode.NOT_FOUND:
                        # Our node record is gone (e.g. a wiped cluster): register anew.
                        self._registration.node_id = ""
                else:
                    log.warning(
                        "event=control_plane_unreachable server=%s code=%s retry_in=%.1fs",
                        self._server,
                        error.code().name,
                        backoff,
                    )
            finally:
                self.connected.clear()
                self._supervisor.detach()
            await asyncio.sleep(backoff)
            # Capped well under the control plane's node grace period, so a
            # restarted control plane sees its agents back before judging them.
            backoff = min(backoff * 2, 1.0)

    async def _session(self, channel: grpc.aio.Channel) -> None:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        response = await stub.Register(self._registration, timeout=10)
        self._registration.node_id = response.node_id
        self._on_registered(response)
        self._supervisor.node_id = response.node_id
        outbox = Outbox()
        self._supervisor.attach(outbox.report)
        logs = LogStreams(
            self._supervisor.driver,
            lambda: self._supervisor.observed,
            self._supervisor.assignment,
            outbox.chunk,
        )
        execs = ExecSessions(
            self._supervisor.driver,
            lambda: self._supervisor.observed,
            self._supervisor.assignment,
            outbox.exec_output,
        )
        call = stub.Connect(self._outgoing(response.node_id, response.heartbeat_interval or 2.0, outbox))
        log.info("event=connected server=%s node=%s", self._server, response.node_id)
        try:
            async for message in call:
                if message.HasField("desired_state"):
                    self.connected.set()
                    self._supervisor.set_desired(message.desired_state)
                    if self._on_desired is not None:
                        self._on_desired(message.desired_state)
                elif message.HasField("exec_input"):
                    execs.handle(message)
                else:
                    logs.handle(message)
        finally:
            await execs.close()
            await logs.close()
        raise StreamClosed("the control plane closed the stream")

    async def _outgoing(
        self, node_id: str, interval: float, outbox: Outbox
    ) -> AsyncIterator[agent_pb.AgentMessage]:
        yield agent_pb.AgentMessage(hello=agent_pb.Hello(node_id=node_id))
        loop = asyncio.get_running_loop()
        next_heartbeat = loop.time()
        while True:
            timeout = max(0.0, next_heartbeat - loop.time())
            if timeout > 0:
                message = await outbox.next(timeout)
                if message is not None:
                    yield message
                    continue
            next_heartbeat = loop.time() + interval
            heartbeat = agent_pb.Heartbeat()
            metrics = await self._sample_metrics()
            if metrics is not None:
                heartbeat.metrics.CopyFrom(metrics)
            yield agent_pb.AgentMessage(heartbeat=heartbeat)
