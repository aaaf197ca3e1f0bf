"""Raw members for tests that speak the wire themselves: a joined node, a user of any role.

Tests that pose as agents (hostile reports, forged identities) need a node
certificate like a real agent's; these helpers join through the control
plane's real join listener and return gRPC credentials. The CA's files are
read from the test control plane's PKI directory, which only tests that
forge certificates (another CA, an expired one) need.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from berth import pki
from berth.clientconfig import channel_options
from berth.testing.daemons import ControlPlaneProcess
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import agent_pb2_grpc


@dataclass(frozen=True)
class Member:
    """A certificate and key of the cluster (or of another one), and who it names."""

    name: str
    bundle: pki.KeyPair
    ca_certificate: bytes

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            self.ca_certificate, private_key=self.bundle.key, certificate_chain=self.bundle.certificate
        )

    def channel(self, address: str, options: Sequence[tuple[str, object]] = ()) -> grpc.Channel:
        return grpc.secure_channel(address, self.credentials(), options=[*channel_options(), *options])

    def aio_channel(self, address: str, options: Sequence[tuple[str, object]] = ()) -> grpc.aio.Channel:
        return grpc.aio.secure_channel(address, self.credentials(), options=[*channel_options(), *options])


def cluster_ca(plane: ControlPlaneProcess) -> pki.KeyPair:
    directory = plane.data_dir / "pki"
    return pki.KeyPair((directory / "ca.crt").read_bytes(), (directory / "ca.key").read_bytes())


def join_channel(plane: ControlPlaneProcess) -> grpc.Channel:
    """TLS to the join listener, trusting the cluster CA (as an agent does after checking its hash)."""
    return grpc.secure_channel(
        plane.join_address,
        grpc.ssl_channel_credentials(cluster_ca(plane).certificate),
        options=[("grpc.ssl_target_name_override", pki.JOIN_NAME)],
    )


def join(plane: ControlPlaneProcess, name: str = "", token: str = "") -> Member:
    """A new node, joined with `token` (default: a fresh single-use one)."""
    token = token or plane.create_join_token(uses=1)[0]
    key = pki.new_key()
    with join_channel(plane) as channel:
        joined = agent_pb2_grpc.JoinServiceStub(channel).Join(
            agent_pb.JoinRequest(token=token, csr=pki.csr_pem(key), name=name), timeout=10
        )
    return Member(joined.node_id, pki.KeyPair(joined.certificate, pki.key_pem(key)), joined.ca_certificate)


def forged(
    ca: pki.KeyPair, kind: str, name: str, lifetime: datetime.timedelta = datetime.timedelta(hours=1)
) -> Member:
    """A certificate signed by `ca` directly (another cluster's, or an expired one of this cluster's)."""
    return Member(name, pki.issue_with_key(ca, kind, name, lifetime), ca.certificate)
