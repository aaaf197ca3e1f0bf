"""Secrets on real Docker: a task's secret is in its container's environment (read from
inside the container), a log driver's secretOption in its LogConfig (read with inspect), and
a task whose secret is missing stops as TASK_FAILED_TO_START with ECS's reason. Neither the
agent's nor the control plane's log ever holds a value.

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


TAG_VALUE = "log-tag-s3cr3t-6262"
LOGGED = [
    {
        "name": "app",
        "image": "berth-busybox:2",
        "memory": 32,
        "essential": True,
        "entryPoint": ["sh", "-c"],
        "command": ["trap 'exit 0' TERM; while true; do sleep 0.5; done"],
        "stopTimeout": 2,
        "logConfiguration": {
            "logDriver": "json-file",
            "options": {"max-size": "1m"},
            "secretOptions": [
                {"name": "tag", "valueFrom": "arn:aws:ssm:eu-west-1:1:parameter/docker/log-tag"}
            ],
        },
    }
]


def test_a_log_secret_option_reaches_dockers_log_config_only_and_a_missing_one_fails_the_start(
    berth: Berth, agent: AgentProcess, controlplane: ControlPlaneProcess, tmp_path: Path
) -> None:
    berth.ok("secret", "put", "/docker/log-tag", input=TAG_VALUE)
    path = tmp_path / "logged.json"
    path.write_text(json.dumps(LOGGED))
    berth.ok("taskdef", "register", "--family", "logged", "--container-definitions", f"file://{path}")

    task_id = berth.ok("task", "run", "--task-definition", "logged").stdout.strip()
    wait_until(
        lambda: _state(berth, task_id).get("lastStatus") == "RUNNING" or None,
        60,
        "the task is RUNNING",
        interval=0.5,
    )
    client = docker.DockerClient(base_url=agent.docker_url)
    try:
        inspected = client.api.inspect_container(f"berth-{task_id}-app")
    finally:
        client.close()
    assert inspected["HostConfig"]["LogConfig"] == {
        "Type": "json-file",
        "Config": {"max-size": "1m", "tag": TAG_VALUE},
    }
    assert TAG_VALUE not in json.dumps(inspected["Config"]["Env"])

    # The value is nowhere else: describe (which keeps the reference), etcd's raw values.
    described = berth.ok("taskdef", "describe", "logged", "-o", "json").stdout
    assert "parameter/docker/log-tag" in described and TAG_VALUE not in described
    assert TAG_VALUE not in berth.ok("task", "describe", task_id, "-o", "json").stdout
    _, raw = controlplane.etcd_snapshot()
    assert TAG_VALUE.encode() not in b"".join(raw.values())

    # Missing: the next task stops before any container starts, naming the secret.
    berth.ok("secret", "delete", "/docker/log-tag")
    failed_id = berth.ok("task", "run", "--task-definition", "logged").stdout.strip()
    stopped, _ = wait_until(
        lambda: _stopped(berth, failed_id), 60, "the task without its secret is STOPPED", interval=0.5
    )
    assert stopped["stopCode"] == "TaskFailedToStart"
    assert stopped["stoppedReason"] == (
        "ResourceInitializationError: unable to pull secrets: secret /docker/log-tag does not exist "
        "(berth secret put /docker/log-tag)"
    )

    berth.ok("task", "stop", task_id)
    for log in (agent.log_path, controlplane.log_path):
        assert TAG_VALUE.encode() not in Path(log).read_bytes(), f"the log option's value is in {log}"
