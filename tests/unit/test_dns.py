"""Berth's per-host DNS on loopback (no Docker): it answers service names and forwards others
for allowed clients only, truncates UDP replies per EDNS, and keeps its threads bounded under
slow TCP clients and slow forwards."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from dnslib import EDNS0, QTYPE, RCODE, RR, A, DNSRecord
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from agent import main as agent_main
from agent.config import AgentSettings
from agent.dns import (
    CLASSIC_UDP_PAYLOAD,
    MAX_UDP_PAYLOAD,
    DNSLimits,
    ServiceDNS,
    allowed_networks,
    client_allowed,
    parse_networks,
    udp_payload_limit,
)
from agent.runtime.docker_driver import DockerDriver
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb

SERVER = "127.0.0.1"
ALLOWED_CLIENT = "127.0.0.2"  # tests send from here to be inside the allowed networks
QUIET = DNSLogger(log="-request,-reply,-truncated,-error", prefix=False)
BIG_NAME = "big.example.test"
BIG_COUNT = 100


def web_route() -> agent_pb.ServiceRoute:
    return agent_pb.ServiceRoute(
        cluster="default",
        name="web",
        vip="10.96.0.2",
        ports=[pb.ServicePort(name="http", port=80, container_port=8080)],
    )


class _BigResolver(BaseResolver):  # type: ignore[misc]
    """An upstream that answers BIG_COUNT A records for BIG_NAME, one for anything else."""

    def resolve(self, request: DNSRecord, handler: Any) -> DNSRecord:
        reply = request.reply()
        count = BIG_COUNT if str(request.q.qname).rstrip(".") == BIG_NAME else 1
        for index in range(count):
            reply.add_answer(RR(request.q.qname, QTYPE.A, ttl=5, rdata=A(f"10.1.0.{index + 1}")))
        return reply


@contextmanager
def upstream() -> Iterator[str]:
    """A resolver on loopback over UDP and TCP (one port); yields HOST:PORT."""
    udp = DNSServer(_BigResolver(), address=SERVER, port=0, logger=QUIET)
    port = udp.server.server_address[1]
    tcp = DNSServer(_BigResolver(), address=SERVER, port=port, tcp=True, logger=QUIET)
    udp.start_thread()
    tcp.start_thread()
    try:
        yield f"{SERVER}:{port}"
    finally:
        udp.stop()
        tcp.stop()
        udp.server.server_close()
        tcp.server.server_close()


@contextmanager
def serving(
    upstream: str | None = None, allowed: tuple[str, ...] = (f"{ALLOWED_CLIENT}/32",), **limits: Any
) -> Iterator[ServiceDNS]:
    dns = ServiceDNS(SERVER, 0, upstream, allowed_networks=allowed, limits=DNSLimits(**limits))
    dns.resolver.update([web_route()])
    dns.start()
    try:
        yield dns
    finally:
        dns.stop()


def ask_udp(dns: ServiceDNS, query: DNSRecord, source: str = ALLOWED_CLIENT, timeout: float = 5) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.settimeout(timeout)
        sock.sendto(query.pack(), (SERVER, dns.port))
        return sock.recv(65535)


def ask_tcp(dns: ServiceDNS, query: DNSRecord, source: str = ALLOWED_CLIENT) -> bytes | None:
    """The answer, or None when the server closed the connection without one."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((source, 0))
        sock.settimeout(5)
        sock.connect((SERVER, dns.port))
        packet = query.pack()
        sock.sendall(struct.pack("!H", len(packet)) + packet)
        data = b""
        try:
            while len(data) < 2 or len(data) < 2 + struct.unpack("!H", data[:2])[0]:
                chunk = sock.recv(65535)
                if not chunk:
                    return None
                data += chunk
        except ConnectionResetError:
            return None
        return data[2:]


# -- behaviour kept: A, SRV, NXDOMAIN, forwarding -------------------------------


