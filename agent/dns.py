"""A small DNS server on each host: service names answer with their virtual IP.

    SERVICE.CLUSTER.berth                 A    the service's VIP
    _PORTNAME._tcp.SERVICE.CLUSTER.berth  SRV  the service port, target SERVICE.CLUSTER.berth

Other names are forwarded to the host's own resolver. Containers Berth
starts use this server. Packets are parsed and built by dnslib.

It is not an open resolver:

- only clients from the allowed networks are answered (this host's
  container networks, its own addresses and loopback, given by the agent);
  others get REFUSED over UDP, and their TCP connections are closed;
- UDP replies fit the client's EDNS payload size (512 bytes without EDNS,
  never more than MAX_UDP_PAYLOAD); a longer one goes out truncated, with TC
  set, and the client asks again over TCP;
- a fixed pool of worker threads per transport takes queries from a bounded
  queue: Berth's own names are answered at once by the UDP receiver, forwards
  wait for a worker; when the queue is full, UDP gets SERVFAIL and TCP is
  closed, so the number of threads never grows with the load;
- a TCP client has `tcp_timeout` seconds to send each query, and forwards
  give up after `forward_timeout`.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import logging
import queue
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dnslib import OPCODE, QTYPE, RCODE, RR, SRV, A, DNSHeader, DNSRecord
from dnslib.server import BaseResolver

from berth.names import SERVICE_DOMAIN, protocol_name, service_dns_name
from berth.v1 import agent_pb2 as agent_pb

log = logging.getLogger(__name__)

TTL = 5
# Without EDNS, a UDP reply is at most 512 bytes (RFC 1035).
CLASSIC_UDP_PAYLOAD = 512
# Whatever a client's EDNS asks for, no bigger datagram (DNS flag day 2020: no IP fragmentation).
MAX_UDP_PAYLOAD = 1232
# Queries answered on one TCP connection before it is closed.
MAX_TCP_QUERIES = 100
# How often the receiving threads look up from their socket to see whether to stop.
POLL_SECONDS = 0.2

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK_NETWORKS = ("127.0.0.0/8", "::1/128")


@dataclass(frozen=True)
class DNSLimits:
    # Worker threads per transport (UDP, TCP) answering forwarded queries.
    workers: int = 16
    # Queries (UDP) or connections (TCP) waiting for a worker; beyond, SERVFAIL or closed.
    queue: int = 256
    # Seconds a TCP client has to send each whole query.
    tcp_timeout: float = 3.0
    # Seconds a forward to the upstream resolver may take.
    forward_timeout: float = 2.0


def upstream_resolver(resolv_conf: Path = Path("/etc/resolv.conf"), exclude: str = "") -> str | None:
    for line in resolv_conf.read_text().splitlines() if resolv_conf.exists() else []:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver" and parts[1] != exclude:
            return parts[1]
    return None


def split_upstream(upstream: str) -> tuple[str, int]:
    """HOST or HOST:PORT (port 53 by default)."""
    host, sep, port = upstream.rpartition(":")
    if sep and port.isdigit() and "." in host:
        return host, int(port)
    return upstream, 53


def parse_networks(texts: Iterable[str]) -> tuple[Network, ...]:
    """CIDRs (or single addresses); raises ValueError naming the first bad one."""
    networks = []
    for text in texts:
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError as error:
            raise ValueError(
                f"{text!r} is not a network: write an address or a CIDR such as 172.17.0.0/16"
            ) from error
    return tuple(networks)


def allowed_networks(
    host_addresses: Iterable[str], container_networks: Iterable[str], extra: Iterable[str] = ()
) -> list[str]:
    """Who may ask: loopback, the host's own addresses, its container networks, and what the operator adds."""
    own = [f"{a.split('%', 1)[0]}/{128 if ':' in a else 32}" for a in host_addresses]
    return [*LOOPBACK_NETWORKS, *own, *container_networks, *extra]


