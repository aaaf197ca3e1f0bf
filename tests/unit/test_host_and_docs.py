"""The agent's default address and what the lab prints, against README."""

from __future__ import annotations

from pathlib import Path

from agent import host
from agent.dns import split_upstream
from berth.testing.daemons import REPO
from berth.testing.lab import instructions
from tests.e2e.test_quickstart import readme_blocks

HEADER = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"


def test_default_route_interface_is_read_from_the_route_table(tmp_path: Path) -> None:
    table = tmp_path / "route"
    table.write_text(
        HEADER
        + "docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n"
        + "wlan0\t00000000\t010200C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n"
        + "eth0\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
        + "eth1\t00000000\t010200C0\t0002\t0\t0\t0\t00000000\t0\t0\t0\n"  # not up
    )
    assert host.default_route_interface(table) == "eth0"
    table.write_text(HEADER + "docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n")
    assert host.default_route_interface(table) is None
    assert host.default_route_interface(tmp_path / "missing") is None


def test_default_address_is_never_loopback_when_the_host_has_another() -> None:
    assert not host.default_address().startswith("127.")


def test_dns_upstream_takes_an_optional_port() -> None:
    assert split_upstream("10.213.0.1:5353") == ("10.213.0.1", 5353)
    assert split_upstream("10.0.0.2") == ("10.0.0.2", 53)


def test_the_lab_prints_the_commands_readme_uses() -> None:
    printed = instructions("10.213.0.1:41000", Path("/var/lib/berth-lab/controlplane-admin.conf"))
    readme = REPO.joinpath("README.md").read_text()
    lab_block = next(b for b in readme_blocks(readme) if "deploy/lab.sh up" in b.text)
    assert printed[0] == (
        "export BERTH_SERVER=10.213.0.1:41000 BERTH_CONFIG=/var/lib/berth-lab/controlplane-admin.conf"
    )
    assert "# prints: export BERTH_SERVER=10.213.0.1:PORT BERTH_CONFIG=PATH" in lab_block.text
    assert printed[1].endswith("bash deploy/lab.sh down") and "bash deploy/lab.sh down" in lab_block.text


def test_every_readme_block_that_is_not_run_says_why() -> None:
    blocks = readme_blocks(REPO.joinpath("README.md").read_text())
    assert len(blocks) >= 7
    assert [b for b in blocks if b.not_run is None], "some blocks run"
    assert all(b.not_run is None or len(b.not_run) > 10 for b in blocks)
