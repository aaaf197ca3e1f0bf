"""ECS's logConfiguration on real Docker: json-file's options (a placeholder in the tag
included) reach the engine's LogConfig and `berth logs` shows the output; a syslog container is
read back through the engine's dual-logging cache (and with the cache off, `berth logs` says so
in one line); a destination on the host itself (loopback, link-local, fluentd's default) is
refused at registration; awslogs registers with its note, runs on json-file with bounded
rotation, `berth logs` shows its output and describe shows awslogs as written."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from berth.testing.cli import Berth
from berth.testing.daemons import AgentProcess
from berth.testing.waiting import wait_until

CLUSTER = "logcfg"
TAG = "{{.Name}}/${ECS_TASK_ID}"


def _chatty(name: str, log: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "image": "berth-busybox:2",
        "memory": 32,
        "essential": True,
        "entryPoint": ["sh", "-c"],
        "command": [f"for i in 1 2 3; do echo {name}-line-$i; done; trap 'exit 0' TERM; sleep 3600 & wait"],
        "stopTimeout": 2,
        "logConfiguration": log,
    }


@pytest.fixture()
def tasks(berth: Berth, agent: AgentProcess) -> Iterator[list[str]]:
    """Task ids the test started; stopped afterwards whatever happened (the module's agent
    removes their containers)."""
    berth("cluster", "create", CLUSTER)
    started: list[str] = []
    yield started
    for task_id in started:
        berth("task", "stop", task_id, "--cluster", CLUSTER)


@pytest.fixture(scope="module")
def sink(agent: AgentProcess, test_image: str) -> Iterator[str]:
    """The address of a container this module starts, for syslog's UDP: the engine sends from the
    host's network, where loopback is refused; a container of our own receives (and drops) it."""
    client = docker.DockerClient(base_url=agent.docker_url)
    container = None
    try:
        container = client.containers.run(
            test_image, ["sleep", "3600"], detach=True, labels={"berth.test": "log-sink"}
        )
        container.reload()
        address: str = container.attrs["NetworkSettings"]["IPAddress"]
        assert address, container.attrs["NetworkSettings"]
        yield address
    finally:
        if container is not None:
            container.remove(force=True)
        client.close()


def _run(
    berth: Berth, tmp_path: Path, family: str, container: dict[str, Any], tasks: list[str]
) -> tuple[str, str]:
    """Register, run one task; its id and the registration's stderr (the notes)."""
    path = tmp_path / f"{family}.json"
    path.write_text(json.dumps([container]))
    registered = berth.ok(
        "taskdef", "register", "--family", family, "--container-definitions", f"file://{path}"
    )
    task_id = berth.ok("task", "run", "--cluster", CLUSTER, "--task-definition", family).stdout.strip()
    tasks.append(task_id)
    return task_id, registered.stderr


def _shown(berth: Berth, task_id: str, last: str) -> list[str]:
    def output() -> list[str] | None:
        lines = berth("logs", task_id[:12], "--cluster", CLUSTER).stdout.splitlines()
        return lines if last in lines else None

    shown, _ = wait_until(output, 60, f"{last!r} in berth logs")
    return shown


def _log_config(agent: AgentProcess, task_id: str) -> dict[str, Any]:
    def container() -> str | None:
        found = [c.id for c in agent.containers() if c.labels.get("berth.task-id") == task_id]
        return found[0] if found else None

    container_id, _ = wait_until(container, 60, "the task's container")
    client = docker.DockerClient(base_url=agent.docker_url)
    try:
        config: dict[str, Any] = client.api.inspect_container(container_id)["HostConfig"]["LogConfig"]
        return config
    finally:
        client.close()


def test_json_file_options_reach_the_engine_and_berth_logs_shows_the_output(
    berth: Berth, agent: AgentProcess, tasks: list[str], tmp_path: Path
) -> None:
    log = {"logDriver": "json-file", "options": {"max-size": "1m", "max-file": "2", "tag": TAG}}
    task_id, notes = _run(berth, tmp_path, "jsonlog", _chatty("jsonlog", log), tasks)
    assert notes == ""
    assert _shown(berth, task_id, "jsonlog-line-3") == [f"jsonlog-line-{i}" for i in (1, 2, 3)]
    assert _log_config(agent, task_id) == {
        "Type": "json-file",
        "Config": {"max-size": "1m", "max-file": "2", "tag": TAG},  # the placeholders as written
    }


