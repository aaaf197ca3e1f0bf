"""Hollow agents against a real control plane: `--exit-after` scripts task exits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from berth.testing.cli import Berth
from berth.testing.daemons import ControlPlaneProcess, HollowAgentsProcess
from berth.testing.waiting import wait_until


def test_exit_after_stops_tasks_with_the_scripted_exit_code(
    plane: ControlPlaneProcess, tmp_path: Path
) -> None:
    hollow = HollowAgentsProcess(
        tmp_path / "hollow.log", plane.address, 1, ["--exit-after", "1", "--exit-code", "7"]
    )
    hollow.start()
    try:
        berth = Berth(plane.address)
        wait_until(
            lambda: len(berth.ok("node", "list", "-o", "json").json()["nodes"]) == 1, 15, "1 hollow node"
        )
        path = tmp_path / "job.json"
        path.write_text(json.dumps([{"name": "job", "image": "anything:1", "memory": 16}]))
        berth.ok("taskdef", "register", "--family", "job", "--container-definitions", f"file://{path}")
        task_id = berth.ok("task", "run", "--task-definition", "job").stdout.strip()

        def stopped() -> dict[str, Any] | None:
            task: dict[str, Any] = berth.ok("task", "describe", task_id, "-o", "json").json()
            return task if task["lastStatus"] == "STOPPED" else None

        task, seconds = wait_until(stopped, 15, "the hollow task to exit")
        print(f"hollow task STOPPED {seconds:.2f}s after it was run (--exit-after 1)")
        assert task["exitCode"] == 7
        assert task["stopCode"] == "ESSENTIAL_CONTAINER_EXITED"
        assert seconds >= 1, "it ran for --exit-after seconds first"
    finally:
        assert hollow.stop(timeout=15) is not None
