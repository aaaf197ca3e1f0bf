"""The agent's side of the control-plane stream: register, connect, reconnect.

While the control plane is unreachable the agent keeps running what it has
(static stability) and retries with capped backoff.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc

from agent.supervisor import TaskSupervisor
from berth.grpc_options import CLIENT_OPTIONS
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import agent_pb2_grpc
from berth.v1 import resources_pb2 as pb

log = logging.getLogger(__name__)

AGENT_VERSION = "0.1.0"


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
        outbox: asyncio.Queue[agent_pb.AgentMessage] = asyncio.Queue()
        self._supervisor.attach(lambda report: outbox.put_nowait(agent_pb.AgentMessage(status=report)))
        call = stub.Connect(self._outgoing(response.node_id, response.heartbeat_interval or 2.0, outbox))
        log.info("event=connected server=%s node=%s", self._server, response.node_id)
        async for message in call:
            if message.HasField("desired_state"):
                self.connected.set()
                self._supervisor.set_desired(message.desired_state)
                if self._on_desired is not None:
                    self._on_desired(message.desired_state)
        raise StreamClosed("the control plane closed the stream")

    async def _outgoing(
        self, node_id: str, interval: float, outbox: asyncio.Queue[agent_pb.AgentMessage]
    ) -> AsyncIterator[agent_pb.AgentMessage]:
        yield agent_pb.AgentMessage(hello=agent_pb.Hello(node_id=node_id))
        loop = asyncio.get_running_loop()
        next_heartbeat = loop.time()
        while True:
            timeout = max(0.0, next_heartbeat - loop.time())
            try:
                yield await asyncio.wait_for(outbox.get(), timeout)
                continue
            except TimeoutError:
                pass
            next_heartbeat = loop.time() + interval
            heartbeat = agent_pb.Heartbeat()
            metrics = await self._sample_metrics()
            if metrics is not None:
                heartbeat.metrics.CopyFrom(metrics)
            yield agent_pb.AgentMessage(heartbeat=heartbeat)
