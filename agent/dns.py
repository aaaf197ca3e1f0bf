"""A small DNS server on each host: service names answer with their virtual IP.

    SERVICE.CLUSTER.berth                 A    the service's VIP
    _PORTNAME._tcp.SERVICE.CLUSTER.berth  SRV  the service port, target SERVICE.CLUSTER.berth

Other names are forwarded to the host's own resolver. Containers Berth
starts use this server. Packets are parsed and built by dnslib.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from dnslib import QTYPE, RCODE, RR, SRV, A, DNSRecord
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from berth.names import SERVICE_DOMAIN, protocol_name, service_dns_name
from berth.v1 import agent_pb2 as agent_pb

log = logging.getLogger(__name__)

TTL = 5


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


class ServiceResolver(BaseResolver):  # type: ignore[misc]
    def __init__(self, upstream: str | None) -> None:
        self._upstream = split_upstream(upstream) if upstream else None
        self._lock = threading.Lock()
        self._records: dict[str, agent_pb.ServiceRoute] = {}

    def update(self, routes: list[agent_pb.ServiceRoute]) -> None:
        records = {f"{service_dns_name(r.name, r.cluster)}.": r for r in routes if r.vip}
        with self._lock:
            self._records = records

    def resolve(self, request: DNSRecord, handler: Any) -> DNSRecord:
        reply = request.reply()
        qname = str(request.q.qname).lower()
        if not qname.endswith(f".{SERVICE_DOMAIN}."):
            return self._forward(request, reply)
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

    def _forward(self, request: DNSRecord, reply: DNSRecord) -> DNSRecord:
        if self._upstream is None:
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        try:
            host, port = self._upstream
            return DNSRecord.parse(request.send(host, port, timeout=3))
        except Exception:
            reply.header.rcode = RCODE.SERVFAIL
            return reply


class ServiceDNS:
    """Runs the resolver on ADDRESS:PORT over UDP and TCP, in dnslib's threads."""

    def __init__(self, address: str, port: int, upstream: str | None = None) -> None:
        self.address = address
        self.port = port
        self.resolver = ServiceResolver(upstream or upstream_resolver(exclude=address))
        quiet = DNSLogger(log="-request,-reply,-truncated,-error", prefix=False)
        self._servers = [
            DNSServer(self.resolver, port=port, address=address, logger=quiet),
            DNSServer(self.resolver, port=port, address=address, tcp=True, logger=quiet),
        ]

    def start(self) -> None:
        for server in self._servers:
            server.start_thread()
        log.info("event=dns_started address=%s port=%d", self.address, self.port)

    def stop(self) -> None:
        for server in self._servers:
            server.stop()
