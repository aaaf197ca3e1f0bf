"""A node's credentials: private on disk, swapped as one step, joined and renewed over real TLS.

The join and renewal tests run an in-process grpc.aio server with real TLS
made by berth.pki: the join listener presents the CA certificate itself (as
controlplane/tls.py's join_credentials does), the API port asks for a client
certificate from the CA (mutual TLS).
"""

from __future__ import annotations

import datetime
import os
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from agent import credentials
from agent.credentials import (
    CredentialsRefused,
    DirectoryStore,
    NodeCredentials,
    default_join_address,
    fetch_ca,
    join,
    renew,
)
from berth import pki
from berth.errors import FailedPrecondition, InvalidArgument, Unavailable
from berth.testing.daemons import free_port
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import agent_pb2_grpc
from controlplane.api.errors import Context
from controlplane.tls import ServerCertificate, join_credentials

HOUR = datetime.timedelta(hours=1)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def node_credentials(ca: pki.KeyPair, node_id: str = "node-1") -> NodeCredentials:
    pair = pki.issue_with_key(ca, "node", node_id, HOUR)
    return NodeCredentials(pair.key, pair.certificate, ca.certificate)


@pytest.fixture(scope="module")
def ca() -> pki.KeyPair:
    return pki.create_ca("test")


# On disk -----------------------------------------------------------------------------------------


def test_saved_credentials_are_private_and_load_back(tmp_path: Path, ca: pki.KeyPair) -> None:
    data = tmp_path / "agent"
    saved = node_credentials(ca)
    DirectoryStore(data).save(saved)
    assert DirectoryStore(data).load() == saved
    assert mode(data) == 0o700
    assert {p.name: mode(p) for p in data.iterdir()} == {
        "node.key": 0o600,
        "node.crt": 0o600,
        "ca.crt": 0o600,
    }
    assert saved.node_id == "node-1"


def test_no_credentials_is_none_and_loose_ones_are_tightened(tmp_path: Path, ca: pki.KeyPair) -> None:
    data = tmp_path / "agent"
    assert DirectoryStore(data).load() is None
    DirectoryStore(data).save(node_credentials(ca))
    os.chmod(data, 0o755)
    os.chmod(data / "node.key", 0o644)
    assert DirectoryStore(data).load() is not None
    assert (mode(data), mode(data / "node.key")) == (0o700, 0o600)


def test_half_a_set_of_credentials_is_a_one_line_error(tmp_path: Path, ca: pki.KeyPair) -> None:
    DirectoryStore(tmp_path).save(node_credentials(ca))
    (tmp_path / "node.crt").unlink()
    with pytest.raises(FailedPrecondition, match=r"node\.crt missing.*join anew") as raised:
        DirectoryStore(tmp_path).load()
    assert "\n" not in str(raised.value)


def test_a_certificate_for_another_key_is_refused(tmp_path: Path, ca: pki.KeyPair) -> None:
    store = DirectoryStore(tmp_path)
    store.save(node_credentials(ca))
    (tmp_path / "node.key").write_bytes(node_credentials(ca).key)
    with pytest.raises(FailedPrecondition, match="not for the node's key"):
        store.load()


def test_a_renewal_replaces_key_and_certificate_together(tmp_path: Path, ca: pki.KeyPair) -> None:
    store = DirectoryStore(tmp_path)
    store.save(node_credentials(ca))
    renewed = node_credentials(ca)
    store.save(renewed)
    assert store.load() == renewed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca.crt", "node.crt", "node.key"]


def test_a_crash_between_the_two_renames_is_finished_at_load(tmp_path: Path, ca: pki.KeyPair) -> None:
    store = DirectoryStore(tmp_path)
    store.save(node_credentials(ca))
    renewed = node_credentials(ca)
    # What save() leaves when it dies after the certificate's rename, before the key's.
    (tmp_path / "node.key.next").write_bytes(renewed.key)
    (tmp_path / "node.crt").write_bytes(renewed.certificate)
    assert store.load() == renewed
    assert not (tmp_path / "node.key.next").exists()


