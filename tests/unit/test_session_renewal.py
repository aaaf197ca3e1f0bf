"""The session's certificate life: when to renew, how to back off, and one renewal end to end.

The end-to-end cases run the real ControlPlaneSession against an in-process
grpc.aio server speaking mutual TLS with certificates from berth.pki (the
control plane's ServerCertificate), so the handshake, the renewal and the
reconnect with the new certificate are the real ones.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import pytest

from agent.credentials import MemoryStore, NodeCredentials
from agent.runtime.fake import FakeDriver
from agent.session import (
    BACKOFF_REFUSED_CAP,
    BACKOFF_REFUSED_FIRST,
    BACKOFF_UNREACHABLE_CAP,
    RENEW_RETRY_CAP,
    ControlPlaneSession,
    next_backoff,
    next_renew_retry,
    renewal_delay,
)
from agent.supervisor import TaskSupervisor
from berth import pki
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import agent_pb2_grpc
from berth.v1 import resources_pb2 as pb
from controlplane.api.errors import Context
from controlplane.tls import ServerCertificate

HOUR = datetime.timedelta(hours=1)


@pytest.fixture(scope="module")
def ca() -> pki.KeyPair:
    return pki.create_ca("session")


def node(ca: pki.KeyPair, lifetime: datetime.timedelta = HOUR) -> NodeCredentials:
    pair = pki.issue_with_key(ca, "node", "node-1", lifetime)
    return NodeCredentials(pair.key, pair.certificate, ca.certificate)


# Pure decisions -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "refused", "expected"),
    [
        (0.2, False, 0.4),
        (0.8, False, BACKOFF_UNREACHABLE_CAP),
        (BACKOFF_UNREACHABLE_CAP, False, BACKOFF_UNREACHABLE_CAP),
        (0.2, True, BACKOFF_REFUSED_FIRST),  # a refusal never retries at the fast pace
        (BACKOFF_REFUSED_FIRST, True, BACKOFF_REFUSED_FIRST * 2),
        (BACKOFF_REFUSED_CAP, True, BACKOFF_REFUSED_CAP),
        (BACKOFF_REFUSED_CAP, False, BACKOFF_UNREACHABLE_CAP),  # accepted again: back to fast
    ],
)
def test_backoff(current: float, refused: bool, expected: float) -> None:
    assert next_backoff(current, refused) == expected


def test_renewal_is_due_two_thirds_into_the_life_and_never_negative(ca: pki.KeyPair) -> None:
    credentials = node(ca)
    at = credentials.renew_at
    assert renewal_delay(credentials, at - datetime.timedelta(seconds=90)) == 90
    assert renewal_delay(credentials, at) == 0
    assert renewal_delay(credentials, at + HOUR) == 0


def test_a_failed_renewal_is_retried_sooner_as_expiry_nears(ca: pki.KeyPair) -> None:
    credentials = node(ca)
    expiry = credentials.not_after
    assert next_renew_retry(1.0, credentials, expiry - HOUR) == 2.0
    assert next_renew_retry(RENEW_RETRY_CAP, credentials, expiry - HOUR) == RENEW_RETRY_CAP
    assert next_renew_retry(RENEW_RETRY_CAP, credentials, expiry - datetime.timedelta(seconds=20)) == 5.0
    assert next_renew_retry(RENEW_RETRY_CAP, credentials, expiry + HOUR) == 0.5


# One session against a mutual-TLS server ----------------------------------------------------------


@dataclass
class FakeAgentService(agent_pb2_grpc.AgentServiceServicer):
    """Register, Connect and RenewCertificate, recording the certificate serial of each call."""

    ca: pki.KeyPair
    refuse: bool = False
    registered: list[int] = field(default_factory=list)
    connected: list[int] = field(default_factory=list)
    renewed: list[int] = field(default_factory=list)
    issued: list[int] = field(default_factory=list)
    # As the control plane does: a renewal retires the old certificate and cuts its stream at once.
    cut_on_renew: bool = False
    retired: set[int] = field(default_factory=set)
    replaced: asyncio.Event = field(default_factory=asyncio.Event)

    @staticmethod
    def _peer(context: Context) -> pki.Identity:
        return pki.identity(next(iter(context.auth_context()["x509_pem_cert"])))

    async def Register(
        self, request: agent_pb.RegisterRequest, context: Context
    ) -> agent_pb.RegisterResponse:  # type: ignore[override]
        peer = self._peer(context)
        if self.refuse or peer.serial in self.retired:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"node {peer.name} was removed")
        assert request.node_id == peer.name
        self.registered.append(peer.serial)
        return agent_pb.RegisterResponse(node_id=peer.name, heartbeat_interval=5)

    async def Connect(  # type: ignore[override]
        self, request_iterator: AsyncIterator[agent_pb.AgentMessage], context: Context
    ) -> AsyncIterator[agent_pb.ControlMessage]:
        self.connected.append(self._peer(context).serial)
        yield agent_pb.ControlMessage(desired_state=agent_pb.DesiredState(revision=len(self.connected)))
        if self.cut_on_renew and not self.replaced.is_set():
            await self.replaced.wait()
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "this certificate was replaced")
        async for _ in request_iterator:
            pass

    async def RenewCertificate(  # type: ignore[override]
        self, request: agent_pb.RenewCertificateRequest, context: Context
    ) -> agent_pb.RenewCertificateResponse:
        peer = self._peer(context)
        self.renewed.append(peer.serial)
        certificate, serial = pki.issue(self.ca, "node", peer.name, pki.public_key_of_csr(request.csr), HOUR)
        self.issued.append(serial)
        if self.cut_on_renew:
            self.retired.add(peer.serial)
            self.replaced.set()  # the stream may be cut before this answer arrives
            await asyncio.sleep(0.2)
        return agent_pb.RenewCertificateResponse(certificate=certificate)


@pytest.fixture()
async def service(ca: pki.KeyPair) -> AsyncIterator[tuple[FakeAgentService, str]]:
    fake = FakeAgentService(ca)
    server = grpc.aio.server()
    agent_pb2_grpc.add_AgentServiceServicer_to_server(fake, server)
    port = server.add_secure_port("127.0.0.1:0", ServerCertificate(ca, HOUR, ("localhost",)).credentials())
    await server.start()
    yield fake, f"127.0.0.1:{port}"
    await server.stop(None)


async def _no_metrics() -> pb.NodeMetrics | None:
    return None


def session(
    address: str, credentials: NodeCredentials, store: MemoryStore, now: datetime.datetime
) -> ControlPlaneSession:
    return ControlPlaneSession(
        address,
        agent_pb.RegisterRequest(name="host-a"),
        TaskSupervisor(FakeDriver(), credentials.node_id),
        credentials,
        store,
        on_registered=lambda _response: None,
        sample_metrics=_no_metrics,
        now=lambda: now,
    )


async def wait_for(condition: object, seconds: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not callable(condition) or not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_a_due_certificate_is_renewed_and_the_stream_reconnects_once_with_it(
    service: tuple[FakeAgentService, str], ca: pki.KeyPair
) -> None:
    fake, address = service
    first = node(ca)
    store = MemoryStore(first)
    # The clock says the certificate is due: renew right after connecting (and, as the clock
    # stands still, every new one too, which is fine here).
    running = session(address, first, store, first.renew_at)
    task = asyncio.create_task(running.run())
    try:
        await wait_for(lambda: len(fake.connected) >= 2)
        serial = pki.identity(first.certificate).serial
        assert fake.renewed[0] == serial  # asked over the old certificate's channel
        assert fake.connected[:2] == [serial, fake.issued[0]]  # then reconnected with the new one
        assert fake.registered[:2] == [serial, fake.issued[0]]
        renewed = store.load()
        assert renewed is not None and renewed.node_id == "node-1"
        assert pki.identity(renewed.certificate).serial in fake.issued  # stored before reconnecting
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_certificate_not_yet_due_is_kept(
    service: tuple[FakeAgentService, str], ca: pki.KeyPair
) -> None:
    fake, address = service
    credentials = node(ca)
    store = MemoryStore(credentials)
    task = asyncio.create_task(
        session(address, credentials, store, datetime.datetime.now(datetime.UTC)).run()
    )
    try:
        await wait_for(lambda: len(fake.connected) == 1)
        await asyncio.sleep(0.3)
        assert (len(fake.connected), fake.renewed, store.load()) == (1, [], credentials)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_refused_certificate_is_logged_and_retried_slowly_never_fatal(
    service: tuple[FakeAgentService, str], ca: pki.KeyPair, caplog: pytest.LogCaptureFixture
) -> None:
    fake, address = service
    fake.refuse = True
    credentials = node(ca)
    caplog.set_level(logging.ERROR, logger="agent.session")
    task = asyncio.create_task(
        session(address, credentials, MemoryStore(credentials), datetime.datetime.now(datetime.UTC)).run()
    )
    try:
        await wait_for(lambda: "event=certificate_refused" in caplog.text)
        await asyncio.sleep(0.5)
        assert not task.done()  # still running: it retries, it does not crash
        assert "PERMISSION_DENIED" in caplog.text and "node node-1 was removed" in caplog.text
        assert caplog.text.count("event=certificate_refused") == 1  # the next try waits >= 5 s
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_stream_cut_as_soon_as_the_new_certificate_is_issued_still_reconnects_with_it(
    service: tuple[FakeAgentService, str], ca: pki.KeyPair, caplog: pytest.LogCaptureFixture
) -> None:
    fake, address = service
    fake.cut_on_renew = True
    first = node(ca)
    caplog.set_level(logging.INFO, logger="agent.session")
    task = asyncio.create_task(session(address, first, MemoryStore(first), first.renew_at).run())
    try:
        await wait_for(lambda: len(fake.connected) >= 2)
        assert fake.connected[:2] == [pki.identity(first.certificate).serial, fake.issued[0]]
        assert "event=certificate_refused" not in caplog.text
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_an_unreachable_control_plane_address_is_left_for_the_next(
    service: tuple[FakeAgentService, str], ca: pki.KeyPair
) -> None:
    fake, address = service
    credentials = node(ca)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{probe.getsockname()[1]}"
    running = session(
        f"{dead},{address}", credentials, MemoryStore(credentials), datetime.datetime.now(datetime.UTC)
    )
    task = asyncio.create_task(running.run())
    try:
        await wait_for(lambda: len(fake.connected) == 1)
        # The fake records the stream before its first snapshot reaches the agent, which is
        # what sets `connected`: wait (bounded) for that snapshot too.
        await wait_for(running.connected.is_set)
        assert running.connected.is_set()
        assert len(fake.connected) == 1  # the dead address was left, and the live one used once
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
