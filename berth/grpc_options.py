"""gRPC message-size limits, the same on both ends of every connection.

What travels *to* the control plane is small and bounded field by field
(a registration, a status report, a task definition), so servers accept
at most MAX_REQUEST_BYTES per message: anything bigger is refused with
RESOURCE_EXHAUSTED before it is parsed.

What travels *from* the control plane can be big: every agent's snapshot
carries the whole route table, and listings carry every task or node.
Measured with 10,000 services, each with one port, one load-balancer port,
endpoints on 10 tasks and 63-character cluster and service names, the route
table is 9.5 MB (3 endpoints and 20-character names: 3.1 MB, already close
to gRPC's default limit of 4 MiB). MAX_RESPONSE_BYTES leaves room for six
times that, plus the node's own task assignments.
"""

from __future__ import annotations

MAX_REQUEST_BYTES = 4 * 1024 * 1024
MAX_RESPONSE_BYTES = 64 * 1024 * 1024

# For the control plane's server: what it accepts and what it may send.
SERVER_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
    ("grpc.max_send_message_length", MAX_RESPONSE_BYTES),
]

# For agents' and the CLI's channels: the mirror image of the server's.
CLIENT_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_receive_message_length", MAX_RESPONSE_BYTES),
    ("grpc.max_send_message_length", MAX_REQUEST_BYTES),
]
