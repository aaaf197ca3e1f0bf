"""Stable service addresses on the lab: VIPs, DNS names, iptables on every host, load balancers.

Clients are containers on host h1 (they use h1's Berth DNS) and processes
inside h1's network namespace; all traffic stays inside the lab.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from dnslib import QTYPE, RCODE, RR, A, DNSRecord
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from berth.testing.cli import Berth, id_of, node_of
from berth.testing.lab import Lab, LabHost
from berth.testing.waiting import wait_until
from tests.lab.conftest import UPSTREAM_DNS, delete_services

IMAGE = "berth-busybox:2"
HTTP = [
    {
        "name": "web",
        "image": IMAGE,
        "cpu": 32,
        "memory": 32,
        "stopTimeout": 2,
        "portMappings": [{"containerPort": 8080, "name": "http"}],
        "entryPoint": ["sh", "-c"],
        "command": [
            "mkdir -p /www && hostname > /www/index.html && "
            "trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait"
        ],
    }
]
UDP = [
    {
        "name": "echo",
        "image": IMAGE,
        "cpu": 32,
        "memory": 32,
        "stopTimeout": 1,
        "portMappings": [{"containerPort": 9000, "protocol": "udp", "name": "echo"}],
        "command": ["udp-echo", "9000"],
    }
]


def iptables_save(host: LabHost) -> str:
    return subprocess.run(
        [*host.nsenter(), "iptables-save"], capture_output=True, text=True, check=True
    ).stdout


def not_berth(saved: str) -> list[str]:
    """iptables-save without Berth's lines, comments and counters."""
    lines = []
    for line in saved.splitlines():
        if line.startswith("#") or "BERTH-" in line:
            continue
        lines.append(re.sub(r" \[\d+:\d+\]$", "", line))
    return lines


def dnat_targets(host: LabHost, vip: str) -> set[str]:
    saved = iptables_save(host)
    service_chains = set(
        re.findall(rf"-A BERTH-SERVICES -d {re.escape(vip)}/32 .* -j (BERTH-SVC-\w+)", saved)
    )
    return {
        target
        for svc in service_chains
        for target in re.findall(rf"-A {svc} .*--to-destination (\S+)", saved)
    }


def client(lab: Lab, script: str, timeout: int = 120) -> str:
    """Run a shell script in a throwaway container on h1 (using h1's Berth DNS)."""
    h1 = lab.host("h1")
    engine = docker.DockerClient(base_url=h1.docker_url, timeout=timeout + 30)
    try:
        output: bytes = engine.containers.run(
            IMAGE, ["sh", "-c", script], dns=[h1.address], remove=True, stdout=True, stderr=True
        )
        return output.decode()
    finally:
        engine.close()


def http_get(address: str, port: int) -> str:
    return f'printf "GET / HTTP/1.0\\r\\n\\r\\n" | nc -w 2 {address} {port} | tail -n 1'


@pytest.fixture(scope="module")
def baseline(lab: Lab) -> dict[str, list[str]]:
    """Every host's non-Berth rules before this module creates any service."""
    wait_until(lambda: all("BERTH-CANARY" in iptables_save(h) for h in lab.hosts), 20, "agents' base rules")
    return {h.name: not_berth(iptables_save(h)) for h in lab.hosts}


@pytest.fixture()
def services(berth: Berth, lab: Lab, baseline: dict[str, list[str]]) -> Iterator[list[str]]:
    created: list[str] = []
    yield created
    delete_services(berth, created)


def create(
    berth: Berth, tmp_path: Path, name: str, definitions: list[dict[str, object]], port: str, count: int
) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(definitions))
    berth.ok("taskdef", "register", "--family", name, "--container-definitions", f"file://{path}")
    berth.ok(
        "service",
        "create",
        "--name",
        name,
        "--task-definition",
        name,
        "--desired-count",
        str(count),
        "--port",
        port,
    )
    wait_until(lambda: len(berth.running("default", name)) == count, 30, f"{count} RUNNING")
    vip: str = berth.ok("service", "describe", name, "-o", "json").json()["berth"]["vip"]
    return vip


def endpoint_set(berth: Berth, name: str) -> set[str]:
    rows = berth.ok("service", "endpoints", name, "-o", "json").json()["endpoints"]
    return {f"{r['address']}:{r['port']}" for r in rows}


