"""Crash loops back off, against a real control plane with hollow agents (no Docker).

Every hollow task exits at once with code 1 (`--exit-after 0 --exit-code 1`),
and tasks of the image `missing:1` fail to start (`--fail-image`), so one
service is an exit loop and the other a pull failure. Without backoff each
would create hundreds of tasks a minute; with it, the schedule (at once, then
5, 10, 20, 40 s...) allows six attempts in the first two minutes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from berth.testing.cli import Berth, id_of
from berth.testing.daemons import ControlPlaneProcess, HollowAgentsProcess, JoinFlags
from berth.testing.waiting import wait_until

CLUSTER = "loops"
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
        ["--exit-after", "0", "--exit-code", "1", "--fail-image", "missing:1"],
        join=JoinFlags.of(plane),
    )
    process.start()
    try:
        yield process
    finally:
        process.stop(timeout=15)


def _service(berth: Berth, tmp_path: Path, name: str, image: str) -> None:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps([{"name": name, "image": image, "memory": 16}]))
    berth.ok("taskdef", "register", "--family", name, "--container-definitions", f"file://{path}")
    berth.ok(
        "service",
        "create",
        "--cluster",
        CLUSTER,
        "--name",
        name,
        "--task-definition",
        name,
        "--desired-count",
        "1",
    )


def _describe(berth: Berth, name: str) -> dict[str, Any]:
    description: dict[str, Any] = berth.ok(
        "service", "describe", name, "--cluster", CLUSTER, "-o", "json"
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
    plane: ControlPlaneProcess, hollow: HollowAgentsProcess, tmp_path: Path
) -> None:
    berth = Berth.of(plane)
    wait_until(lambda: berth.nodes_exactly(2), 15, "2 hollow nodes")
    berth.ok("cluster", "create", CLUSTER)
    _service(berth, tmp_path, "crash", "anything:1")
    _service(berth, tmp_path, "nopull", "missing:1")

    seen: dict[str, set[str]] = {"crash": set(), "nopull": set()}
    deadline = time.monotonic() + OBSERVE_SECONDS
    while time.monotonic() < deadline:
        for name, ids in seen.items():
            ids.update(id_of(t) for t in berth.tasks(CLUSTER, name))
            messages = _messages(_describe(berth, name))
            assert not any("steady state" in m for m in messages), (
                f"{name} said steady while failing: {messages}"
            )
        time.sleep(1)
    counts = {name: len(ids) for name, ids in seen.items()}
    print(f"tasks created in {OBSERVE_SECONDS} s: {counts}")
    for name, count in counts.items():
        assert 3 <= count <= MAX_TASKS, f"{name}: {count} tasks in {OBSERVE_SECONDS} s"

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
    tasks_before = {id_of(t) for t in berth.tasks(CLUSTER, "crash")}
    plane.kill9()
    plane.restart()
    wait_until(lambda: berth.nodes_exactly(2), 20, "nodes after restart")
    # Until the stored next attempt, the new leader starts nothing.
    while time.time() < next_attempt - 1:
        now = {id_of(t) for t in berth.tasks(CLUSTER, "crash")}
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
