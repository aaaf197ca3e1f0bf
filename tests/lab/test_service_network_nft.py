"""The lab on the nftables backend: VIPs and load-balancer ports across hosts that run Docker.

The rest of the lab runs its agents with `--netfilter iptables` (its tests read iptables-save);
here every agent chooses nftables, next to each host's Docker and its iptables rules (FORWARD
policy DROP), and the same traffic must flow: a VIP from a container reaches the backends on
every host, every host's load-balancer port answers (forwarded to other hosts too), and an
endpoint change reaches every host's table.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from berth.testing.cli import Berth, id_of
from berth.testing.lab import Lab, LabHost
from berth.testing.waiting import wait_until
from tests.lab.conftest import delete_services, running_lab
from tests.lab.test_service_network import HTTP, client, create, endpoint_set, http_get


@pytest.fixture(scope="module")
def lab(test_image: str) -> Iterator[Lab]:
    yield from running_lab("nftables")


def berth_table(host: LabHost) -> str:
    result = subprocess.run(
        [*host.nsenter(), "nft", "list", "table", "ip", "berth"], capture_output=True, text=True, check=False
    )
    return result.stdout if result.returncode == 0 else ""


def nft_targets(host: LabHost, vip: str, port: int) -> set[str]:
    """The endpoints host's table sends VIP:port to (elements of its backends map)."""
    pattern = rf"{re.escape(vip)} \. {port} \. \d+ : ([\d.]+) \. (\d+)"
    return {f"{address}:{target}" for address, target in re.findall(pattern, berth_table(host))}


def test_vips_and_load_balancer_ports_work_across_hosts_on_nftables(
    berth: Berth, lab: Lab, tmp_path: Path
) -> None:
    for host in lab.hosts:

        def programmed(host: LabHost = host) -> bool:
            return "chain prerouting" in berth_table(host)

        wait_until(programmed, 20, f"{host.name}'s table")
        saved = subprocess.run(
            [*host.nsenter(), "iptables-save", "-t", "nat"], capture_output=True, text=True
        )
        assert "BERTH-" not in saved.stdout, "only one backend programs VIPs"
    try:
        vip = create(berth, tmp_path, "web", HTTP, "80:http", 3)
        berth.ok("service", "expose", "web", "--type", "LoadBalancer", "--port", "8081:80")
        expected = endpoint_set(berth, "web")
        wait_until(
            lambda: all(nft_targets(h, vip, 80) == expected for h in lab.hosts), 20, "every host's table"
        )
        backends = {c.id[:12] for h in lab.hosts for c in lab.agents[h.name].containers()}
        assert set(client(lab, "; ".join([http_get(vip, 80)] * 30)).split()) == backends
        for host in lab.hosts:
            # Each host forwards to backends on the others through Docker's FORWARD (policy DROP).
            answers = set(client(lab, "; ".join([http_get(host.address, 8081)] * 12)).split())
            assert answers and answers <= backends, f"{host.name}: {answers!r}"

        berth.ok("task", "stop", id_of(berth.running("default", "web")[0]))
        wait_until(
            lambda: (
                (now := endpoint_set(berth, "web")) != expected
                and len(now) == 3
                and all(nft_targets(h, vip, 80) == now for h in lab.hosts)
            ),
            30,
            "the replacement in every host's table",
        )
    finally:
        delete_services(berth, ["web"])
    wait_until(
        lambda: all(not nft_targets(h, vip, 80) for h in lab.hosts), 20, "the VIP gone from every table"
    )
