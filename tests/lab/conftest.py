"""The multi-host lab as a fixture: 3 real hosts (netns + dockerd + agent) and a control plane."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from berth.testing.cli import Berth
from berth.testing.lab import BRIDGE_ADDRESS, Lab
from berth.testing.waiting import wait_until

GRACE = 3.0
# Explicit capacity, so placement does not depend on this machine's cores and memory.
CPU_UNITS = 2048
MEMORY_MIB = 4096
# Names that are not Berth's go to a resolver the tests run on the lab's bridge,
# never to this machine's (possibly outside) resolver.
UPSTREAM_DNS = (BRIDGE_ADDRESS, 5354)


def agent_args(netfilter: str) -> tuple[str, ...]:
    """The lab agents' arguments, with the netfilter backend (--netfilter) they use."""
    return (
        "--cpu-units",
        str(CPU_UNITS),
        "--memory-mib",
        str(MEMORY_MIB),
        "--dns-upstream",
        f"{UPSTREAM_DNS[0]}:{UPSTREAM_DNS[1]}",
        # The tests ask each host's DNS from the lab's bridge, outside the host's own networks.
        "--dns-allow",
        f"{BRIDGE_ADDRESS}/32",
        "--netfilter",
        netfilter,
    )


def running_lab(netfilter: str) -> Iterator[Lab]:
    lab = Lab(3, controlplane_args=("--node-grace", str(GRACE)), agent_args=agent_args(netfilter))
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


@pytest.fixture(scope="module")
def lab(test_image: str) -> Iterator[Lab]:
    # The lab's service-network tests read iptables-save; test_service_network_nft.py runs
    # the lab on the nftables backend.
    yield from running_lab("iptables")


@pytest.fixture(scope="module")
def berth(lab: Lab) -> Berth:
    return Berth.of(lab.controlplane)


def delete_services(berth: Berth, names: list[str]) -> None:
    """Delete the services a test created and wait until each is gone (its tasks stopped)."""
    for name in names:
        berth("service", "delete", name)
    for name in names:

        def gone(name: str = name) -> bool:
            return berth("service", "describe", name).exit_code != 0

        wait_until(gone, 30, f"service {name} deleted")
