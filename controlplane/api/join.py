"""The join listener's one RPC: a token and a key in, a node identity out.

Served on its own port with TLS under the CA's certificate and no client
certificate (`controlplane.tls`); nothing else is reachable there. The token
is checked and used up in `operations.membership`.
"""

from __future__ import annotations

from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import agent_pb2_grpc
from controlplane.api.errors import Context, grpc_errors
from controlplane.operations.membership import Membership


class JoinService(agent_pb2_grpc.JoinServiceServicer):
    def __init__(self, membership: Membership) -> None:
        self._membership = membership

    @grpc_errors
    async def Join(self, request: agent_pb.JoinRequest, context: Context) -> agent_pb.JoinResponse:
        node_id, certificate = await self._membership.join(request.token, request.csr, request.name)
        return agent_pb.JoinResponse(
            node_id=node_id, certificate=certificate, ca_certificate=self._membership.ca_certificate
        )