def test_a_crash_before_the_certificate_rename_keeps_the_old_pair(tmp_path: Path, ca: pki.KeyPair) -> None:
    store = DirectoryStore(tmp_path)
    old = node_credentials(ca)
    store.save(old)
    (tmp_path / "node.key.next").write_bytes(node_credentials(ca).key)
    assert store.load() == old


def test_the_join_server_defaults_to_the_next_port() -> None:
    assert default_join_address("10.0.0.5:7443") == "10.0.0.5:7444"
    assert default_join_address("[::1]:7443") == "[::1]:7444"
    with pytest.raises(InvalidArgument, match="HOST:PORT"):
        default_join_address("nowhere")


# Over the wire -----------------------------------------------------------------------------------


@dataclass
class FakeControlPlane(agent_pb2_grpc.JoinServiceServicer, agent_pb2_grpc.AgentServiceServicer):
    """Join and RenewCertificate as the control plane answers them, and nothing else."""

    ca: pki.KeyPair
    token: str = "abc.secret"
    issued: list[str] = field(default_factory=list)
    refuse_renewal: bool = False

    async def Join(self, request: agent_pb.JoinRequest, context: Context) -> agent_pb.JoinResponse:  # type: ignore[override]
        if request.token != self.token:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED, "the join token is unknown, used or expired"
            )
        node_id = f"node-{len(self.issued) + 1}"
        certificate, _ = pki.issue(self.ca, "node", node_id, pki.public_key_of_csr(request.csr), HOUR)
        self.issued.append(request.name)
        return agent_pb.JoinResponse(
            node_id=node_id, certificate=certificate, ca_certificate=self.ca.certificate
        )

    async def Register(  # type: ignore[override]
        self, request: agent_pb.RegisterRequest, context: Context
    ) -> agent_pb.RegisterResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in this fake")

    def Connect(self, request_iterator: object, context: object) -> object:  # type: ignore[override]
        raise NotImplementedError

    async def RenewCertificate(  # type: ignore[override]
        self, request: agent_pb.RenewCertificateRequest, context: Context
    ) -> agent_pb.RenewCertificateResponse:
        if self.refuse_renewal:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "node node-1 was removed")
        peer = next(iter(context.auth_context()["x509_pem_cert"]))
        name = pki.identity(peer).name
        certificate, _ = pki.issue(self.ca, "node", name, pki.public_key_of_csr(request.csr), HOUR)
        return agent_pb.RenewCertificateResponse(certificate=certificate)


@dataclass
class Servers:
    fake: FakeControlPlane
    join_address: str
    api_address: str


@pytest.fixture()
async def servers(ca: pki.KeyPair) -> AsyncIterator[Servers]:
    fake = FakeControlPlane(ca)
    join_server, api_server = grpc.aio.server(), grpc.aio.server()
    agent_pb2_grpc.add_JoinServiceServicer_to_server(fake, join_server)
    agent_pb2_grpc.add_AgentServiceServicer_to_server(fake, api_server)
    join_port = join_server.add_secure_port("127.0.0.1:0", join_credentials(ca))
    api_port = api_server.add_secure_port(
        "127.0.0.1:0", ServerCertificate(ca, HOUR, ("localhost",)).credentials()
    )
    await join_server.start()
    await api_server.start()
    yield Servers(fake, f"127.0.0.1:{join_port}", f"127.0.0.1:{api_port}")
    await join_server.stop(None)
    await api_server.stop(None)


async def test_join_pins_the_ca_and_gets_a_certificate_for_its_own_key(
    servers: Servers, ca: pki.KeyPair
) -> None:
    fetched = await fetch_ca(servers.join_address, pki.ca_hash(ca.certificate))
    assert fetched.strip() == ca.certificate.strip()
    joined = await join(servers.join_address, "abc.secret", fetched, "host-a")
    assert joined.node_id == "node-1" and servers.fake.issued == ["host-a"]
    assert credentials.check(joined) == joined  # certificate for our key, from the CA


