"""Container ordering on the lab: an init container that must COMPLETE and a sidecar that must be
HEALTHY start before the app, which reads through a shared volume the file the init container
wrote. Checked on the engine of the host that runs the task (start, finish and health times)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import docker

from berth.testing.cli import Berth, node_of
from berth.testing.lab import Lab
from berth.testing.waiting import wait_until
from tests.lab.test_service_network import IMAGE

STAY = "trap 'exit 0' TERM; sleep 3600 & wait"
DOCUMENT = {
    "family": "ordered",
    "volumes": [{"name": "shared"}],
    "containerDefinitions": [
        {
            "name": "init",
            "image": IMAGE,
            "essential": False,
            "memory": 16,
            "entryPoint": ["sh", "-c"],
            # Slow on purpose: the app must wait for it, not merely start after it.
            "command": ["sleep 2; echo prepared-by-init > /data/config.txt"],
            "mountPoints": [{"sourceVolume": "shared", "containerPath": "/data"}],
        },
        {
            "name": "sidecar",
            "image": IMAGE,
            "essential": True,
            "memory": 16,
            "stopTimeout": 2,
            "entryPoint": ["sh", "-c"],
            # The lab's image has no /tmp of its own.
            "command": [f"sleep 1; mkdir -p /tmp && touch /tmp/ready; {STAY}"],
            "healthCheck": {"command": ["CMD-SHELL", "test -f /tmp/ready"], "interval": 5, "retries": 1},
        },
        {
            "name": "app",
            "image": IMAGE,
            "essential": True,
            "memory": 16,
            "stopTimeout": 2,
            "dependsOn": [
                {"containerName": "init", "condition": "COMPLETE"},
                {"containerName": "sidecar", "condition": "HEALTHY"},
            ],
            "entryPoint": ["sh", "-c"],
            "command": [f"mkdir -p /tmp && cat /data/config.txt > /tmp/seen; {STAY}"],
            "mountPoints": [{"sourceVolume": "shared", "containerPath": "/data", "readOnly": True}],
        },
    ],
}


def _time(text: str) -> datetime:
    """Docker's RFC 3339 time with nanoseconds, to microseconds."""
    head, _, rest = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{(rest + '000000')[:6]}+00:00")


def _running_task(berth: Berth, task_id: str) -> dict[str, Any] | None:
    task: dict[str, Any] = berth.ok("task", "describe", task_id, "-o", "json").json()
    return task if task["lastStatus"] == "RUNNING" else None


def test_init_and_sidecar_start_first_and_the_app_reads_the_shared_volume(
    berth: Berth, lab: Lab, tmp_path: Path
) -> None:
    path = tmp_path / "ordered.json"
    path.write_text(json.dumps(DOCUMENT))
    berth.ok("taskdef", "register", "--cli-input-json", f"file://{path}")
    task_id = berth.ok("task", "run", "--task-definition", "ordered").stdout.strip()
    try:
        task, _ = wait_until(lambda: _running_task(berth, task_id), 60, "the ordered task RUNNING")
        host = next(h for h in lab.hosts if lab.agents[h.name].node_id == node_of(task))
        engine = docker.DockerClient(base_url=host.docker_url)
        try:
            found = engine.containers.list(all=True, filters={"label": f"berth.task-id={task_id}"})
            containers = {c.labels["berth.container-name"]: c.attrs for c in found}
            init, sidecar, app = containers["init"], containers["sidecar"], containers["app"]

            # The init container ran to completion (exit 0) and the task still runs without it.
            assert init["State"]["Status"] == "exited" and init["State"]["ExitCode"] == 0
            assert app["State"]["Status"] == "running" and sidecar["State"]["Status"] == "running"
            app_started = _time(app["State"]["StartedAt"])
            assert _time(init["State"]["FinishedAt"]) <= app_started, "the app started before init completed"
            healthy_at = min(
                _time(check["End"]) for check in sidecar["State"]["Health"]["Log"] if check["ExitCode"] == 0
            )
            assert healthy_at <= app_started, "the app started before the sidecar was healthy"
            assert _time(sidecar["State"]["StartedAt"]) <= healthy_at

            # The file the init container wrote, read by the app through the shared volume,
            # which the app mounts read-only.
            app_container = engine.containers.get(app["Id"])
            code, seen = app_container.exec_run(["cat", "/tmp/seen"])
            assert (code, seen.decode().strip()) == (0, "prepared-by-init")
            code, output = app_container.exec_run(["touch", "/data/other"])
            assert code != 0 and b"Read-only file system" in output

            states = {c["name"]: c for c in task["containers"]}
            assert states["init"]["lastStatus"] == "STOPPED" and states["init"]["exitCode"] == 0
            assert states["app"]["lastStatus"] == "RUNNING"
        finally:
            engine.close()
    finally:
        berth("task", "stop", task_id)
        wait_until(
            lambda: berth.ok("task", "describe", task_id, "-o", "json").json()["lastStatus"] == "STOPPED",
            60,
            "the ordered task STOPPED",
        )
