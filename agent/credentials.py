"""A node's credentials: its key, its certificate (whose name is its node id) and the cluster CA.

How a node gets them (`join`): it fetches the certificate the control plane's
join listener presents, which is the cluster CA itself, without verifying it,
and accepts it only if it matches the hash the operator pinned (`--ca-hash`,
as `berth join-token create` prints it). Over TLS verified against that CA it
sends the join token and a request for a key it generated; back comes a node
certificate. The key never leaves the node.

How it keeps them: a real agent in its data directory (`DirectoryStore`:
`node.key`, `node.crt`, `ca.crt`, 0600 in a 0700 directory); hollow agents in
memory (`MemoryStore`). Two thirds into the certificate's life the agent
`renew`s it over its current mutual-TLS channel with a new key.

Replacing a key and its certificate is one step on disk even though they are
two files: the new key goes to `node.key.next` first, then the certificate
replaces `node.crt` (atomic rename), then the key replaces `node.key`. A crash
between the two renames leaves a certificate whose key is `node.key.next`;
`load` notices and finishes the swap.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from berth import pki
from berth.errors import BerthError, FailedPrecondition, InvalidArgument, Unavailable
from berth.files import private_dir, tighten, write_private
from berth.grpc_options import CLIENT_OPTIONS
from berth.servers import parse_servers, split_host_port
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import agent_pb2_grpc

log = logging.getLogger(__name__)

NODE_KEY = "node.key"
NODE_CERTIFICATE = "node.crt"
CA_CERTIFICATE = "ca.crt"
NEXT_KEY = "node.key.next"
# Seconds for fetching the join listener's certificate and for the Join call.
JOIN_TIMEOUT = 10.0
RENEW_TIMEOUT = 10.0


class CredentialsRefused(BerthError):
    """The control plane refused a join token or a certificate; retrying the same will not help."""

    grpc_code = grpc.StatusCode.PERMISSION_DENIED


@dataclass(frozen=True)
class NodeCredentials:
    """A node's private key, its certificate and the cluster CA, all PEM."""

    key: bytes
    certificate: bytes
    ca: bytes

    @property
    def node_id(self) -> str:
        return pki.identity(self.certificate).name

    @property
    def not_after(self) -> datetime.datetime:
        return pki.identity(self.certificate).not_after

    @property
    def renew_at(self) -> datetime.datetime:
        return pki.renew_at(self.certificate)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(self.ca, private_key=self.key, certificate_chain=self.certificate)


def check(credentials: NodeCredentials, expected_ca: bytes | None = None) -> NodeCredentials:
    """Refuse credentials that do not fit together: a node certificate, for this key, from this CA."""
    try:
        certificate = x509.load_pem_x509_certificate(credentials.certificate)
        ca = x509.load_pem_x509_certificate(credentials.ca)
        key = serialization.load_pem_private_key(credentials.key, None)
        identity = pki.identity(credentials.certificate)
        certificate.verify_directly_issued_by(ca)
    except (ValueError, TypeError) as error:
        raise InvalidArgument(f"the node credentials are not valid: {error}") from None
    if identity.kind != "node" or not identity.name:
        raise InvalidArgument(f"the certificate is not a node certificate (kind {identity.kind!r})")
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if certificate.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise InvalidArgument("the node certificate is not for the node's key")
    if expected_ca is not None and pki.ca_hash(credentials.ca) != pki.ca_hash(expected_ca):
        raise InvalidArgument("the control plane answered with a different CA than the one pinned")
    return credentials


# Where credentials live --------------------------------------------------------------------------


class CredentialStore(Protocol):
    def load(self) -> NodeCredentials | None: ...

    def save(self, credentials: NodeCredentials) -> None: ...


class MemoryStore:
    """Credentials kept only in memory (hollow agents)."""

    def __init__(self, credentials: NodeCredentials | None = None) -> None:
        self._credentials = credentials

    def load(self) -> NodeCredentials | None:
        return self._credentials

    def save(self, credentials: NodeCredentials) -> None:
        self._credentials = credentials


class DirectoryStore:
    """Credentials in an agent's data directory, private, replaced as one step."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def load(self) -> NodeCredentials | None:
        """The node's credentials, None when it has not joined; a half or broken set is an error."""
        private_dir(self.directory)
        paths = [self.directory / name for name in (NODE_KEY, NODE_CERTIFICATE, CA_CERTIFICATE)]
        for path in (*paths, self.directory / NEXT_KEY):
            tighten(path)
        present = [path.exists() for path in paths]
        if not any(present):
            return None
        if not all(present):
            missing = ", ".join(path.name for path, there in zip(paths, present, strict=True) if not there)
            raise FailedPrecondition(
                f"{self.directory} holds part of a node's credentials ({missing} missing): "
                "remove node.key, node.crt and ca.crt to join anew"
            )
        key, certificate, ca = (path.read_bytes() for path in paths)
        credentials = NodeCredentials(key, certificate, ca)
        try:
            return check(credentials)
        except InvalidArgument as error:
            finished = self._finish_swap(credentials)
            if finished is None:
                raise FailedPrecondition(
                    f"the node credentials in {self.directory} are not usable ({error}): "
                    "remove node.key, node.crt and ca.crt to join anew"
                ) from None
            return finished

    def _finish_swap(self, credentials: NodeCredentials) -> NodeCredentials | None:
        """A crash between the certificate's and the key's rename: the new key waits in node.key.next."""
        pending = self.directory / NEXT_KEY
        if not pending.exists():
            return None
        candidate = NodeCredentials(pending.read_bytes(), credentials.certificate, credentials.ca)
        try:
            check(candidate)
        except InvalidArgument:
            return None
        os.replace(pending, self.directory / NODE_KEY)
        log.info("event=credentials_swap_finished directory=%s", self.directory)
        return candidate

    def save(self, credentials: NodeCredentials) -> None:
        private_dir(self.directory)
        write_private(self.directory / NEXT_KEY, credentials.key)
        write_private(self.directory / CA_CERTIFICATE, credentials.ca)
        write_private(self.directory / NODE_CERTIFICATE, credentials.certificate)
        os.replace(self.directory / NEXT_KEY, self.directory / NODE_KEY)


