"""History that lasts, against a real control plane with hollow agents (no Docker).

`berth task run --wait` exits with the task's exit code; service events and
stopped tasks survive a kill -9 of the control plane; the retention purges
stopped tasks afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from berth.testing.cli import Berth, exit_code_of, id_of
from berth.testing.daemons import ControlPlaneProcess, HollowAgentsProcess, JoinFlags
from berth.testing.waiting import wait_until

# Long enough to outlive a kill -9 and restart, short enough to wait out.
RETENTION = 15


@pytest.fixture()
def plane(tmp_path: Path) -> Iterator[ControlPlaneProcess]:
    process = ControlPlaneProcess(tmp_path / "cp", ["--stopped-task-retention", str(RETENTION)])
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture()
def berth(plane: ControlPlaneProcess, tmp_path: Path) -> Iterator[Berth]:
    """The CLI, with one hollow host whose tasks exit with 7 after a second, and a task definition `job`."""
    hollow = HollowAgentsProcess(
        tmp_path / "hollow.log",
        plane.address,
        1,
        ["--exit-after", "1", "--exit-code", "7"],
        join=JoinFlags.of(plane),
    )
    hollow.start()
    try:
        cli = Berth.of(plane)
        wait_until(lambda: cli.nodes_exactly(1), 15, "1 hollow node")
        cli.register("job", [{"name": "job", "image": "anything:1", "memory": 16}], tmp_path)
        yield cli
    finally:
        hollow.stop(timeout=15)


def test_run_wait_exits_with_the_tasks_exit_code(berth: Berth) -> None:
    result = berth("task", "run", "--task-definition", "job", "--wait", "--timeout", "30")

    assert result.exit_code == 7, result.stdout + result.stderr
    task_id, outcome = result.stdout.strip().splitlines()
    assert outcome == (
        f"task {task_id} stopped: EssentialContainerExited: Essential container in task exited; exit code 7"
    )


def test_run_wait_gives_up_after_the_timeout_with_a_clear_message(berth: Berth, tmp_path: Path) -> None:
    path = tmp_path / "huge.json"
    path.write_text(json.dumps([{"name": "huge", "image": "anything:1", "memory": 1_000_000}]))
    berth.ok("taskdef", "register", "--family", "huge", "--container-definitions", f"file://{path}")

    result = berth("task", "run", "--task-definition", "huge", "--wait", "--timeout", "2")

    assert result.exit_code == 1
    assert "is still PENDING after 2s" in result.stderr
    assert "waiting to be placed" in result.stderr, "it says why it is not placed"
    assert berth("task", "run", "--task-definition", "job", "--timeout", "2").exit_code == 1, (
        "--timeout without --wait is refused"
    )


def _stopped(berth: Berth) -> dict[str, dict[str, Any]]:
    return {id_of(t): t for t in berth.tasks("default") if t["lastStatus"] == "STOPPED"}


def test_events_and_stopped_tasks_survive_a_restart_and_the_retention_purges_tasks(
    plane: ControlPlaneProcess, berth: Berth
) -> None:
    berth.ok("service", "create", "--name", "web", "--task-definition", "job", "--desired-count", "1")
    wait_until(lambda: len(berth.tasks("default", "web")) >= 2, 20, "a service task stopped and replaced")
    berth.ok("service", "update", "web", "--desired-count", "0")
    assert berth("task", "run", "--task-definition", "job", "--wait", "--timeout", "30").exit_code == 7
    wait_until(
        lambda: all(t["lastStatus"] == "STOPPED" for t in berth.tasks("default")), 20, "every task stopped"
    )
    events_before = berth.ok("service", "events", "web", "-o", "json").json()["events"]
    stopped_before = _stopped(berth)
    assert len(events_before) >= 2 and len(stopped_before) >= 2
    table = berth.ok("service", "events", "web", "--limit", "1").stdout
    assert events_before[0]["message"] in table and "Z" in table, "newest first, with a UTC time"

    plane.kill9()
    plane.restart()

    events_after = berth.ok("service", "events", "web", "-o", "json").json()["events"]
    assert events_after[len(events_after) - len(events_before) :] == events_before, "no event was lost"
    stopped_after = _stopped(berth)
    for task_id, task in stopped_before.items():
        kept = stopped_after.get(task_id)
        assert kept is not None, f"stopped task {task_id} was lost in the restart"
        assert (exit_code_of(kept), kept.get("stopCode"), kept["stoppedReason"]) == (
            exit_code_of(task),
            task.get("stopCode"),
            task["stoppedReason"],
        )
    assert any(exit_code_of(t) == 7 for t in stopped_after.values()), "the run task's exit code is kept"

    _, seconds = wait_until(
        lambda: not (set(stopped_before) & set(_stopped(berth))), RETENTION + 45, "the stopped tasks purged"
    )
    print(f"stopped tasks purged {seconds:.1f}s after the restart (retention {RETENTION}s)")
    assert berth.ok("service", "events", "web", "-o", "json").json()["events"][-len(events_before) :] == (
        events_before
    ), "events are bounded by count, not purged with the tasks"