def client_allowed(address: str, networks: Iterable[Network]) -> bool:
    try:
        client = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(client, ipaddress.IPv6Address) and client.ipv4_mapped is not None:
        client = client.ipv4_mapped
    return any(client.version == n.version and client in n for n in networks)


def udp_payload_limit(request: DNSRecord) -> int:
    """The largest UDP reply this client takes: its EDNS payload size, else 512, capped."""
    for record in request.ar:
        if record.rtype == QTYPE.OPT:
            return int(max(CLASSIC_UDP_PAYLOAD, min(int(record.rclass), MAX_UDP_PAYLOAD)))
    return CLASSIC_UDP_PAYLOAD


def fit_udp(reply: DNSRecord, limit: int) -> bytes:
    """The reply packed for UDP; when longer than limit, only header and question, with TC set."""
    data: bytes = reply.pack()
    if len(data) <= limit:
        return data
    truncated = DNSRecord(DNSHeader(id=reply.header.id, bitmap=reply.header.bitmap))
    truncated.header.tc = 1
    for question in reply.questions:
        truncated.add_question(question)
    for record in reply.ar:
        if record.rtype == QTYPE.OPT:
            truncated.add_ar(record)
    packed: bytes = truncated.pack()
    return packed


@dataclass(frozen=True)
class _Handler:
    """What resolve() learns about the query's transport (dnslib's handler has the same attribute)."""

    protocol: str


def _read_exactly(sock: socket.socket, size: int, deadline: float) -> bytes | None:
    """size bytes before the deadline, else None (timed out, or the peer closed)."""
    data = b""
    while len(data) < size:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(size - len(data))
        except (TimeoutError, OSError):
            return None
        if not chunk:
            return None
        data += chunk
    return data


def _read_tcp_message(sock: socket.socket, timeout: float) -> bytes | None:
    deadline = time.monotonic() + timeout
    header = _read_exactly(sock, 2, deadline)
    if header is None:
        return None
    (length,) = struct.unpack("!H", header)
    return _read_exactly(sock, length, deadline) if length else None


def forward(packet: bytes, upstream: tuple[str, int], tcp: bool, timeout: float) -> bytes:
    """The upstream's answer to packet (raises OSError or TimeoutError); replies are matched by id."""
    host, port = upstream
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + timeout
    if tcp:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect((host, port))
            sock.sendall(struct.pack("!H", len(packet)) + packet)
            answer = _read_tcp_message(sock, max(0.0, deadline - time.monotonic()))
            if answer is None or answer[:2] != packet[:2]:
                raise TimeoutError("no answer from the upstream resolver")
            return answer
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.connect((host, port))  # only the upstream's datagrams are received
        sock.send(packet)
        while (remaining := deadline - time.monotonic()) > 0:
            sock.settimeout(remaining)
            answer = sock.recv(65535)
            if answer[:2] == packet[:2]:
                return answer
        raise TimeoutError("no answer from the upstream resolver")


