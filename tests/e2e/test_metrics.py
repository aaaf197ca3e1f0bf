"""Both daemons expose Prometheus metrics that move with what they do."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from berth.testing.cli import Berth
from berth.testing.daemons import REPO, AgentProcess, ControlPlaneProcess, JoinFlags, free_port
from berth.testing.waiting import wait_until


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text: str = response.read().decode()
    return text


def value(text: str, name: str) -> float:
    """The metric's value; a metric that is not exposed at all fails (it never reads as 0)."""
    match = re.search(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.MULTILINE)
    assert match is not None, f"metric {name} is not exposed"
    return float(match.group(1))


@pytest.fixture()
def daemons(tmp_path: Path, test_image: str) -> Iterator[tuple[ControlPlaneProcess, AgentProcess, int, int]]:
    cp_port, agent_port = free_port(), free_port()
    plane = ControlPlaneProcess(tmp_path / "cp", ["--metrics-listen", f"127.0.0.1:{cp_port}"])
    plane.start()
    agent = AgentProcess(
        tmp_path / "agent",
        plane.address,
        ["--no-service-network", "--metrics-listen", f"127.0.0.1:{agent_port}"],
        join=JoinFlags.of(plane),
    )
    agent.start()
    agent.wait_registered()
    try:
        yield plane, agent, cp_port, agent_port
    finally:
        agent.stop()
        agent.remove_containers()
        plane.stop()


def test_metrics_follow_placements_and_starts(
    daemons: tuple[ControlPlaneProcess, AgentProcess, int, int],
) -> None:
    plane, _agent, cp_port, agent_port = daemons
    berth = Berth.of(plane)
    berth.ok(
        "taskdef",
        "register",
        "--family",
        "m",
        "--container-definitions",
        f"file://{REPO / 'examples' / 'web.json'}",
    )
    berth.ok("service", "create", "--name", "m", "--task-definition", "m", "--desired-count", "2")
    wait_until(lambda: berth.running_exactly("default", 2), 15, "2 RUNNING")
    wait_until(lambda: value(scrape(cp_port), "berth_placements_total") >= 2, 10, "placements counted")
    with pytest.raises(AssertionError, match="not exposed"):
        value(scrape(cp_port), "berth_no_such_metric_total")
    control = scrape(cp_port)
    assert value(control, "berth_leader") == 1
    assert value(control, "berth_agents_connected") == 1
    assert value(control, "berth_agent_streams") == 1
    assert value(control, "berth_task_recovery_seconds_count") == 0  # nothing failed
    assert value(control, "berth_task_status_reports_total") >= 2
    assert "berth_reconcile_seconds_bucket" in control
    agent = scrape(agent_port)
    assert value(agent, "berth_agent_tasks_started_total") == 2
    assert value(agent, "berth_agent_tasks") == 2
    berth.ok("service", "delete", "m")
