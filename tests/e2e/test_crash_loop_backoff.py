"""Crash loops back off, against a real control plane.

The exit loop runs on a real agent and Docker engine, in a cluster of its own:
its container (`sh -c "exit 1"` in the test image) is RUNNING for a moment
between the agent's two reports, which hollow agents hide, and a controller
pass in that moment must not complete the deployment nor call the service
steady (`controlplane/settling.py`). The pull failure runs on hollow agents:
tasks of the image `missing:1` fail to start (`--fail-image`). Without
backoff each would create hundreds of tasks a minute; with it, the schedule
(at once, then 5, 10, 20, 40 s...) allows six attempts in the first two minutes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from berth.testing.cli import Berth, id_of, node_of
from berth.testing.daemons import AgentProcess, ControlPlaneProcess, HollowAgentsProcess, JoinFlags
from berth.testing.waiting import wait_until
from controlplane.settling import SETTLE_SECONDS

CLUSTER = "loops"  # no nodes of its own: its tasks go to the default cluster's hollow nodes
DOCKER_CLUSTER = "crashes"  # the real agent's only
OBSERVE_SECONDS = 120
# Attempts at 0, 0, 5, 15, 35 and 75 s (the next at 155 s): 6 within two
# minutes, plus slack for siblings of one attempt; without backoff it would be
# hundreds. The first deployment's circuit breaker trips on the way (nothing
# to roll back to), and the backoff goes on pacing the service.
MAX_TASKS = 10


@pytest.fixture()
def plane(tmp_path: Path) -> Iterator[ControlPlaneProcess]:
    process = ControlPlaneProcess(tmp_path / "cp")
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture()
def hollow(plane: ControlPlaneProcess, tmp_path: Path) -> Iterator[HollowAgentsProcess]:
    process = HollowAgentsProcess(
        tmp_path / "hollow.log",
        plane.address,
        2,
        ["--fail-image", "missing:1"],
        join=JoinFlags.of(plane),
    )
    process.start()
    try:
        yield process
    finally:
        process.stop(timeout=15)


@pytest.fixture()
def docker_agent(plane: ControlPlaneProcess, tmp_path: Path, test_image: str) -> Iterator[AgentProcess]:
    Berth.of(plane).ok("cluster", "create", DOCKER_CLUSTER)
    process = AgentProcess(
        tmp_path / "agent",
        plane.address,
        ["--no-service-network"],
        join=JoinFlags.of(plane),
        cluster=DOCKER_CLUSTER,
    )
    process.start()
    process.wait_registered()
    try:
        yield process
    finally:
        process.stop()
        process.remove_containers()


def _service(
    berth: Berth, tmp_path: Path, name: str, container: dict[str, Any], cluster: str = CLUSTER
) -> None:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps([{"name": name, "memory": 16, **container}]))
    berth.ok("taskdef", "register", "--family", name, "--container-definitions", f"file://{path}")
    berth.ok(
        "service",
        "create",
        "--cluster",
        cluster,
        "--name",
        name,
        "--task-definition",
        name,
        "--desired-count",
        "1",
    )


CLUSTERS = {"crash": DOCKER_CLUSTER, "nopull": CLUSTER}


def _describe(berth: Berth, name: str) -> dict[str, Any]:
    description: dict[str, Any] = berth.ok(
        "service", "describe", name, "--cluster", CLUSTERS[name], "-o", "json"
    ).json()
    return description


def _messages(description: dict[str, Any]) -> list[str]:
    return [e["message"] for e in description.get("events", [])]


def _next_attempt_in(description: dict[str, Any]) -> float:
    stamp = description["berth"].get("backoff", {}).get("nextAttemptAt")
    if not stamp:
        return 0.0
    return float(stamp) - time.time()


@pytest.mark.timeout(420)
def test_crash_loops_back_off_say_so_and_survive_a_restart(
    plane: ControlPlaneProcess, hollow: HollowAgentsProcess, docker_agent: AgentProcess, tmp_path: Path
) -> None:
    berth = Berth.of(plane)
    wait_until(lambda: berth.nodes_exactly(3), 15, "2 hollow nodes and the Docker one")
    berth.ok("cluster", "create", CLUSTER)
    exit_at_once = {"image": "berth-busybox:2", "command": ["sh", "-c", "exit 1"]}
    _service(berth, tmp_path, "crash", exit_at_once, DOCKER_CLUSTER)
    _service(berth, tmp_path, "nopull", {"image": "missing:1"})

    seen: dict[str, dict[str, dict[str, Any]]] = {"crash": {}, "nopull": {}}
    deadline = time.monotonic() + OBSERVE_SECONDS
    while time.monotonic() < deadline:
        for name, tasks in seen.items():
            tasks.update((id_of(t), t) for t in berth.tasks(CLUSTERS[name], name))
            messages = _messages(_describe(berth, name))
            assert not any("steady state" in m for m in messages), (
                f"{name} said steady while failing: {messages}"
            )
        time.sleep(1)
    counts = {name: len(ids) for name, ids in seen.items()}
    print(f"tasks created in {OBSERVE_SECONDS} s: {counts}")
    for name, count in counts.items():
        assert 3 <= count <= MAX_TASKS, f"{name}: {count} tasks in {OBSERVE_SECONDS} s"
    crashed = list(seen["crash"].values())
    assert {node_of(t) for t in crashed} == {docker_agent.node_id}, "the exit loop ran on Docker"
    # How long a container that exits at once is RUNNING in the control plane's records (both
    # stamps are its clock): what SETTLE_SECONDS must stay well above.
    flashes = sorted(
        float(t["stoppedAt"]) - float(t["startedAt"])
        for t in crashed
        if "startedAt" in t and "stoppedAt" in t
    )
    print(f"RUNNING -> STOPPED of the exit loop's tasks (s): {[round(f, 3) for f in flashes]}")
    assert all(f < SETTLE_SECONDS for f in flashes), flashes

    crash = _describe(berth, "crash")
    assert any(
        "service crash is failing:" in m and "exited in a row (exit 1)" in m for m in _messages(crash)
    ), _messages(crash)
    nopull = _describe(berth, "nopull")
    assert any(
        "service nopull is failing:" in m and "failed to start in a row (CannotPullContainerError" in m
        for m in _messages(nopull)
    ), _messages(nopull)
    for description in (crash, nopull):
        assert description["deployments"][0]["rolloutState"] == "FAILED"

    # Restart safety: kill -9 the control plane while an attempt is far off.
    def far_off() -> dict[str, Any] | None:
        description = _describe(berth, "crash")
        return description if _next_attempt_in(description) >= 12 else None

    before, _ = wait_until(far_off, 90, "the crash service to wait 12 s or more", interval=0.5)
    attempts = before["berth"]["backoff"]["attempts"]
    next_attempt = float(before["berth"]["backoff"]["nextAttemptAt"])
    tasks_before = {id_of(t) for t in berth.tasks(DOCKER_CLUSTER, "crash")}
    plane.kill9()
    plane.restart()
    wait_until(lambda: berth.nodes_exactly(3), 20, "nodes after restart")
    # Until the stored next attempt, the new leader starts nothing.
    while time.time() < next_attempt - 1:
        now = {id_of(t) for t in berth.tasks(DOCKER_CLUSTER, "crash")}
        assert now <= tasks_before, (
            f"a task started {next_attempt - time.time():.1f} s before the next attempt"
        )
        assert _describe(berth, "crash")["berth"]["backoff"]["attempts"] >= attempts
        time.sleep(0.5)
    # Then exactly the schedule goes on: the next attempt fails and doubles the wait.
    after, _ = wait_until(
        lambda: d if (d := _describe(berth, "crash"))["berth"]["backoff"]["attempts"] > attempts else None,
        30,
        "the next attempt after the restart",
        interval=0.5,
    )
    assert not any("steady state" in m for m in _messages(after))