def test_vip_and_name_reach_every_backend_from_a_container(
    berth: Berth, lab: Lab, services: list[str], tmp_path: Path
) -> None:
    services.append("web")
    vip = create(berth, tmp_path, "web", HTTP, "80:http", 3)
    backends = {c.id[:12] for h in lab.hosts for c in lab.agents[h.name].containers()}
    assert len(backends) == 3
    by_vip = set(client(lab, "; ".join([http_get(vip, 80)] * 30)).split())
    by_name = set(client(lab, "; ".join([http_get("web.default.berth", 80)] * 30)).split())
    assert by_vip == backends, "every backend, on every host, answers at the VIP"
    assert by_name == backends
    resolved = client(lab, "nslookup web.default.berth")
    assert f"Address: {vip}" in resolved


def test_vip_and_name_survive_task_replacement(
    berth: Berth, lab: Lab, services: list[str], tmp_path: Path
) -> None:
    services.append("steady")
    vip = create(berth, tmp_path, "steady", HTTP, "80:http", 3)
    # A client that keeps asking (bounded: 600 requests, 0.05 s apart) while tasks die.
    loop = (
        f"i=0; while [ $i -lt 600 ]; do out=$({http_get('steady.default.berth', 80)}); "
        f'[ -n "$out" ] && echo "r$i:ok" || echo "r$i:fail"; i=$((i+1)); sleep 0.05; done'
    )
    h1 = lab.host("h1")
    engine = docker.DockerClient(base_url=h1.docker_url)
    runner = engine.containers.run(IMAGE, ["sh", "-c", loop], dns=[h1.address], detach=True)
    sync_seconds = []
    try:
        for _ in range(3):
            before = endpoint_set(berth, "steady")
            victim = berth.running("default", "steady")[0]
            host = next(h for h in lab.hosts if lab.agents[h.name].node_id == node_of(victim))
            docker.DockerClient(base_url=host.docker_url).containers.get(
                victim["containers"][0]["runtimeId"]
            ).kill()

            def replaced(before: set[str] = before) -> set[str] | None:
                now = endpoint_set(berth, "steady")
                return now if len(now) == 3 and now != before else None

            after, _ = wait_until(replaced, 10, "a replacement endpoint", interval=0.05)
            changed_at = time.monotonic()

            def synced(after: set[str] = after) -> bool:
                return all(dnat_targets(h, vip) == after for h in lab.hosts)

            wait_until(
                synced,
                1.0,
                "every host's rules to match the new endpoints within 1 s",
                interval=0.05,
            )
            sync_seconds.append(time.monotonic() - changed_at)
            time.sleep(1)
        assert berth.ok("service", "describe", "steady", "-o", "json").json()["berth"]["vip"] == vip
        assert f"Address: {vip}" in client(lab, "nslookup steady.default.berth")
        runner.wait(timeout=120)
        results = dict(re.findall(r"\br(\d+):(ok|fail)\b", runner.logs().decode()))
    finally:
        runner.remove(force=True)
        engine.close()
    failed = sum(1 for outcome in results.values() if outcome == "fail")
    print(
        f"requests during 3 kills: {len(results)}, failed: {failed}; rules synced after "
        + ", ".join(f"{s:.2f}s" for s in sync_seconds),
        file=sys.stderr,
    )
    assert len(results) == 600
    # Only requests in flight at a kill may fail (a few per kill), never a stretch of them.
    assert failed <= 15, f"{failed} of 600 requests failed"


def udp_ask(lab: Lab, vip: str, port: int, source_port: int) -> str:
    """One datagram from h1 (always the same source port) to VIP:port; the answer or 'timeout'."""
    probe = (
        "import socket,sys\n"
        "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
        f"s.bind(('0.0.0.0',{source_port})); s.settimeout(1)\n"
        f"s.sendto(b'ping',('{vip}',{port}))\n"
        "try: print(s.recvfrom(200)[0].decode())\n"
        "except OSError: print('timeout')\n"
    )
    command = [*lab.host("h1").nsenter(), sys.executable, "-c", probe]
    return subprocess.run(command, capture_output=True, text=True, timeout=10).stdout.strip()


