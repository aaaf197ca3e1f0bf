"""`berth service update --wait` and `berth service wait` against a real control
plane with hollow agents (no Docker): the exit code a CI pipeline trusts, and a
wait that rides out a control-plane restart.

Hollow tasks of the image `broken:1` fail to start (`--fail-image`), and
containers with a health check turn healthy only after ten minutes
(`--healthy-after 600`), so a revision with a health check is a deployment
held IN_PROGRESS for as long as a test needs.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from berth.testing.cli import Berth, definition_of
from berth.testing.daemons import ControlPlaneProcess, HollowAgentsProcess, JoinFlags
from berth.testing.waiting import wait_until

DESIRED = 3
# Generous bounds: a rollout of 3 hollow tasks takes seconds; a failed one needs
# the circuit breaker's 3 failures, then the rollback.
ROLLOUT_TIMEOUT = 120


@pytest.fixture()
def berth(plane: ControlPlaneProcess, tmp_path: Path) -> Iterator[Berth]:
    hollow = HollowAgentsProcess(
        tmp_path / "hollow.log",
        plane.address,
        3,
        ["--fail-image", "broken:1", "--healthy-after", "600"],
        join=JoinFlags.of(plane),
    )
    hollow.start()
    try:
        client = Berth.of(plane)
        wait_until(lambda: client.nodes_exactly(3), 20, "3 hollow nodes")
        yield client
    finally:
        hollow.stop(timeout=15)


def _register(berth: Berth, tmp_path: Path, image: str, health_check: bool = False) -> None:
    container: dict[str, Any] = {"name": "web", "image": image, "memory": 16}
    if health_check:
        container["healthCheck"] = {"command": ["CMD", "/bin/true"], "interval": 5}
    berth.register("web", [container], tmp_path)


def _steady_service(berth: Berth, tmp_path: Path) -> None:
    """Service web on web:1 with 3 tasks, waited for with `service wait` (which exits 0)."""
    _register(berth, tmp_path, "web:1")
    berth.ok(
        "service", "create", "--name", "web", "--task-definition", "web:1",
        "--desired-count", str(DESIRED), "--deregistration-delay", "0",
    )  # fmt: skip
    waited = berth("service", "wait", "web", "--timeout", str(ROLLOUT_TIMEOUT))
    assert waited.exit_code == 0, waited.stdout + waited.stderr
    assert "completed: web:1" in waited.stdout


def _deployments(berth: Berth) -> list[dict[str, Any]]:
    described = berth.ok("service", "describe", "web", "-o", "json").json()
    deployments: list[dict[str, Any]] = described["deployments"]
    return deployments


def test_update_to_a_good_revision_waits_for_it_and_exits_0(berth: Berth, tmp_path: Path) -> None:
    _steady_service(berth, tmp_path)
    _register(berth, tmp_path, "web:2")

    result = berth("service", "update", "web", "--task-definition", "web:2", "--wait", "--timeout", "120")

    assert result.exit_code == 0, result.stdout + result.stderr
    print(result.stdout)
    assert "PRIMARY IN_PROGRESS" in result.stdout, "plain progress lines were printed (no terminal here)"
    assert result.stdout.strip().splitlines()[-1].endswith(f"completed: web:2, {DESIRED} tasks healthy")
    primary = _deployments(berth)[0]
    assert (definition_of(primary["taskDefinition"]), primary["status"], primary["rolloutState"]) == (
        "web:2",
        "PRIMARY",
        "COMPLETED",
    )
    running = berth.running("default", "web")
    assert len(running) == DESIRED and {definition_of(t) for t in running} == {"web:2"}
    described = berth.ok("service", "describe", "web").stdout
    assert "deployment configuration: min healthy 100%, max 200%" in described
    assert "PRIMARY  web:2  COMPLETED" in described


def test_a_revision_that_fails_to_start_is_rolled_back_and_wait_exits_1(berth: Berth, tmp_path: Path) -> None:
    _steady_service(berth, tmp_path)
    _register(berth, tmp_path, "broken:1")

    result = berth("service", "update", "web", "--task-definition", "web:2", "--wait", "--timeout", "120")

    print(result.stdout, result.stderr)
    assert result.exit_code == 1, "a rollback is a failure, never a success"
    first = result.stderr.strip().splitlines()[0]
    assert first.startswith("error: deployment 2 failed"), first
    assert "back to deployment 1 (web:1)" in first
    assert "3 tasks failed (threshold 3)" in first, "the circuit breaker's reason is printed"
    described = berth.ok("service", "describe", "web").stdout
    assert "PRIMARY  web:1" in described and "rollback from FAILED deployment 2" in described, described
    assert "events since the deployment began" in result.stderr
    assert "steady state" not in result.stdout, "nothing on stdout reads as success"
    # `service wait` on the failed deployment says the same, at once.
    again = berth("service", "wait", "web", "--deployment", "2", "--timeout", "30")
    assert again.exit_code == 1
    assert "error: deployment 2 failed" in again.stderr


def test_wait_gives_up_with_124_on_a_held_deployment_and_1_for_a_superseded_one(
    berth: Berth, tmp_path: Path
) -> None:
    _steady_service(berth, tmp_path)
    _register(berth, tmp_path, "web:2", health_check=True)  # never healthy within the test
    berth.ok("service", "update", "web", "--task-definition", "web:2")

    held = berth("service", "wait", "web", "--timeout", "3")

    assert held.exit_code == 124, held.stdout + held.stderr
    assert "error: deployment 2 did not finish within 3s" in held.stderr
    assert _deployments(berth)[0]["rolloutState"] == "IN_PROGRESS", "a timeout leaves the deployment alone"
    superseded = berth("service", "wait", "web", "--deployment", "1", "--timeout", "30")
    assert superseded.exit_code == 1
    assert "deployment 1 was superseded by deployment 2 (web:2)" in superseded.stderr


def test_wait_rides_out_a_control_plane_restart(plane: ControlPlaneProcess, tmp_path: Path) -> None:
    # Health checks pass 8 s after a task starts: long enough to kill and restart the control plane
    # while the deployment waits for health.
    hollow = HollowAgentsProcess(
        tmp_path / "hollow.log", plane.address, 3, ["--healthy-after", "8"], join=JoinFlags.of(plane)
    )
    hollow.start()
    try:
        berth = Berth.of(plane)
        wait_until(lambda: berth.nodes_exactly(3), 20, "3 hollow nodes")
        _steady_service(berth, tmp_path)
        _register(berth, tmp_path, "web:2", health_check=True)
        berth.ok("service", "update", "web", "--task-definition", "web:2")
        # A process of its own: the in-process runner swaps sys.stdout, so it cannot run in a thread.
        cli = [
            sys.executable,
            "-m",
            "berth.cli.main",
            "--server",
            plane.address,
            "--config",
            str(plane.admin_config),
        ]
        waiter = subprocess.Popen(
            [*cli, "service", "wait", "web", "--timeout", str(ROLLOUT_TIMEOUT)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            time.sleep(2)  # the waiter has looked at least once
            plane.kill9()
            time.sleep(2)  # it looks at least once more while nothing answers
            plane.restart()
            out, err = waiter.communicate(timeout=ROLLOUT_TIMEOUT + 30)
        finally:
            if waiter.poll() is None:
                waiter.kill()
                waiter.wait(10)
        print(out, err)
        assert waiter.returncode == 0, out + err
        assert "the control plane is unreachable (restarting?); still waiting" in out
        assert "the control plane is reachable again" in out
        assert out.strip().splitlines()[-1] == f"deployment 2 completed: web:2, {DESIRED} tasks healthy"
    finally:
        hollow.stop(timeout=15)