class ServiceResolver(BaseResolver):  # type: ignore[misc]
    def __init__(self, upstream: str | None, forward_timeout: float = DNSLimits.forward_timeout) -> None:
        self._upstream = split_upstream(upstream) if upstream else None
        self._forward_timeout = forward_timeout
        self._lock = threading.Lock()
        self._records: dict[str, agent_pb.ServiceRoute] = {}

    def update(self, routes: list[agent_pb.ServiceRoute]) -> None:
        records = {f"{service_dns_name(r.name, r.cluster)}.": r for r in routes if r.vip}
        with self._lock:
            self._records = records

    @staticmethod
    def is_local(request: DNSRecord) -> bool:
        """A name of Berth's, answered from memory (no forward)."""
        return str(request.q.qname).lower().endswith(f".{SERVICE_DOMAIN}.")

    def resolve(self, request: DNSRecord, handler: Any) -> DNSRecord:
        reply = request.reply()
        qname = str(request.q.qname).lower()
        if not self.is_local(request):
            return self._forward(request, reply, tcp=getattr(handler, "protocol", "udp") == "tcp")
        labels = qname.split(".")
        with self._lock:
            records = self._records
        if labels[0].startswith("_") and len(labels) >= 6:
            port_name, protocol, host = labels[0][1:], labels[1][1:], ".".join(labels[2:])
            route = records.get(host)
            if route is None:
                reply.header.rcode = RCODE.NXDOMAIN
                return reply
            for port in route.ports:
                proto = protocol_name(port.protocol)
                if (
                    proto == protocol
                    and port_name in (port.name, str(port.port))
                    and request.q.qtype
                    in (
                        QTYPE.SRV,
                        QTYPE.ANY,
                    )
                ):
                    reply.add_answer(RR(qname, QTYPE.SRV, ttl=TTL, rdata=SRV(0, 100, port.port, host)))
                    reply.add_ar(RR(host, QTYPE.A, ttl=TTL, rdata=A(route.vip)))
            return reply
        route = records.get(qname)
        if route is None:
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype in (QTYPE.A, QTYPE.ANY):
            reply.add_answer(RR(qname, QTYPE.A, ttl=TTL, rdata=A(route.vip)))
        return reply

    def _forward(self, request: DNSRecord, reply: DNSRecord, tcp: bool) -> DNSRecord:
        if self._upstream is None:
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        try:
            answer: DNSRecord = DNSRecord.parse(
                forward(request.pack(), self._upstream, tcp, self._forward_timeout)
            )
            return answer
        except Exception:
            reply.header.rcode = RCODE.SERVFAIL
            return reply


class _Workers:
    """A fixed number of threads taking jobs from a bounded queue."""

    def __init__(self, name: str, count: int, size: int) -> None:
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize=size)
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{index}", daemon=True) for index in range(count)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def submit(self, job: Callable[[], None]) -> bool:
        """False when the queue is full (the caller refuses the work)."""
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            return False
        return True

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                job()
            except Exception:
                log.exception("event=dns_job_failed")

    def stop(self, timeout: float) -> None:
        with contextlib.suppress(queue.Empty):
            while True:
                self._jobs.get_nowait()
        for _ in self._threads:
            with contextlib.suppress(queue.Full):
                self._jobs.put(None, timeout=timeout)
        for thread in self._threads:
            thread.join(timeout)


def _reply_to_bad(request: DNSRecord) -> DNSRecord | None:
    """FORMERR/NOTIMP for queries this server does not take; None for a good query."""
    if request.header.opcode != OPCODE.QUERY:
        reply = request.reply()
        reply.header.rcode = RCODE.NOTIMP
        return reply
    if len(request.questions) != 1:
        reply = request.reply()
        reply.header.rcode = RCODE.FORMERR
        return reply
    return None


def _with_rcode(request: DNSRecord, rcode: int) -> DNSRecord:
    reply = request.reply()
    reply.header.rcode = rcode
    return reply


