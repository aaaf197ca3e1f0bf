"""Programming service rules at scale, nftables and iptables side by side, each in a network
namespace of its own.

For each backend, exactly as the agent does it (agent/netfilter):
  full sync       the rules for N services with E endpoints each, from empty
  one change      one endpoint replaced, applied as a delta (median and max of --changes)
  connect 1 / N   first-packet latency: connect() to a VIP, a new flow each time, so every
                  connect is NATed by a rule lookup; with the VIP's service alone in the table,
                  then among the N services (median and p99 of --probes connects)
The namespace's loopback holds the one endpoint that listens;
every packet stays inside it. Namespaces are deleted afterwards, even on failure.

Run (root): python bench/netfilter.py --services 10000 --endpoints 5
"""

from __future__ import annotations

import argparse
import platform
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

from agent.netfilter.iptables import ServiceNetwork
from agent.netfilter.nftables import NftablesNetwork
from agent.netfilter.sync import RuleSync
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb

T = TypeVar("T")
SERVICE_CIDR = "10.96.0.0/16"
NODE = "10.213.0.11"
# The one endpoint that answers: a listener on a dummy interface inside the namespace.
PROBE_VIP, PROBE_PORT = "10.96.255.2", 80
LISTENER, LISTENER_PORT = "10.213.255.1", 8080

# Runs inside the namespace: a listener, then `count` connects to the VIP, each timed.
CONNECT_SCRIPT = """
import socket, sys, threading, time
vip, listen = sys.argv[1], sys.argv[3]
port, listen_port, count = int(sys.argv[2]), int(sys.argv[4]), int(sys.argv[5])
server = socket.socket(); server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((listen, listen_port)); server.listen(128)
def serve():
    while True:
        connection, _ = server.accept(); connection.close()
threading.Thread(target=serve, daemon=True).start()
times = []
for _ in range(count):
    client = socket.socket(); client.settimeout(2)
    started = time.perf_counter(); client.connect((vip, port)); times.append(time.perf_counter() - started)
    client.close()
print(" ".join(f"{t:.9f}" for t in times))
"""


def routes(services: int, endpoints: int) -> list[agent_pb.ServiceRoute]:
    table = []
    for index in range(services):
        table.append(
            agent_pb.ServiceRoute(
                cluster="bench",
                name=f"svc-{index}",
                vip=f"10.96.{index // 250}.{index % 250 + 2}",
                ports=[pb.ServicePort(port=80, container_port=8080)],
                endpoints=[
                    pb.Endpoint(
                        address=f"10.213.{e}.{index % 250 + 1}", port=30000 + index % 20000, service_port=80
                    )
                    for e in range(endpoints)
                ],
            )
        )
    return table


def probe_route() -> agent_pb.ServiceRoute:
    return agent_pb.ServiceRoute(
        cluster="bench",
        name="zz-probe",  # sorts last: iptables meets its rule after every other service's
        vip=PROBE_VIP,
        ports=[pb.ServicePort(port=PROBE_PORT, container_port=LISTENER_PORT)],
        endpoints=[pb.Endpoint(address=LISTENER, port=LISTENER_PORT, service_port=PROBE_PORT)],
    )


def make_namespace(name: str) -> tuple[str, ...]:
    """A fresh namespace: loopback up, holding the listener's address (no dummy module needed)."""
    subprocess.run(["ip", "netns", "add", name], check=True)
    enter = ("nsenter", f"--net=/run/netns/{name}")
    for command in (
        ["ip", "link", "set", "lo", "up"],
        ["ip", "addr", "add", f"{LISTENER}/32", "dev", "lo"],
    ):
        subprocess.run([*enter, *command], check=True, capture_output=True)
    return enter