def test_a_syslog_container_is_read_back_through_the_engines_cache(
    berth: Berth, agent: AgentProcess, tasks: list[str], tmp_path: Path, sink: str
) -> None:
    # UDP to the module's own container: delivered nowhere, never leaves the machine.
    log = {"logDriver": "syslog", "options": {"syslog-address": f"udp://{sink}:9", "tag": "{{.Name}}"}}
    task_id, _ = _run(berth, tmp_path, "syslogged", _chatty("syslogged", log), tasks)
    assert _shown(berth, task_id, "syslogged-line-3") == [f"syslogged-line-{i}" for i in (1, 2, 3)]
    assert _log_config(agent, task_id)["Type"] == "syslog"


def test_awslogs_registers_with_its_note_and_berth_logs_shows_the_output(
    berth: Berth, agent: AgentProcess, tasks: list[str], tmp_path: Path
) -> None:
    log = {
        "logDriver": "awslogs",
        "options": {
            "awslogs-group": "/ecs/shop",
            "awslogs-region": "eu-west-1",
            "awslogs-stream-prefix": "shop",
            "awslogs-create-group": "true",
        },
    }
    task_id, notes = _run(berth, tmp_path, "awslogged", _chatty("awslogged", log), tasks)
    assert notes.splitlines() == [
        "note: containerDefinitions[0].logConfiguration: awslogs runs on Berth's own log path "
        "(json-file, at most 3 files of 10 MiB per container; read it with berth logs): no "
        "CloudWatch log group or stream is written, each awslogs option is kept as written but not "
        "applied"
    ]
    assert _shown(berth, task_id, "awslogged-line-3") == [f"awslogged-line-{i}" for i in (1, 2, 3)]
    # json-file with bounded rotation, whatever the engine's default driver is.
    assert _log_config(agent, task_id) == {
        "Type": "json-file",
        "Config": {"max-size": "10m", "max-file": "3"},
    }
    described = berth.ok("taskdef", "describe", "awslogged", "-o", "json").json()
    assert described["containerDefinitions"][0]["logConfiguration"] == log


def test_a_log_destination_on_the_host_itself_is_refused_at_registration(
    berth: Berth, tmp_path: Path
) -> None:
    for family, log, refusal in (
        (
            "tohost",
            {"logDriver": "syslog", "options": {"syslog-address": "tcp://127.0.0.1:2379"}},
            "options[syslog-address] 'tcp://127.0.0.1:2379' is refused: 127.0.0.1 is a loopback address",
        ),
        (
            "tometadata",
            {"logDriver": "gelf", "options": {"gelf-address": "udp://169.254.169.254:80"}},
            "169.254.169.254 is a link-local address",
        ),
        ("fluentdefault", {"logDriver": "fluentd"}, "fluentd needs fluentd-address"),
    ):
        path = tmp_path / f"{family}.json"
        path.write_text(json.dumps([_chatty(family, log)]))
        result = berth("taskdef", "register", "--family", family, "--container-definitions", f"file://{path}")
        result.assert_refused(refusal)
    # Nothing was registered, so nothing can run.
    assert berth("taskdef", "describe", "tohost").exit_code != 0


def test_a_driver_that_cannot_be_read_back_is_said_in_one_line(
    berth: Berth, agent: AgentProcess, tasks: list[str], tmp_path: Path, sink: str
) -> None:
    log = {
        "logDriver": "syslog",
        "options": {"syslog-address": f"udp://{sink}:9", "cache-disabled": "true"},
    }
    task_id, _ = _run(berth, tmp_path, "unreadable", _chatty("unreadable", log), tasks)
    wait_until(
        lambda: (
            berth.ok("task", "describe", task_id, "--cluster", CLUSTER, "-o", "json").json()["lastStatus"]
            == "RUNNING"
        ),
        60,
        "the task RUNNING",
    )
    result = berth("logs", task_id[:12], "--cluster", CLUSTER)
    result.assert_refused("this container's log driver keeps no copy the engine can read back")