def test_service_names_and_forwarding_work_for_allowed_clients() -> None:
    with upstream() as resolver, serving(resolver) as dns:
        answer = DNSRecord.parse(ask_udp(dns, DNSRecord.question("web.default.berth", "A")))
        assert [str(rr.rdata) for rr in answer.rr] == ["10.96.0.2"]
        srv = DNSRecord.parse(ask_udp(dns, DNSRecord.question("_http._tcp.web.default.berth", "SRV")))
        assert srv.rr[0].rtype == QTYPE.SRV and srv.rr[0].rdata.port == 80
        missing = DNSRecord.parse(ask_udp(dns, DNSRecord.question("nope.default.berth", "A")))
        assert missing.header.rcode == RCODE.NXDOMAIN
        forwarded = DNSRecord.parse(ask_udp(dns, DNSRecord.question("small.example.test", "A")))
        assert [str(rr.rdata) for rr in forwarded.rr] == ["10.1.0.1"]
        over_tcp = ask_tcp(dns, DNSRecord.question("web.default.berth", "A"))
        assert over_tcp is not None and [str(rr.rdata) for rr in DNSRecord.parse(over_tcp).rr] == [
            "10.96.0.2"
        ]


# -- not an open resolver -----------------------------------------------------


def test_a_query_from_outside_the_allowed_networks_is_refused() -> None:
    # The server listens on 127.0.0.1 but answers only 127.0.0.2: 127.0.0.1 is "outside".
    with upstream() as resolver, serving(resolver) as dns:
        for name in ("small.example.test", "web.default.berth"):
            refused = DNSRecord.parse(ask_udp(dns, DNSRecord.question(name, "A"), source=SERVER))
            assert refused.header.rcode == RCODE.REFUSED and not refused.rr
        assert ask_tcp(dns, DNSRecord.question("small.example.test", "A"), source=SERVER) is None
        allowed = DNSRecord.parse(ask_udp(dns, DNSRecord.question("small.example.test", "A")))
        assert allowed.header.rcode == RCODE.NOERROR and allowed.rr


def test_allowed_networks_are_loopback_the_hosts_addresses_containers_and_extra() -> None:
    networks = parse_networks(
        allowed_networks(["10.0.0.5", "fe80::1%eth0"], ["172.17.0.0/16"], ["192.0.2.0/24"])
    )
    for client in ("127.0.0.1", "::1", "10.0.0.5", "fe80::1", "172.17.3.4", "192.0.2.9", "::ffff:172.17.0.2"):
        assert client_allowed(client, networks), client
    for client in ("10.0.0.6", "8.8.8.8", "172.18.0.2", "2001:db8::1", "not an address"):
        assert not client_allowed(client, networks), client
    with pytest.raises(ValueError, match="not a network"):
        parse_networks(["10.0.0.0/33"])


# -- truncation ---------------------------------------------------------------


def test_udp_payload_limit_follows_edns_within_bounds() -> None:
    plain = DNSRecord.question("x.test", "A")
    assert udp_payload_limit(plain) == CLASSIC_UDP_PAYLOAD
    for asked, limit in ((4096, MAX_UDP_PAYLOAD), (1000, 1000), (100, CLASSIC_UDP_PAYLOAD)):
        query = DNSRecord.question("x.test", "A")
        query.add_ar(EDNS0(udp_len=asked))
        assert udp_payload_limit(query) == limit


def test_a_large_answer_is_truncated_over_udp_and_whole_over_tcp() -> None:
    with upstream() as resolver, serving(resolver) as dns:
        plain = ask_udp(dns, DNSRecord.question(BIG_NAME, "A"))
        reply = DNSRecord.parse(plain)
        assert len(plain) <= CLASSIC_UDP_PAYLOAD and reply.header.tc == 1
        assert str(reply.q.qname).rstrip(".") == BIG_NAME and not reply.rr

        edns = DNSRecord.question(BIG_NAME, "A")
        edns.add_ar(EDNS0(udp_len=4096))
        big = ask_udp(dns, edns)
        assert len(big) <= MAX_UDP_PAYLOAD and DNSRecord.parse(big).header.tc == 1

        whole = ask_tcp(dns, DNSRecord.question(BIG_NAME, "A"))
        assert whole is not None and len(DNSRecord.parse(whole).rr) == BIG_COUNT


# -- bounded threads ----------------------------------------------------------