def test_a_udp_client_that_asked_before_any_endpoint_reaches_the_first_one(
    berth: Berth, lab: Lab, services: list[str], tmp_path: Path
) -> None:
    # A datagram sent while the service has no endpoint leaves a flow with no
    # DNAT in conntrack; without clearing it, the same client's datagrams
    # follow it past the first endpoint for as long as they keep coming.
    services.append("late")
    vip = create(berth, tmp_path, "late", UDP, "9001:echo/udp", 0)
    assert udp_ask(lab, vip, 9001, 40001) == "timeout"
    berth.ok("service", "update", "late", "--desired-count", "1")
    wait_until(lambda: len(berth.running("default", "late")) == 1, 30, "1 RUNNING")
    wait_until(lambda: dnat_targets(lab.host("h1"), vip) or None, 10, "h1's rules for the service")
    wait_until(
        lambda: ((a := udp_ask(lab, vip, 9001, 40001)).endswith(": ping") and a) or None,
        10,
        "an answer to the client that asked first",
    )


def test_udp_service_survives_its_only_endpoint_being_replaced(
    berth: Berth, lab: Lab, services: list[str], tmp_path: Path
) -> None:
    services.append("echo")
    vip = create(berth, tmp_path, "echo", UDP, "9000:echo/udp", 1)
    # A host process on h1 that always uses source port 40000, so its
    # conntrack entry would pin it to a dead endpoint if nobody removed it.

    def ask() -> str:
        return udp_ask(lab, vip, 9000, 40000)

    # RUNNING is recorded before every host has programmed the new endpoint: wait for h1's rules.
    wait_until(lambda: dnat_targets(lab.host("h1"), vip) or None, 10, "h1's rules for the echo service")
    first, _ = wait_until(lambda: ((a := ask()).endswith(": ping") and a) or None, 10, "a first answer")
    victim = berth.running("default", "echo")[0]
    host = next(h for h in lab.hosts if lab.agents[h.name].node_id == node_of(victim))
    docker.DockerClient(base_url=host.docker_url).containers.get(victim["containers"][0]["runtimeId"]).kill()
    wait_until(
        lambda: ((r := berth.running("default", "echo")) and id_of(r[0]) != id_of(victim)) or None,
        10,
        "the replacement RUNNING",
    )
    answer, _ = wait_until(
        lambda: ((a := ask()).endswith(": ping") and a != first and a) or None,
        10,
        "an answer from the new endpoint",
    )
    assert answer.split(":")[0] != first.split(":")[0]


