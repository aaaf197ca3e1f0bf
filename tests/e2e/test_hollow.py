"""Hollow agents against a real control plane: `--exit-after` scripts task exits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from berth.testing.cli import Berth, exit_code_of
from berth.testing.daemons import ControlPlaneProcess, HollowAgentsProcess, JoinFlags
from berth.testing.waiting import wait_until


def test_exit_after_stops_tasks_with_the_scripted_exit_code(
    plane: ControlPlaneProcess, tmp_path: Path
) -> None:
    hollow = HollowAgentsProcess(
        tmp_path / "hollow.log",
        plane.address,
        1,
        ["--exit-after", "1", "--exit-code", "7"],
        join=JoinFlags.of(plane),
    )
    hollow.start()
    try:
        berth = Berth.of(plane)
        wait_until(lambda: berth.nodes_exactly(1), 15, "1 hollow node")
        berth.register("job", [{"name": "job", "image": "anything:1", "memory": 16}], tmp_path)
        task_id = berth.ok("task", "run", "--task-definition", "job").stdout.strip()

        def stopped() -> dict[str, Any] | None:
            task: dict[str, Any] = berth.ok("task", "describe", task_id, "-o", "json").json()
            return task if task["lastStatus"] == "STOPPED" else None

        task, seconds = wait_until(stopped, 15, "the hollow task to exit")
        print(f"hollow task STOPPED {seconds:.2f}s after it was run (--exit-after 1)")
        assert exit_code_of(task) == 7
        assert task["stopCode"] == "EssentialContainerExited"
        assert seconds >= 1, "it ran for --exit-after seconds first"
    finally:
        assert hollow.stop(timeout=15) is not None


def test_unhealthy_after_gets_service_tasks_replaced(plane: ControlPlaneProcess, tmp_path: Path) -> None:
    hollow = HollowAgentsProcess(
        tmp_path / "hollow.log",
        plane.address,
        1,
        ["--healthy-after", "0.2", "--unhealthy-after", "2"],
        join=JoinFlags.of(plane),
    )
    hollow.start()
    try:
        berth = Berth.of(plane)
        wait_until(lambda: berth.nodes_exactly(1), 15, "1 hollow node")
        check = {"command": ["CMD", "/bin/true"], "interval": 5}
        path = tmp_path / "web.json"
        path.write_text(
            json.dumps([{"name": "web", "image": "anything:1", "memory": 16, "healthCheck": check}])
        )
        berth.ok("taskdef", "register", "--family", "web", "--container-definitions", f"file://{path}")
        berth.ok("service", "create", "--name", "web", "--task-definition", "web", "--desired-count", "1")

        def health_of_the_first() -> str | None:
            tasks = berth.tasks("default", "web")
            return str(tasks[0].get("healthStatus")) if len(tasks) == 1 else None

        wait_until(lambda: health_of_the_first() == "HEALTHY", 15, "the first task HEALTHY")

        def replaced() -> list[dict[str, Any]] | None:
            tasks = berth.tasks("default", "web")
            unhealthy = [t for t in tasks if t.get("healthStatus") == "UNHEALTHY"]
            stopped = [t for t in unhealthy if t["desiredStatus"] == "STOPPED"]
            return tasks if stopped and len(tasks) >= 2 else None

        tasks, _ = wait_until(replaced, 15, "the unhealthy task stopped and a replacement started")
        stopped = next(t for t in tasks if t.get("healthStatus") == "UNHEALTHY")
        assert stopped["stoppedReason"] == "Task failed container health checks"
        events = berth.ok("service", "describe", "web").stdout
        assert "failed its health check and was replaced" in events
        berth.ok("service", "update", "web", "--desired-count", "0")
    finally:
        assert hollow.stop(timeout=15) is not None