async def test_a_wrong_pinned_hash_is_refused_naming_both_hashes(servers: Servers, ca: pki.KeyPair) -> None:
    other = pki.ca_hash(pki.create_ca("other").certificate)
    with pytest.raises(CredentialsRefused) as raised:
        await fetch_ca(servers.join_address, other)
    message = str(raised.value)
    assert pki.ca_hash(ca.certificate) in message and other in message and "\n" not in message
    assert servers.fake.issued == []


async def test_an_unreachable_join_server_is_one_line() -> None:
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(Unavailable, match=f"cannot reach the join server at {address}") as raised:
        await fetch_ca(address, "sha256:" + "0" * 64)
    assert "\n" not in str(raised.value)


async def test_a_refused_token_is_one_line(servers: Servers, ca: pki.KeyPair) -> None:
    with pytest.raises(CredentialsRefused, match=r"PERMISSION_DENIED.*unknown, used or expired"):
        await join(servers.join_address, "abc.wrong", ca.certificate, "host-a")


async def test_a_join_server_with_another_ca_fails_the_handshake(servers: Servers) -> None:
    # A man in the middle that passed the hash check would still need the CA's key.
    with pytest.raises(Unavailable):
        await join(servers.join_address, "abc.secret", pki.create_ca("mitm").certificate, "host-a")


async def test_renewal_over_mutual_tls_swaps_the_files(
    servers: Servers, ca: pki.KeyPair, tmp_path: Path
) -> None:
    store = DirectoryStore(tmp_path)
    current = node_credentials(ca, "node-7")
    store.save(current)
    async with grpc.aio.secure_channel(
        servers.api_address,
        current.channel_credentials(),
        options=[("grpc.ssl_target_name_override", pki.SERVER_NAME)],
    ) as channel:
        renewed = await renew(channel, current)
    store.save(renewed)
    assert renewed.node_id == "node-7" and renewed.key != current.key
    assert store.load() == renewed
    assert sorted(os.listdir(tmp_path)) == ["ca.crt", "node.crt", "node.key"]


async def test_a_refused_renewal_keeps_the_current_credentials(
    servers: Servers, ca: pki.KeyPair, tmp_path: Path
) -> None:
    servers.fake.refuse_renewal = True
    current = node_credentials(ca)
    async with grpc.aio.secure_channel(
        servers.api_address,
        current.channel_credentials(),
        options=[("grpc.ssl_target_name_override", pki.SERVER_NAME)],
    ) as channel:
        with pytest.raises(CredentialsRefused, match="was removed"):
            await renew(channel, current)


async def test_the_api_port_refuses_a_certificate_from_another_ca(servers: Servers) -> None:
    stranger = node_credentials(pki.create_ca("other"))
    async with grpc.aio.secure_channel(
        servers.api_address,
        NodeCredentials(
            stranger.key, stranger.certificate, servers.fake.ca.certificate
        ).channel_credentials(),
        options=[("grpc.ssl_target_name_override", pki.SERVER_NAME)],
    ) as channel:
        with pytest.raises(Unavailable):
            await renew(channel, stranger)


def test_a_short_lived_certificate_is_due_two_thirds_into_its_own_life(ca: pki.KeyPair) -> None:
    # Backdating a 60 s certificate by the full clock skew would make it due before it is issued.
    issued = datetime.datetime.now(datetime.UTC)
    pair = pki.issue_with_key(ca, "node", "node-1", datetime.timedelta(seconds=60))
    due = (pki.renew_at(pair.certificate) - issued).total_seconds()
    assert 30 < due < 40
    long_lived = pki.issue_with_key(ca, "node", "node-1", datetime.timedelta(days=30))
    assert pki.renew_at(long_lived.certificate) > issued + datetime.timedelta(days=19)


def test_an_already_expired_certificate_can_still_be_made_for_tests(ca: pki.KeyPair) -> None:
    pair = pki.issue_with_key(ca, "user", "admin", datetime.timedelta(minutes=-1))
    assert pki.identity(pair.certificate).not_after < datetime.datetime.now(datetime.UTC)