def test_slow_tcp_clients_do_not_grow_threads_and_are_dropped_after_the_timeout() -> None:
    before = threading.active_count()
    with serving(workers=4, queue=8, tcp_timeout=0.5) as dns:
        started = threading.active_count()
        assert started - before == dns.max_threads() == 10
        clients = []
        peak = started
        try:
            for _ in range(200):
                client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                client.bind((ALLOWED_CLIENT, 0))
                client.settimeout(15)
                client.connect((SERVER, dns.port))
                client.sendall(b"\x00\x40")  # "a 64-byte query follows", then nothing
                clients.append(client)
                peak = max(peak, threading.active_count())
            # A client of Berth's names over UDP is still answered meanwhile.
            answer = DNSRecord.parse(ask_udp(dns, DNSRecord.question("web.default.berth", "A")))
            assert [str(rr.rdata) for rr in answer.rr] == ["10.96.0.2"]
            deadline = time.monotonic() + 15
            for client in clients:
                try:
                    assert client.recv(1) == b"", "a stalled client got an answer"
                except ConnectionResetError:
                    pass
                peak = max(peak, threading.active_count())
            # 200 clients, 4 workers, 8 queued, 0.5 s each: all are gone in a few seconds.
            assert time.monotonic() < deadline
        finally:
            for client in clients:
                client.close()
        assert peak == started, f"threads grew from {started} to {peak}"
        # And the server still answers over TCP afterwards.
        after = ask_tcp(dns, DNSRecord.question("web.default.berth", "A"))
        assert after is not None


def test_slow_forwards_are_bounded_and_the_excess_gets_servfail() -> None:
    # An upstream that never answers: every forward waits its whole timeout.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind((SERVER, 0))
        host, port = silent.getsockname()
        with serving(f"{host}:{port}", workers=2, queue=4, forward_timeout=0.5) as dns:
            started = threading.active_count()
            peak = started
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                client.bind((ALLOWED_CLIENT, 0))
                client.settimeout(5)

                def send() -> None:
                    for index in range(300):
                        query = DNSRecord.question(f"n{index}.example.test", "A")
                        client.sendto(query.pack(), (SERVER, dns.port))
                        time.sleep(0.001)  # neither side's receive buffer overflows

                sender = threading.Thread(target=send)
                sender.start()
                codes = []
                for _ in range(300):
                    codes.append(DNSRecord.parse(client.recv(65535)).header.rcode)
                    peak = max(peak, threading.active_count())
                sender.join()
            assert codes == [RCODE.SERVFAIL] * 300  # refused at once or timed out upstream
            # + 1: the test's own sender thread.
            assert peak <= started + 1, f"threads grew from {started} to {peak}"


# -- the agent's wiring -------------------------------------------------------


class _FakeNetwork:
    def __init__(self, *subnets: str) -> None:
        self.attrs = {"IPAM": {"Config": [{"Subnet": s, "Gateway": "x"} for s in subnets]}}


class _FakeDocker:
    class networks:
        @staticmethod
        def list() -> list[_FakeNetwork]:
            return [
                _FakeNetwork("172.17.0.0/16"),
                _FakeNetwork(),
                _FakeNetwork("172.30.0.0/24", "not a subnet"),
            ]

    def close(self) -> None:
        pass


def _settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *extra: str) -> AgentSettings:
    monkeypatch.setattr("berth.logs.configure", lambda level: None)
    base = ["--server", "127.0.0.1:1", "--data-dir", str(tmp_path), "--name", "n1", "--address", "10.0.0.1"]
    settings, _ = agent_main.parse_args([*base, "--cpu-units", "1", "--memory-mib", "1", *extra])
    return settings


async def test_the_agent_allows_loopback_its_addresses_the_engines_networks_and_dns_allow(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = _settings(monkeypatch, tmp_path, "--dns-allow", "192.0.2.0/24", "--dns-workers", "3")
    assert settings.dns_allow == ("192.0.2.0/24",) and settings.dns_workers == 3
    monkeypatch.setattr("agent.host.own_addresses", lambda: ["10.0.0.1", "fe80::1%eth0"])
    client: Any = _FakeDocker()
    driver = DockerDriver("unix:///fake.sock", client=client)
    networks = parse_networks(await agent_main._dns_networks(driver, settings))
    await driver.close()
    for allowed in ("127.0.0.1", "10.0.0.1", "fe80::1", "172.17.0.5", "172.30.0.9", "192.0.2.7"):
        assert client_allowed(allowed, networks), allowed
    for refused in ("10.0.0.2", "8.8.8.8", "172.18.0.2"):
        assert not client_allowed(refused, networks), refused


@pytest.mark.parametrize(
    "option", [("--dns-allow", "10.0.0.0/33"), ("--dns-workers", "0"), ("--dns-tcp-timeout", "nan")]
)
def test_bad_dns_settings_are_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, option: tuple[str, str]
) -> None:
    with pytest.raises(SystemExit):
        _settings(monkeypatch, tmp_path, *option)
