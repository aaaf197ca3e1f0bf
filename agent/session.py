"""The agent's side of the control-plane stream: register, connect, reconnect, renew.

Every connection is mutual TLS with the node's certificate, whose name is the
node's id. Two thirds into the certificate's life the session renews it over
its channel and reconnects with the new one (one reconnect, a fresh
snapshot, no task restarted). A certificate the control plane refuses
(revoked by `berth node remove`) is logged and retried slowly, never fatal.

While the control plane is unreachable the agent keeps running what it has
(static stability) and retries with capped backoff. Desired state comes as a
snapshot, then deltas (`DesiredReceiver` applies them with `berth.deltas`);
the supervisor and the service network always get the complete state. A
stopping agent says goodbye (`goodbye`) as the stream's last message, so
that its restart does not cost the host its tasks (`controlplane.liveness`).

Up the stream go, in this order of priority: a heartbeat when due (liveness
never waits behind other traffic), status reports, then log chunks
(`agent.logs`) and `berth exec` output (`agent.execs`), which wait for room
in a small queue so a busy container's output slows down rather than piling
up in memory, and last custom metrics from the tasks' containers
(`agent.metric_endpoint`), refused when their small queue is full.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc

from agent.credentials import RENEW_TIMEOUT, CredentialStore, NodeCredentials, renew
from agent.execs import ExecSessions
from agent.logs import LogStreams
from agent.supervisor import TaskSupervisor
from berth import pki
from berth.deltas import apply_delta
from berth.errors import BerthError
from berth.grpc_options import CLIENT_OPTIONS
from berth.servers import next_server, parse_servers
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import agent_pb2_grpc
from berth.v1 import resources_pb2 as pb

log = logging.getLogger(__name__)

AGENT_VERSION = "0.1.0"

# Log chunks and exec output waiting to go up the stream.
LOG_OUTBOX = 16
# Custom metrics waiting to go up the stream; beyond, a push is refused (its sender retries).
METRIC_OUTBOX = 256


class Outbox:
    """Messages waiting to go up one stream: status reports (unbounded, few) and log chunks (bounded)."""

    def __init__(self) -> None:
        # The last message of the stream, once the agent is stopping (see `goodbye`).
        self._goodbye: agent_pb.Goodbye | None = None
        self._reports: asyncio.Queue[agent_pb.AgentMessage] = asyncio.Queue()
        self._chunks: asyncio.Queue[agent_pb.AgentMessage] = asyncio.Queue(LOG_OUTBOX)
        self._metrics: asyncio.Queue[agent_pb.AgentMessage] = asyncio.Queue(METRIC_OUTBOX)
        # Only the latest usage report waits: an older one is worth nothing once replaced.
        self._usage: agent_pb.UsageReport | None = None
        self._ready = asyncio.Event()

    def report(self, report: agent_pb.TaskStatusReport) -> None:
        self._reports.put_nowait(agent_pb.AgentMessage(status=report))
        self._ready.set()

    def resync(self, have_revision: int) -> None:
        """Ask for a full snapshot (a delta did not fit): ahead of logs, like a status report."""
        self._reports.put_nowait(agent_pb.AgentMessage(resync=agent_pb.Resync(have_revision=have_revision)))
        self._ready.set()

    def usage(self, report: agent_pb.UsageReport) -> None:
        self._usage = report
        self._ready.set()

    async def chunk(self, chunk: pb.LogChunk) -> None:
        await self._chunks.put(agent_pb.AgentMessage(log_chunk=chunk))
        self._ready.set()

    async def exec_output(self, output: pb.ExecOutput) -> None:
        await self._chunks.put(agent_pb.AgentMessage(exec_output=output))
        self._ready.set()

    def goodbye(self, goodbye: agent_pb.Goodbye) -> None:
        """End the stream: the status reports queued go first, then this, then nothing more."""
        self._goodbye = goodbye
        self._ready.set()

    def metric(self, put: agent_pb.MetricPut) -> bool:
        """Queue a custom metric; False when the queue is full (nothing queued)."""
        try:
            self._metrics.put_nowait(agent_pb.AgentMessage(metric_put=put))
        except asyncio.QueueFull:
            return False
        self._ready.set()
        return True

    async def next(self, timeout: float) -> agent_pb.AgentMessage | None:
        """The next message by priority, or None when `timeout` passes with none."""
        if (
            self._reports.empty()
            and self._chunks.empty()
            and self._metrics.empty()
            and self._usage is None
            and self._goodbye is None
        ):
            self._ready.clear()
            try:
                await asyncio.wait_for(self._ready.wait(), timeout)
            except TimeoutError:
                return None
        if not self._reports.empty():
            return self._reports.get_nowait()
        if self._goodbye is not None:
            return agent_pb.AgentMessage(goodbye=self._goodbye)
        if self._usage is not None:
            usage, self._usage = self._usage, None
            return agent_pb.AgentMessage(usage=usage)
        if not self._chunks.empty():
            return self._chunks.get_nowait()
        if not self._metrics.empty():
            return self._metrics.get_nowait()
        return None


class DesiredReceiver:
    """One stream's desired state: the last snapshot, brought up to date by each delta.

    A delta built against another revision than the one held (a gap) is not
    applied: the agent asks for a full snapshot, once per gap, and keeps
    running what it has meanwhile (static stability).
    """

    def __init__(self, outbox: Outbox, lose_delta: Callable[[], bool] | None = None) -> None:
        self._outbox = outbox
        self.state: agent_pb.DesiredState | None = None
        self._resync_asked = False
        self.resyncs = 0
        # Fault injection (hollow agents' SIGUSR1): a delta it says True for is dropped as if
        # lost in transit, so the next one meets a gap.
        self._lose = lose_delta

    def receive(self, message: agent_pb.ControlMessage) -> agent_pb.DesiredState | None:
        """The complete desired state after `message`; None when it could not be applied."""
        if message.HasField("desired_state"):
            self.state = message.desired_state
            self._resync_asked = False
            return self.state
        delta = message.desired_delta
        if self._lose is not None and self._lose():
            log.warning("event=desired_delta_lost revision=%d reason=fault_injection", delta.revision)
            return None
        updated = apply_delta(self.state, delta) if self.state is not None else None
        if updated is None:
            have = self.state.revision if self.state is not None else 0
            if not self._resync_asked:
                log.warning(
                    "event=desired_gap have_revision=%d base_revision=%d action=resync",
                    have,
                    delta.base_revision,
                )
                self._outbox.resync(have)
                self._resync_asked = True
                self.resyncs += 1
            return None
        self.state = updated
        return updated


class StreamClosed(Exception):
    """The control plane ended the stream (it is shutting down); reconnect."""


class CertificateRenewed(Exception):
    """The node has a new certificate: reconnect with it."""


# Reconnect backoff: unreachable control planes are retried fast (capped well
# under the node grace period, so a restarted control plane sees its agents
# back before judging them); a refused certificate (revoked, or from another
# cluster) will not be accepted a second later, so it is retried slowly.
BACKOFF_FIRST = 0.2
BACKOFF_UNREACHABLE_CAP = 1.0
BACKOFF_REFUSED_FIRST = 5.0
BACKOFF_REFUSED_CAP = 60.0
# Between failed renewals (the certificate still has a third of its life).
RENEW_RETRY_FIRST = 1.0
RENEW_RETRY_CAP = 60.0

REFUSALS = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
# A registration the control plane turned down (its cluster does not exist, the node
# cannot move clusters yet): retried every few seconds, so it joins soon after the
# operator fixes the cause, without a log line per second meanwhile.
REJECTIONS = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
)
BACKOFF_REJECTED = 5.0
# A replica that cannot serve the stream now: the next address is tried.
FAIL_OVER_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)


def next_backoff(current: float, refused: bool) -> float:
    """The wait before the next connection attempt after one that waited `current` failed."""
    if refused:
        return min(max(current * 2, BACKOFF_REFUSED_FIRST), BACKOFF_REFUSED_CAP)
    return min(current * 2, BACKOFF_UNREACHABLE_CAP)


def renewal_delay(credentials: NodeCredentials, now: datetime.datetime) -> float:
    """Seconds until the certificate is due for renewal (two thirds into its life); 0 when past."""
    return max(0.0, (credentials.renew_at - now).total_seconds())


def next_renew_retry(current: float, credentials: NodeCredentials, now: datetime.datetime) -> float:
    """The wait after a failed renewal: doubling, capped, and never past a short while before expiry."""
    remaining = (credentials.not_after - now).total_seconds()
    return max(0.5, min(current * 2, RENEW_RETRY_CAP, remaining / 4))


def channel_options(keepalive_ms: int) -> list[tuple[str, object]]:
    """mTLS to the control plane under its fixed name; a private subchannel pool so a channel
    with new credentials opens its own connection instead of reusing one made with the old."""
    return [
        ("grpc.ssl_target_name_override", pki.SERVER_NAME),
        ("grpc.use_local_subchannel_pool", 1),
        ("grpc.keepalive_time_ms", keepalive_ms),
        *CLIENT_OPTIONS,
    ]


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class ControlPlaneSession:
    """One node's connection to the control plane, with its certificate kept fresh.

    Connect with the node's certificate, register, hold the stream; renew the
    certificate when due (over the same channel), store it, and reconnect
    with it: the stream drops once, a fresh snapshot comes down, and the
    supervisor keeps every task it runs.
    """

    def __init__(
        self,
        server: str,
        registration: agent_pb.RegisterRequest,
        supervisor: TaskSupervisor,
        credentials: NodeCredentials,
        store: CredentialStore,
        on_registered: Callable[[agent_pb.RegisterResponse], None],
        sample_metrics: Callable[[], Awaitable[pb.NodeMetrics | None]],
        on_desired: Callable[[agent_pb.DesiredState], None] | None = None,
        keepalive_ms: int = 10_000,
        now: Callable[[], datetime.datetime] = _utcnow,
        lose_delta: Callable[[], bool] | None = None,
    ) -> None:
        # Every replica serves agent streams: one that cannot be reached is
        # left for the next (round robin); containers keep running meanwhile.
        self._servers = parse_servers(server)
        self._current = 0
        self._registration = registration
        self._supervisor = supervisor
        self.credentials = credentials
        self._store = store
        self._on_registered = on_registered
        self._sample_metrics = sample_metrics
        self._on_desired = on_desired
        self._keepalive_ms = keepalive_ms
        self._lose_delta = lose_delta  # fault injection for tests (see DesiredReceiver)
        self._now = now
        self.connected = asyncio.Event()
        # True while a renewal is in flight or being stored: it must not be cut short.
        self._renewing = False
        # The connected stream's outbox (None between connections).
        self._outbox: Outbox | None = None
        # Set by `goodbye`: the stream that ends next is the last one.
        self._leaving = False
        self._stream_ended = asyncio.Event()

    @property
    def _server(self) -> str:
        return self._servers[self._current]

    def _move_on(self) -> None:
        """Try the next control-plane address at the next attempt (when there are several)."""
        if len(self._servers) > 1:
            self._current = next_server(self._servers, self._current)
            log.info("event=control_plane_next server=%s", self._server)

    def send_usage(self, report: agent_pb.UsageReport) -> None:
        """Queue a usage report (agent.usage) on the current stream; dropped while disconnected."""
        if self._outbox is not None:
            self._outbox.usage(report)

    async def goodbye(self, restarting: bool = True, expected_seconds: int = 0, timeout: float = 3.0) -> bool:
        """Tell the control plane this agent is stopping, and end the stream (no reconnect).

        With `restarting`, the control plane tolerates the node's silence for its restart
        window instead of replacing its tasks after the grace. True once the control plane
        ended the stream after reading the goodbye; False when not connected, or no answer
        came within `timeout` (then the node is judged as if the agent had died).
        """
        outbox = self._outbox
        if outbox is None or not self.connected.is_set():
            return False
        self._leaving = True
        self._stream_ended.clear()
        outbox.goodbye(agent_pb.Goodbye(restarting=restarting, expected_seconds=expected_seconds))
        try:
            await asyncio.wait_for(self._stream_ended.wait(), timeout)
        except TimeoutError:
            log.warning("event=goodbye_unanswered server=%s timeout=%.0fs", self._server, timeout)
            return False
        log.info("event=goodbye_sent server=%s restarting=%s", self._server, str(restarting).lower())
        return True

    async def run(self) -> None:
        backoff = BACKOFF_FIRST
        while True:
            refused = False
            credentials = self.credentials
            try:
                async with grpc.aio.secure_channel(
                    self._server,
                    credentials.channel_credentials(),
                    options=channel_options(self._keepalive_ms),
                ) as channel:
                    await self._session(channel, credentials)
                backoff = BACKOFF_FIRST
            except CertificateRenewed:
                log.info("event=reconnecting reason=certificate_renewed node=%s", self.credentials.node_id)
                backoff = BACKOFF_FIRST
                continue
            except StreamClosed:
                log.info("event=stream_closed server=%s retry_in=%.1fs", self._server, backoff)
                self._move_on()
            except grpc.aio.AioRpcError as error:
                refused = error.code() in REFUSALS
                if error.code() in FAIL_OVER_CODES:
                    self._move_on()
                if refused:
                    backoff = max(backoff, BACKOFF_REFUSED_FIRST)
                elif error.code() in REJECTIONS:
                    backoff = max(backoff, BACKOFF_REJECTED)
                self._log_failure(error, credentials, backoff)
            finally:
                self.connected.clear()
                self._supervisor.detach()
                self._stream_ended.set()
            if self._leaving:
                return  # said goodbye: the agent is stopping
            await asyncio.sleep(backoff)
            backoff = next_backoff(backoff, refused)

    def _log_failure(self, error: grpc.aio.AioRpcError, credentials: NodeCredentials, backoff: float) -> None:
        code = error.code()
        node = credentials.node_id
        if code in REFUSALS:
            log.error(
                "event=certificate_refused server=%s node=%s code=%s error=%r retry_in=%.1fs hint=%r",
                self._server,
                node,
                code.name,
                error.details(),
                backoff,
                "the control plane does not accept this node's certificate (removed with `berth node "
                "remove`?); to join again, delete node.key, node.crt and ca.crt from the data directory "
                "and start the agent with a new --join-token",
            )
        elif code in REJECTIONS:
            log.error(
                "event=session_rejected node=%s code=%s error=%r retry_in=%.1fs",
                node,
                code.name,
                error.details(),
                backoff,
            )
        elif credentials.not_after <= self._now():
            log.error(
                "event=certificate_expired server=%s node=%s expired=%s retry_in=%.1fs hint=%r",
                self._server,
                node,
                credentials.not_after.isoformat(),
                backoff,
                "the node's certificate expired before it could be renewed; delete node.key, node.crt "
                "and ca.crt from the data directory and start the agent with a new --join-token",
            )
        else:
            log.warning(
                "event=control_plane_unreachable server=%s node=%s code=%s retry_in=%.1fs",
                self._server,
                node,
                code.name,
                backoff,
            )

    async def _session(self, channel: grpc.aio.Channel, credentials: NodeCredentials) -> None:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        # The certificate names the node; the field must match it (or be empty).
        self._registration.node_id = credentials.node_id
        response = await stub.Register(self._registration, timeout=10)
        self._on_registered(response)
        self._supervisor.node_id = response.node_id
        outbox = self._outbox = Outbox()
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
        desired = DesiredReceiver(outbox, self._lose_delta)
        reader = asyncio.create_task(self._read(call, logs, execs, desired))
        renewal = asyncio.create_task(self._renew_when_due(channel, credentials))
        try:
            await asyncio.wait({reader, renewal}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._outbox = None
            call.cancel()
            reader.cancel()
            if self._renewing:
                # The control plane cuts the old certificate's stream as soon as it has issued
                # the new one: let the renewal finish rather than lose the new certificate.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(renewal), RENEW_TIMEOUT + 5)
            renewal.cancel()
            await asyncio.gather(reader, renewal, return_exceptions=True)
            await execs.close()
            await logs.close()
        if self.credentials is not credentials:
            raise CertificateRenewed()
        reader.result()  # the stream's error, if it ended with one
        raise StreamClosed("the control plane closed the stream")

    def push_metric(self, put: agent_pb.MetricPut) -> bool:
        """Send a task's custom metric up the stream; False when not connected or no room."""
        return self._outbox is not None and self._outbox.metric(put)

    async def _read(
        self,
        call: grpc.aio.StreamStreamCall[agent_pb.AgentMessage, agent_pb.ControlMessage],
        logs: LogStreams,
        execs: ExecSessions,
        desired: DesiredReceiver,
    ) -> None:
        async for message in call:
            body = message.WhichOneof("body")
            if body in ("desired_state", "desired_delta"):
                state = desired.receive(message)
                if state is None:
                    continue  # a gap: keep running what we have until the snapshot comes
                self.connected.set()
                self._supervisor.set_desired(state)
                if self._on_desired is not None:
                    self._on_desired(state)
            elif message.HasField("exec_input"):
                execs.handle(message)
            else:
                logs.handle(message)

    async def _renew_when_due(
        self, channel: grpc.aio.Channel, credentials: NodeCredentials
    ) -> NodeCredentials:
        """Sleep until the certificate is due, then renew it (retrying) and store the new one."""
        await asyncio.sleep(renewal_delay(credentials, self._now()))
        retry = RENEW_RETRY_FIRST
        while True:
            self._renewing = True
            try:
                renewed = await renew(channel, credentials)
            except BerthError as error:
                self._renewing = False
                retry = next_renew_retry(retry, credentials, self._now())
                log.warning(
                    "event=certificate_renewal_failed node=%s error=%r retry_in=%.1fs expires=%s",
                    credentials.node_id,
                    str(error),
                    retry,
                    credentials.not_after.isoformat(),
                )
                await asyncio.sleep(retry)
                continue
            # Adopted at once: the old certificate is no longer accepted once this one is issued.
            self.credentials = renewed
            try:
                await asyncio.to_thread(self._store.save, renewed)
            except OSError as error:
                log.error(
                    "event=certificate_save_failed node=%s error=%r effect=%r",
                    renewed.node_id,
                    str(error),
                    "the renewed certificate is kept in memory only; "
                    "after a restart the node must join again",
                )
            finally:
                self._renewing = False
            log.info(
                "event=certificate_renewed node=%s expires=%s renew_at=%s",
                renewed.node_id,
                renewed.not_after.isoformat(),
                renewed.renew_at.isoformat(),
            )
            return renewed

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
                    if message.HasField("goodbye"):
                        return  # half-closes the stream: the control plane ends it in turn
                    continue
            next_heartbeat = loop.time() + interval
            heartbeat = agent_pb.Heartbeat()
            metrics = await self._sample_metrics()
            if metrics is not None:
                heartbeat.metrics.CopyFrom(metrics)
            yield agent_pb.AgentMessage(heartbeat=heartbeat)
