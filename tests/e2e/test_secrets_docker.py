"""Secrets on real Docker: a task's secret is in its container's environment (read from
inside the container), and a task whose secret is missing stops as TASK_FAILED_TO_START
with ECS's reason. Neither the agent's nor the control plane's log ever holds the value.

Uses Docker: run under `flock /tmp/berth-docker.lock`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import docker

from berth.testing.cli import Berth
from berth.testing.daemons import AgentProcess, ControlPlaneProcess
from berth.testing.waiting import wait_until

VALUE = "docker-s3cr3t-9931"
CONTAINERS = [
    {
        "name": "app",
        "image": "berth-busybox:2",
        "memory": 32,
        "essential": True,
        "entryPoint": ["sh", "-c"],
        # Prints nothing of its environment: the value is read with `docker exec`.
        "command": ["trap 'exit 0' TERM; while true; do sleep 0.5; done"],
        "stopTimeout": 2,
        "environment": [{"name": "PLAIN", "value": "plain-value"}],
        "secrets": [
            {"name": "DB_PASSWORD", "valueFrom": "arn:aws:ssm:eu-west-1:1:parameter/docker/DB_PASSWORD"},
            {"name": "API_TOKEN", "valueFrom": "docker-api-token"},
        ],
    }
]


def _state(berth: Berth, task_id: str) -> dict[str, Any]:
    shown: dict[str, Any] = berth.ok("task", "describe", task_id, "-o", "json").json()
    return shown


def _stopped(berth: Berth, task_id: str) -> dict[str, Any] | None:
    state = _state(berth, task_id)
    return state if state.get("lastStatus") == "STOPPED" else None


def test_a_secret_reaches_the_containers_environment_and_a_missing_one_fails_the_start(
    berth: Berth, agent: AgentProcess, controlplane: ControlPlaneProcess, tmp_path: Path
) -> None:
    berth.ok("secret", "put", "/docker/DB_PASSWORD", input=VALUE)
    berth.ok("secret", "put", "docker-api-token", input="token-77")
    path = tmp_path / "secretive.json"
    path.write_text(json.dumps(CONTAINERS))
    berth.ok("taskdef", "register", "--family", "secretive", "--container-definitions", f"file://{path}")

    task_id = berth.ok("task", "run", "--task-definition", "secretive").stdout.strip()
    wait_until(
        lambda: _state(berth, task_id).get("lastStatus") == "RUNNING" or None,
        60,
        "the task is RUNNING",
        interval=0.5,
    )
    client = docker.DockerClient(base_url=agent.docker_url)
    try:
        container = client.containers.get(f"berth-{task_id}-app")
        result = container.exec_run(["env"])
        assert result.exit_code == 0
        environment = dict(line.split("=", 1) for line in result.output.decode().splitlines() if "=" in line)
        assert environment["DB_PASSWORD"] == VALUE
        assert environment["API_TOKEN"] == "token-77"
        assert environment["PLAIN"] == "plain-value"
        assert "API_TOKEN" not in container.labels and VALUE not in json.dumps(container.labels)
    finally:
        client.close()

    # A secret that is gone: the next task stops before any container starts, with ECS's reason.
    berth.ok("secret", "delete", "docker-api-token")
    failed_id = berth.ok("task", "run", "--task-definition", "secretive").stdout.strip()
    stopped, _ = wait_until(
        lambda: _stopped(berth, failed_id),
        60,
        "the task without its secret is STOPPED",
        interval=0.5,
    )
    assert stopped["stopCode"] == "TaskFailedToStart"
    assert stopped["stoppedReason"].startswith("ResourceInitializationError: unable to pull secrets")
    assert "docker-api-token does not exist" in stopped["stoppedReason"]

    berth.ok("task", "stop", task_id)
    for log in (agent.log_path, controlplane.log_path):
        assert VALUE.encode() not in Path(log).read_bytes(), f"the secret's value is in {log}"
