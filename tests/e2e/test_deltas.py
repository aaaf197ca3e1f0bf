"""Desired state as deltas, end to end on hollow agents: an endpoint change goes down as a delta,
and a delta lost on the way (hollow agents' SIGUSR1) is noticed at the next one and healed by a
full snapshot the agent asks for."""

from __future__ import annotations

import re
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from berth.testing.cli import Berth
from berth.testing.daemons import ControlPlaneProcess, HollowAgentsProcess, JoinFlags, free_port
from berth.testing.waiting import wait_until

WEB = [{"name": "web", "image": "anything:1", "memory": 16, "portMappings": [{"containerPort": 8080}]}]
BALLAST = 10  # services with a VIP and no task: a route table for a delta to be smaller than


def metric(port: int, name: str, kind: str = "") -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    labels = f'{{kind="{kind}"}}' if kind else ""
    match = re.search(rf"^{re.escape(name + labels)} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


@pytest.fixture()
def cluster(tmp_path: Path) -> Iterator[tuple[ControlPlaneProcess, HollowAgentsProcess, int]]:
    metrics_port = free_port()
    plane = ControlPlaneProcess(tmp_path / "cp", ["--metrics-listen", f"127.0.0.1:{metrics_port}"])
    plane.start()
    hollow = HollowAgentsProcess(tmp_path / "hollow.log", plane.address, 2, join=JoinFlags.of(plane))
    try:
        hollow.start()
        yield plane, hollow, metrics_port
    finally:
        hollow.stop(timeout=15)
        plane.stop()


def test_an_endpoint_change_goes_down_as_a_delta_and_a_lost_delta_is_healed_by_a_resync(
    cluster: tuple[ControlPlaneProcess, HollowAgentsProcess, int], tmp_path: Path
) -> None:
    plane, hollow, port = cluster
    berth = Berth.of(plane)
    wait_until(lambda: berth.nodes_exactly(2), 20, "2 hollow nodes")
    berth.register("web", WEB, tmp_path)
    for index in range(BALLAST):
        berth.ok("service", "create", "--name", f"idle{index}", "--task-definition", "web",
                 "--desired-count", "0", "--port", "80:8080")  # fmt: skip
    berth.ok("service", "create", "--name", "web", "--task-definition", "web",
             "--desired-count", "1", "--port", "80:8080")  # fmt: skip

    def endpoints(count: int) -> bool:
        rows = berth.ok("service", "endpoints", "web", "-o", "json").json()["endpoints"]
        return len(rows) == count

    wait_until(lambda: endpoints(1), 20, "web's first endpoint")
    snapshots = metric(port, "berth_desired_messages_total", "snapshot")
    deltas = metric(port, "berth_desired_messages_total", "delta")
    assert snapshots >= 2, "each stream starts with a full snapshot"

    # One endpoint more: every agent hears of it as a delta, no snapshot goes again.
    berth.ok("service", "update", "web", "--desired-count", "2")
    wait_until(lambda: endpoints(2), 20, "web's second endpoint")
    assert metric(port, "berth_desired_messages_total", "delta") >= deltas + 2
    assert metric(port, "berth_desired_messages_total", "snapshot") == snapshots
    per_delta = metric(port, "berth_desired_bytes_total", "delta") / metric(
        port, "berth_desired_messages_total", "delta"
    )
    print(f"{per_delta:.0f} bytes per delta with {BALLAST + 1} routes in the table")

    def settled() -> bool:
        before = metric(port, "berth_desired_messages_total", "delta")
        time.sleep(1)
        return metric(port, "berth_desired_messages_total", "delta") == before

    wait_until(settled, 20, "no delta for a second")
    # Each node drops the next delta it gets: the third task's assignment is lost on its node,
    # which keeps running what it has; the next delta (a new route) meets the gap there.
    assert hollow.process is not None
    hollow.process.send_signal(signal.SIGUSR1)
    wait_until(lambda: "hollow_delta_loss_armed" in hollow.log_tail(200), 10, "the loss armed")
    berth.ok("service", "update", "web", "--desired-count", "3")
    wait_until(lambda: "event=desired_delta_lost" in hollow.log_tail(200), 20, "a delta lost")
    assert not endpoints(3)
    berth.ok("service", "create", "--name", "late", "--task-definition", "web",
             "--desired-count", "0", "--port", "81:8080")  # fmt: skip
    wait_until(lambda: endpoints(3), 30, "the third endpoint, after a resync")
    assert "event=desired_gap" in hollow.log_tail(400)
    assert "event=agent_resync" in plane.log_tail(2000)
    assert metric(port, "berth_desired_resyncs_total") >= 1
    assert metric(port, "berth_desired_messages_total", "snapshot") > snapshots