def test_load_balancer_port_answers_on_every_host(
    berth: Berth, lab: Lab, services: list[str], tmp_path: Path
) -> None:
    services.append("front")
    create(berth, tmp_path, "front", HTTP, "80:http", 2)
    result = berth.ok("service", "expose", "front", "--type", "LoadBalancer", "--port", "8081:80")
    for host in lab.hosts:
        assert f"{host.address}:8081" in result.stdout
    described = berth.ok("service", "describe", "front").stdout
    assert "front.default.berth" in described and "load balancer:" in described
    for host in lab.hosts:
        answer = client(lab, http_get(host.address, 8081)).strip()
        assert re.fullmatch(r"[0-9a-f]{12}", answer), f"{host.name}: {answer!r}"
    # The agent prints the rules it owns, and only those.
    owned = subprocess.run(
        [*lab.host("h2").nsenter(), sys.executable, "-m", "agent.main", "rules"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "--dport 8081" in owned and '"default/front:80/tcp load balancer"' in owned
    assert all("BERTH-" in line for line in owned.splitlines() if line.startswith("-A"))
    table = berth.ok("service", "endpoints", "front").stdout
    assert table.count(":") >= 2 and "ready" in table


class _UpstreamResolver(BaseResolver):  # type: ignore[misc]
    """The lab's stand-in for a host resolver: knows one name, on the lab's bridge only."""

    def resolve(self, request: DNSRecord, handler: object) -> DNSRecord:
        reply = request.reply()
        if str(request.q.qname).lower() == f"{UPSTREAM_NAME}.":
            if request.q.qtype == QTYPE.A:
                reply.add_answer(RR(f"{UPSTREAM_NAME}.", QTYPE.A, ttl=5, rdata=A(UPSTREAM_ANSWER)))
        else:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


UPSTREAM_NAME = "only-upstream.lab.test"
UPSTREAM_ANSWER = "10.213.0.250"


def test_dns_answers_a_and_srv_and_forwards_other_names(
    berth: Berth, lab: Lab, services: list[str], tmp_path: Path
) -> None:
    services.append("named")
    vip = create(berth, tmp_path, "named", HTTP, "80:http", 1)
    h1 = lab.host("h1")
    # A, as a container Berth's DNS serves sees it.
    assert f"Address: {vip}" in client(lab, "nslookup named.default.berth")
    # SRV, from the same server the containers use (h1's agent, on h1's address).
    srv = DNSRecord.parse(
        DNSRecord.question("_http._tcp.named.default.berth", "SRV").send(h1.address, 53, timeout=3)
    )
    records = [r for r in srv.rr if r.rtype == QTYPE.SRV]
    assert len(records) == 1, srv
    assert records[0].rdata.port == 80 and str(records[0].rdata.target) == "named.default.berth."
    assert [str(r.rdata) for r in srv.ar if r.rtype == QTYPE.A] == [vip]
    missing = DNSRecord.parse(DNSRecord.question("nosuch.default.berth", "A").send(h1.address, 53, timeout=3))
    assert missing.header.rcode == RCODE.NXDOMAIN
    # Other names go to the agent's upstream: a resolver this test runs on the lab's bridge.
    upstream = DNSServer(
        _UpstreamResolver(),
        address=UPSTREAM_DNS[0],
        port=UPSTREAM_DNS[1],
        logger=DNSLogger(log="-request,-reply,-truncated,-error", prefix=False),
    )
    upstream.start_thread()
    try:
        direct = DNSRecord.parse(DNSRecord.question(UPSTREAM_NAME, "A").send(h1.address, 53, timeout=5))
        assert [str(r.rdata) for r in direct.rr] == [UPSTREAM_ANSWER], direct
        answer = client(lab, f"nslookup {UPSTREAM_NAME} || true")
    finally:
        upstream.stop()
    assert f"Address: {UPSTREAM_ANSWER}" in answer, answer


def test_flushed_rules_come_back_and_a_stopped_agent_leaves_its_rules(
    berth: Berth, lab: Lab, services: list[str], tmp_path: Path
) -> None:
    services.append("sturdy")
    vip = create(berth, tmp_path, "sturdy", HTTP, "80:http", 2)
    expected = endpoint_set(berth, "sturdy")
    h2, h3 = lab.host("h2"), lab.host("h3")
    wait_until(lambda: all(dnat_targets(h, vip) == expected for h in lab.hosts), 10, "rules on every host")

    def remove_rules(host: LabHost, *cidr: str) -> None:
        command = [*host.nsenter(), sys.executable, "-m", "agent.main", "remove-rules", *cidr]
        subprocess.run(command, capture_output=True, text=True, check=True)

    # Someone flushes and deletes Berth's chains on h2: the canary notices and the agent resyncs.
    remove_rules(h2)
    assert "BERTH-" not in iptables_save(h2)
    _, seconds = wait_until(lambda: dnat_targets(h2, vip) == expected, 10, "h2's rules back", interval=0.1)
    print(f"rules back on h2 {seconds:.2f}s after its chains were deleted", file=sys.stderr)
    assert "BERTH-CANARY" in iptables_save(h2)

    # A stopped agent leaves its rules (static stability) ...
    agent = lab.agents["h3"]
    assert agent.stop(timeout=15) == 0
    try:
        time.sleep(1)
        assert dnat_targets(h3, vip) == expected, "the stopped agent's rules stay"
        # ... until remove-rules takes them and the service CIDR's route off the host.
        remove_rules(h3, "10.96.0.0/16")
        assert "BERTH-" not in iptables_save(h3)
        routes = subprocess.run(
            [*h3.nsenter(), "ip", "route", "show", "table", "local", "10.96.0.0/16"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert routes.strip() == ""
    finally:
        lab.start_agent("h3")
    # (h3 may have been marked DOWN meanwhile and its task replaced: compare with the endpoints now.)
    wait_until(
        lambda: (now := endpoint_set(berth, "sturdy")) and len(now) == 2 and dnat_targets(h3, vip) == now,
        30,
        "h3's rules back after its agent restarted",
    )


def test_deleting_services_removes_their_rules_and_leaves_others_alone(
    berth: Berth, lab: Lab, baseline: dict[str, list[str]]
) -> None:
    # Runs last in this module: every service above was deleted by its fixture.
    wait_until(
        lambda: all(not lab.agents[h.name].containers(all=True) for h in lab.hosts), 30, "no containers"
    )
    for host in lab.hosts:

        def clean(host: LabHost = host) -> bool:
            return "BERTH-SVC-" not in iptables_save(host)

        wait_until(clean, 5, f"no service chains on {host.name}")
        assert not_berth(iptables_save(host)) == baseline[host.name], (
            f"non-Berth rules changed on {host.name}"
        )
