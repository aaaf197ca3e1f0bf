"""The rule builder's batches, hostile route tables included, checked by the real
`iptables-restore --test` inside a private network namespace this test creates and removes
(never the root namespace). Skipped without root, `ip` or `iptables-restore`."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings

from agent.netfilter import rules
from berth.v1 import agent_pb2 as agent_pb
from tests.unit.test_rules_hostile import CIDR, NODE, _quiet, existing_chains, tables

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0
    or not shutil.which("ip")
    or not shutil.which("iptables-restore")
    or not shutil.which("nsenter"),
    reason="needs root, ip, nsenter and iptables-restore for a private network namespace",
)


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
    name = f"berth-rules-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def restore_test(netns: str, text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["nsenter", f"--net=/run/netns/{netns}", "iptables-restore", "--noflush", "--test"],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_the_namespace_check_catches_a_bad_batch(netns: str) -> None:
    # What one agent-reported port of 70000 did to every host before the builder refused it.
    bad = "*nat\n:BERTH-X - [0:0]\n-A BERTH-X -p tcp -j DNAT --to-destination 10.0.0.1:70000\nCOMMIT\n"
    assert restore_test(netns, bad).returncode != 0


# Bounded: a few dozen batches, each one iptables-restore run.
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(table=tables, existing=existing_chains)
def test_iptables_restore_accepts_every_batch_the_builder_emits(
    netns: str, table: list[agent_pb.ServiceRoute], existing: list[str]
) -> None:
    with _quiet():
        text = rules.batch(rules.build(table, NODE, CIDR), existing)
    result = restore_test(netns, text)
    assert result.returncode == 0, (result.stderr, text)