def connect_times(enter: tuple[str, ...], count: int) -> list[float]:
    probe_arguments = (LISTENER, str(LISTENER_PORT), str(count))
    output = subprocess.run(
        [*enter, sys.executable, "-c", CONNECT_SCRIPT, PROBE_VIP, str(PROBE_PORT), *probe_arguments],
        capture_output=True,
        text=True,
        check=True,
        timeout=60 + 2 * count,
    ).stdout
    return [float(value) for value in output.split()]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def new_network(backend: str, enter: tuple[str, ...]) -> RuleSync:
    network: RuleSync
    if backend == "nftables":
        network = NftablesNetwork(NODE, command_prefix=enter)
    else:
        network = ServiceNetwork(NODE, command_prefix=enter)
    network.service_cidr = SERVICE_CIDR
    return network


def in_namespace(work: Callable[[tuple[str, ...]], T]) -> T:
    """work(nsenter prefix) in a fresh namespace, deleted afterwards whatever happens."""
    name = f"berthbench-{uuid.uuid4().hex[:8]}"
    try:
        return work(make_namespace(name))
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)


def measure(backend: str, options: argparse.Namespace) -> dict[str, str]:
    def alone(enter: tuple[str, ...]) -> list[float]:
        new_network(backend, enter).sync([probe_route()], 1)
        return connect_times(enter, options.probes)

    def at_scale(enter: tuple[str, ...]) -> tuple[float, list[float], list[float]]:
        network = new_network(backend, enter)
        table = [*routes(options.services, options.endpoints), probe_route()]
        start = time.perf_counter()
        network.sync(table, 1)
        full = time.perf_counter() - start
        changes = []
        for change in range(options.changes):
            victim = table[change * 7 % options.services] if options.services else table[-1]
            victim.endpoints[0].port = 20000 + change  # one endpoint replaced by a new one
            start = time.perf_counter()
            network.sync(table, 2 + change)
            changes.append(time.perf_counter() - start)
        return full, changes, connect_times(enter, options.probes)

    one = in_namespace(alone)
    full, changes, many = in_namespace(at_scale)

    def ms(values: list[float], fraction: float) -> str:
        return f"{percentile(values, fraction) * 1000:.2f}"

    def us(values: list[float], fraction: float) -> str:
        return f"{percentile(values, fraction) * 1e6:.0f}"

    return {
        "full sync (s)": f"{full:.2f}",
        "one change median (ms)": ms(changes, 0.5) if changes else "-",
        "one change max (ms)": f"{max(changes) * 1000:.2f}" if changes else "-",
        "connect, 1 service, p50 (us)": us(one, 0.5),
        "connect, 1 service, p99 (us)": us(one, 0.99),
        f"connect, {options.services + 1} services, p50 (us)": us(many, 0.5),
        f"connect, {options.services + 1} services, p99 (us)": us(many, 0.99),
    }


def version(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "not installed"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--services", type=int, default=10000)
    parser.add_argument("--endpoints", type=int, default=5)
    parser.add_argument("--changes", type=int, default=10)
    parser.add_argument("--probes", type=int, default=200, help="connects per latency figure")
    parser.add_argument("--backends", default="nftables,iptables", help="comma-separated")
    options = parser.parse_args()
    if not 0 <= options.services <= 60_000 or not 1 <= options.endpoints <= 100:
        parser.error("--services 0-60000 (VIPs must fit the /16), --endpoints 1-100")
    if not 1 <= options.probes <= 10_000 or not 0 <= options.changes <= 10_000:
        parser.error("--probes 1-10000, --changes 0-10000")
    backends = [b for b in options.backends.split(",") if b]
    if not backends or any(b not in ("nftables", "iptables") for b in backends):
        parser.error("--backends: nftables and/or iptables")
    # A SIGTERM (a timeout) unwinds like an error, so the namespaces are still deleted.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results = {backend: measure(backend, options) for backend in backends}
    tools = f"{version(['nft', '--version'])}, {version(['iptables', '--version'])}"
    print(f"machine: {platform.machine()}, {tools}")
    print(f"size: {options.services} services x {options.endpoints} endpoints (+1 probe service)")
    width = max(len(row) for row in next(iter(results.values())))
    print(f"{'':{width}}  " + "  ".join(f"{b:>10}" for b in backends))
    for row in next(iter(results.values())):
        print(f"{row:{width}}  " + "  ".join(f"{results[b][row]:>10}" for b in backends))


if __name__ == "__main__":
    main()