class ServiceDNS:
    """Runs the resolver on ADDRESS:PORT over UDP and TCP, for clients of the allowed networks.

    port 0 picks a free port (the same for UDP and TCP); `port` holds it after construction.
    """

    def __init__(
        self,
        address: str,
        port: int,
        upstream: str | None = None,
        *,
        allowed_networks: Iterable[str],
        limits: DNSLimits = DNSLimits(),
    ) -> None:
        self.address = address
        self.limits = limits
        self.resolver = ServiceResolver(
            upstream or upstream_resolver(exclude=address), limits.forward_timeout
        )
        self._allowed = parse_networks(allowed_networks)
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self._udp = socket.socket(family, socket.SOCK_DGRAM)
        self._tcp = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._udp.bind((address, port))
            self.port = self._udp.getsockname()[1]
            self._tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._tcp.bind((address, self.port))
            self._tcp.listen(128)
        except OSError:
            self._udp.close()
            self._tcp.close()
            raise
        self._udp.settimeout(POLL_SECONDS)
        self._tcp.settimeout(POLL_SECONDS)
        self._stopping = threading.Event()
        self._udp_workers = _Workers("dns-udp", limits.workers, limits.queue)
        self._tcp_workers = _Workers("dns-tcp", limits.workers, limits.queue)
        self._threads = [
            threading.Thread(target=self._receive_udp, name="dns-udp-receiver", daemon=True),
            threading.Thread(target=self._accept_tcp, name="dns-tcp-acceptor", daemon=True),
        ]

    @property
    def allowed_networks(self) -> tuple[Network, ...]:
        return self._allowed

    def allow(self, networks: Iterable[str]) -> None:
        """Replace the allowed networks (e.g. when the engine's networks change)."""
        self._allowed = parse_networks(networks)

    def max_threads(self) -> int:
        """Threads this server ever runs: two receivers and the workers of both pools."""
        return 2 + 2 * self.limits.workers

    def start(self) -> None:
        self._udp_workers.start()
        self._tcp_workers.start()
        for thread in self._threads:
            thread.start()
        log.info(
            "event=dns_started address=%s port=%d allowed=%s",
            self.address,
            self.port,
            ",".join(str(n) for n in self._allowed),
        )

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join()
        self._udp_workers.stop(self.limits.tcp_timeout + self.limits.forward_timeout)
        self._tcp_workers.stop(self.limits.tcp_timeout + self.limits.forward_timeout)
        self._udp.close()
        self._tcp.close()

    # -- UDP ---------------------------------------------------------------------

    def _receive_udp(self) -> None:
        while not self._stopping.is_set():
            try:
                data, client = self._udp.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                if self._stopping.is_set():
                    return
                continue
            try:
                self._datagram(data, client)
            except Exception:
                log.exception("event=dns_udp_failed")

    def _datagram(self, data: bytes, client: tuple[Any, ...]) -> None:
        try:
            request = DNSRecord.parse(data)
        except Exception:
            return  # not DNS: no answer
        if request.header.qr:
            return  # a response, not a query: never answer (no loops between servers)
        if not client_allowed(client[0], self._allowed):
            self._send_udp(_with_rcode(request, RCODE.REFUSED), request, client)
            return
        bad = _reply_to_bad(request)
        if bad is not None:
            self._send_udp(bad, request, client)
        elif self.resolver.is_local(request):
            # Berth's own names cost a dictionary lookup: answered here, never queued.
            self._send_udp(self.resolver.resolve(request, _Handler("udp")), request, client)
        elif not self._udp_workers.submit(functools.partial(self._forward_udp, request, client)):
            self._send_udp(_with_rcode(request, RCODE.SERVFAIL), request, client)

    def _forward_udp(self, request: DNSRecord, client: tuple[Any, ...]) -> None:
        self._send_udp(self.resolver.resolve(request, _Handler("udp")), request, client)

    def _send_udp(self, reply: DNSRecord, request: DNSRecord, client: tuple[Any, ...]) -> None:
        with contextlib.suppress(OSError):
            self._udp.sendto(fit_udp(reply, udp_payload_limit(request)), client)

    # -- TCP ---------------------------------------------------------------------

    def _accept_tcp(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, client = self._tcp.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stopping.is_set():
                    return
                continue
            if not client_allowed(client[0], self._allowed) or not self._tcp_workers.submit(
                functools.partial(self._serve_tcp, connection)
            ):
                connection.close()

    def _serve_tcp(self, connection: socket.socket) -> None:
        with connection:
            for _ in range(MAX_TCP_QUERIES):
                if self._stopping.is_set():
                    return
                data = _read_tcp_message(connection, self.limits.tcp_timeout)
                if data is None:
                    return
                try:
                    request = DNSRecord.parse(data)
                except Exception:
                    return
                if request.header.qr:
                    return
                reply = _reply_to_bad(request) or self.resolver.resolve(request, _Handler("tcp"))
                packed: bytes = reply.pack()
                if len(packed) > 65535:
                    packed = fit_udp(reply, 65535)
                connection.settimeout(self.limits.tcp_timeout)
                try:
                    connection.sendall(struct.pack("!H", len(packed)) + packed)
                except OSError:
                    return
