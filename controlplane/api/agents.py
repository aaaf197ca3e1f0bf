"""The agent API (`berth.v1.AgentService`): registration and the per-host stream.

Down the stream goes the node's desired state (`controlplane.desired`)
whenever it changes: a full snapshot first, then deltas against the previous
message (`controlplane.desired_stream`); an agent that cannot apply one asks
for a resync and gets a full snapshot, and a reconnect starts over with one.
Up come status reports, handed to `controlplane.status`, and heartbeats,
which refresh the node's lease (`controlplane.liveness`); a stopping agent's
goodbye opens its restart window there too.
Custom metrics its tasks pushed go to `controlplane.operations.metrics`.
Log requests go down the same stream ahead of the next snapshot, and the
agent's log chunks come up it, routed to their readers (`controlplane.logs`);
so do `berth exec`'s commands, their input and output (`controlplane.execs`).
Everything an agent sends is checked first (`controlplane.validation.
agent_reports`): an invalid report is dropped, counted and logged, and the
stream goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

import grpc

from berth.errors import BerthError, InvalidArgument, NotFound, PermissionDenied, Unavailable
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import agent_pb2_grpc
from berth.v1 import resources_pb2 as pb
from controlplane.api import peers
from controlplane.api.errors import Context, grpc_errors
from controlplane.cache import ClusterCache
from controlplane.desired import DesiredStates
from controlplane.desired_stream import DesiredStream
from controlplane.execs import ExecRouter
from controlplane.liveness import NodeLeases
from controlplane.logs import LogRouter
from controlplane.metrics import AGENT_MESSAGES_REJECTED, AGENT_STREAMS, AGENTS_CONNECTED
from controlplane.operations.membership import Membership
from controlplane.operations.metrics import Metrics
from controlplane.operations.nodes import NodeFacts, Nodes
from controlplane.operations.secrets import SecretValues
from controlplane.registry import AgentRegistry, AgentSession
from controlplane.status import StatusWriter
from controlplane.usage import UsageWindow
from controlplane.validation import agent_reports

log = logging.getLogger(__name__)

# Seconds to let changes to one node accumulate before sending its snapshot.
COALESCE = 0.03


class AgentService(agent_pb2_grpc.AgentServiceServicer):
    def __init__(
        self,
        cache: ClusterCache,
        nodes: Nodes,
        agents: AgentRegistry,
        writer: StatusWriter,
        leases: NodeLeases,
        heartbeat_interval: float,
        service_cidr: str,
        membership: Membership,
        logs: LogRouter | None = None,
        secret_values: SecretValues | None = None,
        execs: ExecRouter | None = None,
        metrics: Metrics | None = None,
        usage: UsageWindow | None = None,
    ) -> None:
        self._metrics = metrics
        self._membership = membership
        self._usage = usage
        self._cache = cache
        self._nodes = nodes
        self._agents = agents
        self._writer = writer
        self._leases = leases
        self._heartbeat_interval = heartbeat_interval
        self._service_cidr = service_cidr
        self._desired = DesiredStates(cache, secret_values)
        self._logs = logs if logs is not None else LogRouter(agents)
        self._execs = execs if execs is not None else ExecRouter(agents)

    @grpc_errors
    async def Register(
        self, request: agent_pb.RegisterRequest, context: Context
    ) -> agent_pb.RegisterResponse:
        node_id = self._membership.check_node(peers.identity(context))
        if request.node_id and request.node_id != node_id:
            raise PermissionDenied(
                f"this certificate is node {node_id}'s; it cannot register {request.node_id}"
            )
        node = await self._nodes.register(
            NodeFacts(
                node_id=node_id,
                name=request.name,
                address=request.address,
                cpu_units=request.cpu_units,
                memory_mib=request.memory_mib,
                agent_version=request.agent_version,
                attributes=dict(request.attributes),
                cluster=request.cluster,
            )
        )
        # Registering counts as a heartbeat: the node is alive from now on.
        await self._leases.beat(node.id)
        return agent_pb.RegisterResponse(
            node_id=node.id,
            heartbeat_interval=self._heartbeat_interval,
            service_cidr=self._service_cidr,
        )

    async def Connect(
        self, request_iterator: AsyncIterator[agent_pb.AgentMessage], context: Context
    ) -> AsyncIterator[agent_pb.ControlMessage]:
        first = await anext(aiter(request_iterator), None)
        if first is None or not first.HasField("hello"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be hello")
            return
        try:
            peer = peers.identity(context)
            node_id = self._membership.check_node(peer)
        except BerthError as error:
            await context.abort(error.grpc_code, str(error))
        if first.hello.node_id and first.hello.node_id != node_id:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"this certificate is node {node_id}'s; it cannot connect as {first.hello.node_id}",
            )
        try:
            agent_reports.check_node_id(node_id)
        except InvalidArgument as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
            return
        if not await self._nodes.is_registered(node_id):
            await context.abort(grpc.StatusCode.NOT_FOUND, str(NotFound(f"node {node_id} is not registered")))
            return
        await self._leases.beat(node_id)
        session = self._agents.connected(node_id)
        AGENTS_CONNECTED.set(len(self._agents.connected_ids()))
        log.info("event=agent_connected node=%s peer=%s", node_id, context.peer())
        # One event per stream, set by the cache when the node's tasks change
        # and when the agent goes away: no task per wake-up (a thousand
        # streams wake often).
        wake = asyncio.Event()
        desired = DesiredStream(self._desired, node_id)

        def resync(have_revision: int) -> None:
            log.info("event=agent_resync node=%s have_revision=%d", node_id, have_revision)
            desired.resync()
            wake.set()

        receiver = asyncio.create_task(
            self._receive(session, request_iterator, resync), name=f"agent-recv-{node_id}"
        )
        unsubscribe = self._cache.subscribe_node(node_id, wake.set)
        receiver.add_done_callback(lambda _: wake.set())
        session.wake = wake.set
        AGENT_STREAMS.inc()
        try:
            while not receiver.done():
                wake.clear()
                # A node removed (its certificate revoked) or renewed since is cut off
                # here, not at its next reconnect.
                try:
                    self._membership.check_node(peer)
                except BerthError as error:
                    log.warning("event=agent_stream_closed node=%s reason=%r", node_id, str(error))
                    await context.abort(error.grpc_code, str(error))
                while session.requests:
                    yield session.requests.popleft()
                session.drained.set()
                message = desired.next_message()
                if message is not None:
                    yield message
                due = desired.resync_due_in()
                if due is not None:  # asked for again too soon: answered when the interval ends
                    asyncio.get_running_loop().call_later(due, wake.set)
                await wake.wait()
                # Coalesce a burst of changes into one snapshot.
                await asyncio.sleep(COALESCE)
        finally:
            AGENT_STREAMS.dec()
            unsubscribe()
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await receiver
            self._agents.disconnected(session)
            self._logs.disconnected(session)
            self._execs.disconnected(session)
            AGENTS_CONNECTED.set(len(self._agents.connected_ids()))
            if not self._agents.is_connected(node_id):
                self._leases.forget(node_id)
            log.info("event=agent_disconnected node=%s", node_id)

    async def _receive(
        self,
        session: AgentSession,
        messages: AsyncIterator[agent_pb.AgentMessage],
        resync: Callable[[int], None],
    ) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            async for message in messages:
                body = message.WhichOneof("body")
                if body == "status":
                    if self._valid(session.node_id, "status", message.status):
                        self._writer.submit(session.node_id, message.status)
                elif body == "log_chunk":
                    if self._valid(session.node_id, "log_chunk", message.log_chunk):
                        self._logs.deliver(session, message.log_chunk)
                elif body == "exec_output":
                    if self._valid(session.node_id, "exec_output", message.exec_output):
                        self._execs.deliver(session, message.exec_output)
                elif body == "metric_put":
                    self._metric_put(session.node_id, message.metric_put)
                elif body == "usage":
                    self._record_usage(session.node_id, message.usage)
                elif body == "resync":
                    # Any revision asks for the same thing (a full snapshot): nothing to check.
                    resync(message.resync.have_revision)
                elif body == "goodbye":
                    goodbye = message.goodbye
                    try:
                        await self._leases.goodbye(
                            session.node_id, goodbye.restarting, goodbye.expected_seconds
                        )
                    except Unavailable as error:
                        log.warning(
                            "event=goodbye_not_recorded node=%s error=%r", session.node_id, str(error)
                        )
                elif body == "heartbeat":
                    metrics = message.heartbeat.metrics if message.heartbeat.HasField("metrics") else None
                    if metrics is not None and not self._valid(session.node_id, "heartbeat", metrics):
                        metrics = None  # still a sign of life: only the numbers are dropped
                    self._agents.record_heartbeat(session, metrics)
                    try:
                        await self._leases.beat(session.node_id)
                    except Unavailable as error:
                        log.warning(
                            "event=heartbeat_not_recorded node=%s error=%r", session.node_id, str(error)
                        )

    def _metric_put(self, node_id: str, put: agent_pb.MetricPut) -> None:
        """A task's custom metric: recorded only for a task placed on this very node."""
        if self._metrics is None:
            return
        try:
            self._metrics.put_from_node(node_id, put, time.time())
        except BerthError as error:
            AGENT_MESSAGES_REJECTED.labels("metric_put").inc()
            log.warning("event=agent_message_rejected node=%s kind=metric_put error=%r", node_id, str(error))

    def _valid(
        self,
        node_id: str,
        kind: str,
        part: agent_pb.TaskStatusReport | pb.NodeMetrics | pb.LogChunk | pb.ExecOutput,
    ) -> bool:
        """Check one part of an agent's message; an invalid one is counted, logged once and dropped."""
        try:
            if isinstance(part, agent_pb.TaskStatusReport):
                agent_reports.check_status_report(part)
            elif isinstance(part, pb.LogChunk):
                agent_reports.check_log_chunk(part)
            elif isinstance(part, pb.ExecOutput):
                agent_reports.check_exec_output(part)
            else:
                node = self._cache.node(node_id)
                cpu_units = node.value.cpu_units if node is not None else agent_reports.MAX_CPU_UNITS
                agent_reports.check_metrics(part, cpu_units)
        except InvalidArgument as error:
            AGENT_MESSAGES_REJECTED.labels(kind).inc()
            log.warning("event=agent_message_rejected node=%s kind=%s error=%r", node_id, kind, str(error))
            return False
        return True

    def _record_usage(self, node_id: str, report: agent_pb.UsageReport) -> None:
        """Keep a usage report in the window (controlplane.usage); a malformed one is dropped whole."""
        if self._usage is None:
            return
        try:
            self._usage.record(node_id, report, time.time())
        except InvalidArgument as error:
            AGENT_MESSAGES_REJECTED.labels("usage").inc()
            log.warning("event=agent_message_rejected node=%s kind=usage error=%r", node_id, str(error))

    @grpc_errors
    async def RenewCertificate(
        self, request: agent_pb.RenewCertificateRequest, context: Context
    ) -> agent_pb.RenewCertificateResponse:
        node_id = self._membership.check_node(peers.identity(context))
        return agent_pb.RenewCertificateResponse(
            certificate=await self._membership.renew(node_id, request.csr)
        )
