"""Programming service rules at scale on one agent, in a network namespace of its own.

Builds and applies the rules for N services with E endpoints each from
empty (a full sync), then replaces one endpoint and applies that (a delta),
exactly as the agent does (agent/netfilter). Runs in a fresh network
namespace that it deletes afterwards; no packet is sent.

Run (root): python bench/netfilter.py --services 10000 --endpoints 5
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import time

from agent.netfilter.iptables import ServiceNetwork
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb

NAMESPACE = "berthbench"


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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--services", type=int, default=10000)
    parser.add_argument("--endpoints", type=int, default=5)
    parser.add_argument("--changes", type=int, default=10)
    options = parser.parse_args()
    subprocess.run(["ip", "netns", "delete", NAMESPACE], capture_output=True)
    subprocess.run(["ip", "netns", "add", NAMESPACE], check=True)
    try:
        network = ServiceNetwork("10.213.0.11", command_prefix=("nsenter", f"--net=/run/netns/{NAMESPACE}"))
        network.service_cidr = "10.96.0.0/16"
        table = routes(options.services, options.endpoints)
        start = time.perf_counter()
        network.sync(table, 1)
        full = time.perf_counter() - start
        changes = []
        for change in range(options.changes):
            victim = table[change * 7 % len(table)]
            victim.endpoints[0].port = 20000 + change  # one endpoint replaced by a new one
            start = time.perf_counter()
            network.sync(table, 2 + change)
            changes.append(time.perf_counter() - start)
        rules_count = subprocess.run(
            ["nsenter", f"--net=/run/netns/{NAMESPACE}", "iptables-save", "-t", "nat"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.count("\n-A ")
    finally:
        subprocess.run(["ip", "netns", "delete", NAMESPACE], capture_output=True)
    iptables = subprocess.run(["iptables", "--version"], capture_output=True, text=True).stdout.strip()
    print(f"machine: {platform.machine()}, {iptables}")
    print(f"size: {options.services} services x {options.endpoints} endpoints = {rules_count} nat rules")
    print(f"full sync from empty: {full:.2f} s")
    print(
        f"one endpoint change: median {statistics.median(changes) * 1000:.0f} ms, "
        f"max {max(changes) * 1000:.0f} ms over {len(changes)} changes"
    )


if __name__ == "__main__":
    main()
