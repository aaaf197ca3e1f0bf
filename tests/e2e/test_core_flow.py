"""One host, end to end: the operator's flow from the CLI on real etcd and Docker."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from berth.testing.cli import Berth, bindings, exit_code_of, id_of
from berth.testing.daemons import REPO, AgentProcess, ControlPlaneProcess, JoinFlags
from berth.testing.waiting import wait_until

EXAMPLE = REPO / "examples" / "web.json"


def _setup_cluster(berth: Berth, cluster: str, family: str) -> None:
    berth.ok("cluster", "create", cluster)
    berth.ok("taskdef", "register", "--family", family, "--container-definitions", f"file://{EXAMPLE}")


def test_service_of_two_runs_and_serves(berth: Berth, agent: AgentProcess) -> None:
    _setup_cluster(berth, "flow", "web-flow")
    created = berth.ok(
        "service",
        "create",
        "--cluster",
        "flow",
        "--name",
        "web",
        "--task-definition",
        "web-flow",
        "--desired-count",
        "2",
    )
    assert "desired count 2" in created.stdout

    running, seconds = wait_until(lambda: berth.running_exactly("flow", 2, "web"), 10, "2 RUNNING tasks")
    print(f"service of 2 RUNNING after {seconds:.2f}s")
    ports = [bindings(t)[0]["hostPort"] for t in running]
    assert all(port > 0 for port in ports) and len(set(ports)) == 2
    # The table shows each task's host port too.
    table = berth.ok("task", "list", "--cluster", "flow").stdout
    for port in ports:
        assert f"{port}->8080/tcp" in table
    assert table.count("RUNNING") >= 2
    # The containers really serve on those ports (loopback only).
    for port in ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
            assert b"hello from berth" in response.read()
    assert len(agent.containers()) >= 2

    again = berth.ok(
        "taskdef", "register", "--family", "web-flow", "--container-definitions", f"file://{EXAMPLE}"
    )
    assert "web-flow:2" in again.stdout
    revisions = berth.ok("taskdef", "list", "--family", "web-flow", "-o", "json").json()["taskDefinitions"]
    assert [r["revision"] for r in revisions] == [1, 2]


def test_cli_input_json_registers_a_whole_ecs_document(berth: Berth, tmp_path: Path) -> None:
    document = {
        "family": "doc",
        "networkMode": "bridge",
        "requiresCompatibilities": ["EC2"],
        "cpu": "256",
        "memory": "128",
        "containerDefinitions": json.loads(EXAMPLE.read_text()),
    }
    path = tmp_path / "register.json"
    path.write_text(json.dumps(document))
    result = berth.ok("taskdef", "register", "--cli-input-json", f"file://{path}")
    assert "registered doc:1" in result.stdout
    described = berth.ok("taskdef", "describe", "doc", "-o", "json").json()
    assert described["memory"] == "128"  # ECS describes task-level numbers as strings
    assert described["containerDefinitions"][0]["portMappings"][0]["containerPort"] == 8080
    yaml_out = yaml.safe_load(berth.ok("taskdef", "describe", "doc:1", "-o", "yaml").stdout)
    assert yaml_out == described, "-o yaml holds the same object as -o json"


def test_killed_container_is_replaced_and_recorded(berth: Berth, agent: AgentProcess) -> None:
    _setup_cluster(berth, "heal", "web-heal")
    berth.ok(
        "service",
        "create",
        "--cluster",
        "heal",
        "--name",
        "web",
        "--task-definition",
        "web-heal",
        "--desired-count",
        "2",
    )
    before, _ = wait_until(lambda: berth.running_exactly("heal", 2), 10, "2 RUNNING")
    victim = before[0]
    container_id = victim["containers"][0]["runtimeId"]
    import docker

    client = docker.from_env()
    client.containers.get(container_id).kill()

    def replaced() -> list[dict[str, Any]] | None:
        running = berth.running("heal")
        ids = {id_of(t) for t in running}
        return running if len(running) == 2 and id_of(victim) not in ids else None

    _, seconds = wait_until(replaced, 3, "a replacement RUNNING within 3 s of docker kill", interval=0.05)
    print(f"replacement RUNNING {seconds:.2f}s after docker kill")
    stopped = next(t for t in berth.tasks("heal") if id_of(t) == id_of(victim))
    assert stopped["lastStatus"] == "STOPPED"
    assert exit_code_of(stopped) == 137
    assert stopped["stoppedReason"] == "Essential container in task exited"
    assert stopped["stopCode"] == "EssentialContainerExited"
    # Still listed in the table, with its exit code.
    table = berth.ok("task", "list", "--cluster", "heal").stdout
    assert id_of(victim)[:12] in table and "137" in table
    client.close()


def test_scale_up_down_and_delete(berth: Berth, agent: AgentProcess) -> None:
    _setup_cluster(berth, "scale", "web-scale")
    berth.ok(
        "service",
        "create",
        "--cluster",
        "scale",
        "--name",
        "web",
        "--task-definition",
        "web-scale",
        "--desired-count",
        "2",
    )
    wait_until(lambda: len(berth.running("scale")) == 2, 10, "2 RUNNING")
    berth.ok("service", "update", "web", "--cluster", "scale", "--desired-count", "5")
    wait_until(lambda: len(berth.running("scale")) == 5, 15, "5 RUNNING")
    berth.ok("service", "update", "web", "--cluster", "scale", "--desired-count", "1")

    def scaled_in() -> bool:
        tasks = berth.tasks("scale")
        live = [t for t in tasks if t["lastStatus"] != "STOPPED"]
        return len(live) == 1 and live[0]["lastStatus"] == "RUNNING"

    wait_until(scaled_in, 30, "1 task left")
    stopped = [t for t in berth.tasks("scale") if t["lastStatus"] == "STOPPED"]
    assert len(stopped) == 4
    assert all(t["stopCode"] == "ServiceSchedulerInitiated" for t in stopped)

    def containers_of_cluster() -> list[object]:
        return [c for c in agent.containers(all=True) if c.labels.get("berth.cluster") == "scale"]

    wait_until(lambda: len(containers_of_cluster()) == 1, 15, "stopped containers removed")
    berth.ok("service", "delete", "web", "--cluster", "scale")
    wait_until(lambda: not containers_of_cluster(), 30, "no container of the deleted service")
    wait_until(
        lambda: berth("service", "describe", "web", "--cluster", "scale").exit_code == 1,
        15,
        "service record gone",
    )
    assert berth.ok("service", "list", "--cluster", "scale", "-o", "json").json()["services"] == []


def test_one_off_task_runs_to_completion_and_stop_stops(
    berth: Berth, agent: AgentProcess, tmp_path: Path
) -> None:
    berth.ok("cluster", "create", "oneoff")
    job = tmp_path / "job.json"
    job.write_text(
        json.dumps(
            [
                {
                    "name": "job",
                    "image": "berth-busybox:2",
                    "memory": 16,
                    "command": ["sh", "-c", "echo working; exit 3"],
                }
            ]
        )
    )
    berth.ok("taskdef", "register", "--family", "job", "--container-definitions", f"file://{job}")
    task_id = berth.ok("task", "run", "--cluster", "oneoff", "--task-definition", "job").stdout.strip()

    def finished() -> dict[str, Any] | None:
        task = berth.ok("task", "describe", task_id, "--cluster", "oneoff", "-o", "json").json()
        return task if task["lastStatus"] == "STOPPED" else None

    done, _ = wait_until(finished, 20, "the one-off task to finish")
    assert exit_code_of(done) == 3
    assert "exit code:        3" in berth.ok("task", "describe", task_id[:8], "--cluster", "oneoff").stdout

    sleeper = tmp_path / "sleeper.json"
    sleeper.write_text(
        json.dumps(
            [
                {
                    "name": "sleep",
                    "image": "berth-busybox:2",
                    "memory": 16,
                    "stopTimeout": 2,
                    "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 600 & wait"],
                }
            ]
        )
    )
    berth.ok("taskdef", "register", "--family", "sleeper", "--container-definitions", f"file://{sleeper}")
    long_id = berth.ok("task", "run", "--cluster", "oneoff", "--task-definition", "sleeper").stdout.strip()
    wait_until(
        lambda: (
            berth.ok("task", "describe", long_id, "--cluster", "oneoff", "-o", "json").json()["lastStatus"]
            == "RUNNING"
        ),
        20,
        "the long task RUNNING",
    )
    berth.ok("task", "stop", long_id, "--cluster", "oneoff")
    stopped, _ = wait_until(
        lambda: (
            t
            if (t := berth.ok("task", "describe", long_id, "--cluster", "oneoff", "-o", "json").json())[
                "lastStatus"
            ]
            == "STOPPED"
            else None
        ),
        20,
        "the stopped task",
    )
    assert stopped["stopCode"] == "UserInitiated"
    assert stopped["stoppedReason"] == "Task stopped by user"
    assert exit_code_of(stopped) == 0  # it handled SIGTERM itself
    wait_until(
        lambda: not [c for c in agent.containers(all=True) if c.labels.get("berth.cluster") == "oneoff"],
        15,
        "one-off containers removed",
    )


def test_unplaceable_task_stays_pending_and_says_why(
    berth: Berth, agent: AgentProcess, tmp_path: Path
) -> None:
    berth.ok("cluster", "create", "huge")
    big = tmp_path / "big.json"
    big.write_text(json.dumps([{"name": "big", "image": "berth-busybox:2", "memory": 4_000_000}]))
    berth.ok("taskdef", "register", "--family", "big", "--container-definitions", f"file://{big}")
    berth.ok(
        "service",
        "create",
        "--cluster",
        "huge",
        "--name",
        "big",
        "--task-definition",
        "big",
        "--desired-count",
        "1",
    )
    expected = "no node has 4000000 MiB of free memory"

    def explained() -> str | None:
        text = berth.ok("service", "describe", "big", "--cluster", "huge").stdout
        return text if expected in text else None

    text, _ = wait_until(explained, 10, "the placement failure in the service's events")
    assert "service big was unable to place a task because no node has 4000000 MiB of free memory" in text
    (task,) = berth.tasks("huge")
    assert task["lastStatus"] == "PENDING"
    assert expected in task["berth"]["pendingReason"]
    berth.ok("service", "delete", "big", "--cluster", "huge")


def _register(berth: Berth, tmp_path: Path, family: str, definitions: list[dict[str, Any]]) -> None:
    path = tmp_path / f"{family}.json"
    path.write_text(json.dumps(definitions))
    berth.ok("taskdef", "register", "--family", family, "--container-definitions", f"file://{path}")


def _task(berth: Berth, cluster: str, task_id: str) -> dict[str, Any]:
    task: dict[str, Any] = berth.ok("task", "describe", task_id, "--cluster", cluster, "-o", "json").json()
    return task


def _wait_status(berth: Berth, cluster: str, task_id: str, status: str, timeout: float) -> dict[str, Any]:
    task, _ = wait_until(
        lambda: t if (t := _task(berth, cluster, task_id))["lastStatus"] == status else None,
        timeout,
        f"task {task_id[:12]} {status}",
        interval=0.05,
    )
    return task


SLEEPER = [
    {
        "name": "sleep",
        "image": "berth-busybox:2",
        "memory": 16,
        "stopTimeout": 2,
        "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"],
    }
]


def test_a_cluster_with_a_running_task_cannot_be_deleted(
    berth: Berth, agent: AgentProcess, tmp_path: Path
) -> None:
    berth.ok("cluster", "create", "keep")
    _register(berth, tmp_path, "sleeper-keep", SLEEPER)
    task_id = berth.ok("task", "run", "--cluster", "keep", "--task-definition", "sleeper-keep").stdout.strip()
    task = _wait_status(berth, "keep", task_id, "RUNNING", 20)
    refused = berth("cluster", "delete", "keep")
    assert refused.exit_code != 0
    message = refused.stderr + refused.stdout
    assert "still has 1 task(s) not STOPPED" in message and task_id[:12] in message, message
    assert "stop its tasks first" in message
    # Refusing orphaned nothing: the cluster and its container are still there.
    assert "keep" in {c["clusterName"] for c in berth.ok("cluster", "list", "-o", "json").json()["clusters"]}
    running_ids = {c.id for c in agent.containers()}
    assert task["containers"][0]["runtimeId"] in running_ids
    berth.ok("task", "stop", task_id, "--cluster", "keep")
    _wait_status(berth, "keep", task_id, "STOPPED", 10)
    assert "deleted" in berth.ok("cluster", "delete", "keep").stdout
    assert "keep" not in {
        c["clusterName"] for c in berth.ok("cluster", "list", "-o", "json").json()["clusters"]
    }


def test_task_list_for_a_service_that_does_not_exist_says_so(berth: Berth) -> None:
    result = berth("task", "list", "--service", "nosuch")
    assert result.exit_code != 0
    assert "nosuch" in result.stderr and "not" in result.stderr.lower(), result.stderr
    assert result.stdout == ""


def test_the_demo_web_server_stops_promptly_on_sigterm(
    berth: Berth, agent: AgentProcess, tmp_path: Path
) -> None:
    berth.ok("cluster", "create", "sigterm-web")
    berth.ok("taskdef", "register", "--family", "web-stop", "--container-definitions", f"file://{EXAMPLE}")
    stop_timeout = json.loads(EXAMPLE.read_text())[0]["stopTimeout"]
    task_id = berth.ok(
        "task", "run", "--cluster", "sigterm-web", "--task-definition", "web-stop"
    ).stdout.strip()
    _wait_status(berth, "sigterm-web", task_id, "RUNNING", 20)
    started = time.monotonic()
    berth.ok("task", "stop", task_id, "--cluster", "sigterm-web")
    stopped = _wait_status(berth, "sigterm-web", task_id, "STOPPED", stop_timeout + 10)
    seconds = time.monotonic() - started
    print(f"web task STOPPED {seconds:.2f}s after task stop (stop timeout {stop_timeout}s)")
    assert seconds < stop_timeout / 2, f"took {seconds:.2f}s: SIGTERM was ignored until the stop timeout"
    assert exit_code_of(stopped) in (0, 143), exit_code_of(stopped)


def test_deregistered_revision_is_inactive_and_refused_for_new_services(berth: Berth, tmp_path: Path) -> None:
    berth.ok("cluster", "create", "dereg")
    _register(berth, tmp_path, "retired", SLEEPER)
    berth.ok("taskdef", "deregister", "retired:1")
    described = berth.ok("taskdef", "describe", "retired:1", "-o", "json").json()
    assert described["status"] == "INACTIVE"
    assert "INACTIVE" in berth.ok("taskdef", "describe", "retired:1").stdout
    refused = berth(
        "service",
        "create",
        "--cluster",
        "dereg",
        "--name",
        "late",
        "--task-definition",
        "retired:1",
        "--desired-count",
        "1",
    )
    assert refused.exit_code != 0 and "INACTIVE" in refused.stderr, refused.stderr
    assert berth.ok("service", "list", "--cluster", "dereg", "-o", "json").json()["services"] == []


def test_an_image_that_does_not_exist_is_task_failed_to_start(
    berth: Berth, agent: AgentProcess, tmp_path: Path
) -> None:
    # A registry on the discard port of loopback: the pull fails at once and never leaves the machine.
    _register(
        berth,
        tmp_path,
        "noimage",
        [{"name": "ghost", "image": "127.0.0.1:9/berth/no-such-image:1", "memory": 16}],
    )
    berth.ok("cluster", "create", "ghost")
    task_id = berth.ok("task", "run", "--cluster", "ghost", "--task-definition", "noimage").stdout.strip()
    task = _wait_status(berth, "ghost", task_id, "STOPPED", 30)
    assert task["stopCode"] == "TaskFailedToStart", task
    assert task["stoppedReason"], task
    assert "TaskFailedToStart" in berth.ok("task", "describe", task_id, "--cluster", "ghost").stdout


def test_no_service_network_leaves_no_rules_and_no_dns_listener(agent: AgentProcess) -> None:
    # This module's agent runs with --no-service-network (see tests/conftest.py).
    assert agent.process is not None and agent.process.poll() is None
    listening = [
        c
        for c in psutil.Process(agent.process.pid).net_connections(kind="inet")
        if c.laddr and c.laddr.port == 53
    ]
    assert listening == [], listening
    log = agent.log_path.read_text()
    assert "event=dns_started" not in log and "event=rules_applied" not in log
    saved = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    assert "BERTH-" not in saved


def test_stopped_tasks_are_purged_after_the_retention(
    tmp_path_factory: pytest.TempPathFactory, test_image: str, tmp_path: Path
) -> None:
    plane = ControlPlaneProcess(
        tmp_path_factory.mktemp("retention") / "cp", ["--stopped-task-retention", "1"]
    )
    plane.start()
    agent = AgentProcess(
        tmp_path / "agent", plane.address, ["--no-service-network"], join=JoinFlags.of(plane)
    )
    try:
        agent.start()
        agent.wait_registered()
        berth = Berth.of(plane)
        _register(
            berth,
            tmp_path,
            "brief",
            [{"name": "brief", "image": "berth-busybox:2", "memory": 16, "command": ["true"]}],
        )
        task_id = berth.ok("task", "run", "--task-definition", "brief").stdout.strip()
        _wait_status(berth, "default", task_id, "STOPPED", 20)
        _, seconds = wait_until(
            lambda: task_id not in {id_of(t) for t in berth.tasks("default")}, 20, "the stopped task purged"
        )
        print(f"stopped task purged {seconds:.2f}s after it was seen STOPPED (retention 1 s)")
        assert berth("task", "describe", task_id).exit_code != 0
    finally:
        agent.stop()
        agent.remove_containers()
        plane.stop()