# Joining -----------------------------------------------------------------------------------------


def split_address(address: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 in brackets) as a pair; InvalidArgument otherwise."""
    return split_host_port(address)


def default_join_address(server: str) -> str:
    """The control plane's join listener by default: the API's host, the next port."""
    host, port = split_address(server)
    if port == 65535:
        raise InvalidArgument(f"--server {server}: give --join-server, the next port does not exist")
    return f"[{host}]:{port + 1}" if ":" in host else f"{host}:{port + 1}"


def default_join_addresses(servers: str) -> list[str]:
    """Each control-plane address's join listener (its host, the next port), for `--server A,B,C`."""
    return [default_join_address(server) for server in parse_servers(servers)]


async def fetch_ca(join_address: str, pinned_hash: str) -> bytes:
    """The CA certificate the join listener presents, accepted only if it matches the pinned hash."""
    pinned = pki.check_hash(pinned_hash)
    host, port = split_address(join_address)
    try:
        # No verification on purpose: nothing is trusted yet; the pinned hash decides.
        pem = await asyncio.to_thread(ssl.get_server_certificate, (host, port), timeout=JOIN_TIMEOUT)
    except (OSError, ssl.SSLError) as error:
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        raise Unavailable(f"cannot reach the join server at {join_address}: {reason}") from None
    ca = pem.encode()
    try:
        presented = pki.ca_hash(ca)
    except ValueError:
        raise Unavailable(f"the join server at {join_address} presented no usable certificate") from None
    if not pki.matches_hash(ca, pinned):
        raise CredentialsRefused(
            f"the join server at {join_address} presents CA hash {presented}, not the pinned {pinned}: "
            "check --ca-hash (as `berth join-token create` printed it) and --join-server"
        )
    return ca


def _refusal(error: grpc.aio.AioRpcError, what: str) -> BerthError:
    """A gRPC error from Join or RenewCertificate as one line."""
    code = error.code()
    details = error.details() or code.name
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return Unavailable(f"{what}: the control plane is unreachable ({details})")
    return CredentialsRefused(f"{what} was refused ({code.name}): {details}")


def _join_options() -> list[tuple[str, object]]:
    return [("grpc.ssl_target_name_override", pki.JOIN_NAME), *CLIENT_OPTIONS]


async def join(join_address: str, token: str, ca: bytes, name: str) -> NodeCredentials:
    """Trade a join token for a node certificate, over TLS verified against `ca` (from fetch_ca)."""
    key = pki.new_key()
    request = agent_pb.JoinRequest(token=token.strip(), csr=pki.csr_pem(key), name=name)
    async with grpc.aio.secure_channel(
        join_address, grpc.ssl_channel_credentials(ca), options=_join_options()
    ) as channel:
        try:
            response = await agent_pb2_grpc.JoinServiceStub(channel).Join(request, timeout=JOIN_TIMEOUT)
        except grpc.aio.AioRpcError as error:
            raise _refusal(error, f"joining through {join_address}") from None
    credentials = NodeCredentials(pki.key_pem(key), response.certificate, response.ca_certificate or ca)
    try:
        check(credentials, expected_ca=ca)
    except InvalidArgument as error:
        raise CredentialsRefused(f"the join server at {join_address} answered badly: {error}") from None
    if credentials.node_id != response.node_id:
        raise CredentialsRefused(
            f"the join server at {join_address} answered node {response.node_id!r} "
            f"with a certificate for {credentials.node_id!r}"
        )
    log.info(
        "event=joined node=%s name=%s expires=%s",
        credentials.node_id,
        name,
        credentials.not_after.isoformat(),
    )
    return credentials


async def renew(channel: grpc.aio.Channel, current: NodeCredentials) -> NodeCredentials:
    """A new key and a certificate for it, for the same node, asked over the current mTLS channel."""
    key = pki.new_key()
    stub = agent_pb2_grpc.AgentServiceStub(channel)
    try:
        response = await stub.RenewCertificate(
            agent_pb.RenewCertificateRequest(csr=pki.csr_pem(key)), timeout=RENEW_TIMEOUT
        )
    except grpc.aio.AioRpcError as error:
        raise _refusal(error, f"renewing node {current.node_id}'s certificate") from None
    renewed = NodeCredentials(pki.key_pem(key), response.certificate, current.ca)
    try:
        check(renewed)
    except InvalidArgument as error:
        raise CredentialsRefused(f"the renewed certificate is not usable: {error}") from None
    if renewed.node_id != current.node_id:
        raise CredentialsRefused(
            f"the control plane renewed node {current.node_id} with a certificate for {renewed.node_id}"
        )
    return renewed
