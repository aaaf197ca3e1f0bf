"""Container ordering and lifecycle on real Docker: dependsOn (an init container that must
COMPLETE, a sidecar that must be HEALTHY), a SUCCESS dependency that fails, stops in reverse
order, and a restartPolicy restarting a container in place. Times are read on the engine."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from agent.runtime.docker_state import unix_time
from berth.testing.cli import Berth, id_of
from berth.testing.daemons import AgentProcess
from berth.testing.waiting import wait_until

IMAGE = "berth-busybox:2"
SERVE = "trap 'exit 0' TERM; sleep 600 & wait"


def _container(name: str, command: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "image": IMAGE,
        "memory": 32,
        "entryPoint": ["sh", "-c"],
        "command": [command],
        "stopTimeout": 2,
        **fields,
    }


@pytest.fixture
def engine() -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url="unix:///var/run/docker.sock")
    try:
        yield client
    finally:
        client.close()


def _run(berth: Berth, tmp_path: Path, cluster: str, family: str, containers: list[dict[str, Any]]) -> str:
    berth("cluster", "create", cluster)  # may exist from an earlier test of this module
    path = tmp_path / f"{family}.json"
    path.write_text(json.dumps(containers))
    berth.ok("taskdef", "register", "--family", family, "--container-definitions", f"file://{path}")
    return berth.ok("task", "run", "--cluster", cluster, "--task-definition", family).stdout.strip()


def _describe(berth: Berth, cluster: str, task_id: str) -> dict[str, Any]:
    task: dict[str, Any] = berth.ok("task", "describe", task_id, "--cluster", cluster, "-o", "json").json()
    return task


def _status(berth: Berth, cluster: str, task_id: str, status: str) -> dict[str, Any] | None:
    task = _describe(berth, cluster, task_id)
    if task["lastStatus"] == "STOPPED" and status != "STOPPED":
        raise AssertionError(f"task stopped: {task.get('stopCode')} {task.get('stoppedReason')}")
    return task if task["lastStatus"] == status else None


def _engine_containers(agent: AgentProcess, task_id: str) -> dict[str, dict[str, Any]]:
    """The task's containers on the engine, by name in the task definition: inspect's output."""
    client = docker.DockerClient(base_url=agent.docker_url)
    try:
        found = {}
        for summary in client.api.containers(all=True, filters={"label": f"berth.task-id={task_id}"}):
            try:
                details = client.api.inspect_container(summary["Id"])
            except docker.errors.NotFound:
                continue
            found[details["Config"]["Labels"]["berth.container-name"]] = details
        return found
    finally:
        client.close()


def _time(text: str) -> float:
    """Docker's RFC 3339 time (nanoseconds, Z) as Unix seconds."""
    seconds = unix_time(text)
    assert seconds > 0, text
    return seconds


def _stop(berth: Berth, cluster: str, task_id: str) -> None:
    berth("task", "stop", task_id, "--cluster", cluster)


def test_init_completes_and_sidecar_is_healthy_before_the_app_starts_and_stops_after_it(
    berth: Berth, agent: AgentProcess, tmp_path: Path, engine: docker.DockerClient
) -> None:
    containers = [
        _container("init", "sleep 2; echo migrated; exit 0", essential=False),
        _container(
            "sidecar",
            f"mkdir -p /tmp; sleep 1; touch /tmp/ready; {SERVE}",
            healthCheck={
                "command": ["CMD-SHELL", "test -f /tmp/ready"],
                "interval": 5,
                "timeout": 2,
                "retries": 1,
            },
        ),
        _container(
            "app",
            SERVE,
            dependsOn=[
                {"containerName": "init", "condition": "COMPLETE"},
                {"containerName": "sidecar", "condition": "HEALTHY"},
            ],
            startTimeout=60,
        ),
    ]
    task_id = _run(berth, tmp_path, "order", "ordered", containers)
    try:
        task, _ = wait_until(
            lambda: _status(berth, "order", task_id, "RUNNING"), 90, "the ordered task RUNNING"
        )
        on_engine = _engine_containers(agent, task_id)
        init, sidecar, app = (on_engine[name]["State"] for name in ("init", "sidecar", "app"))
        assert (init["Status"], init["ExitCode"]) == ("exited", 0)
        assert sidecar["Health"]["Status"] == "healthy"
        app_started = _time(app["StartedAt"])
        assert app_started >= _time(init["FinishedAt"])
        first_pass = min(_time(check["End"]) for check in sidecar["Health"]["Log"] if check["ExitCode"] == 0)
        assert app_started >= first_pass
        assert _time(sidecar["StartedAt"]) < first_pass
        # The task runs with its init container exited: a non-essential exit stops nothing.
        states = {c["name"]: c for c in task["containers"]}
        assert states["init"]["lastStatus"] == "STOPPED" and states["init"]["exitCode"] == 0
        assert states["app"]["lastStatus"] == "RUNNING" and states["sidecar"]["lastStatus"] == "RUNNING"
        time.sleep(2)
        assert _describe(berth, "order", task_id)["lastStatus"] == "RUNNING"

        # Stopping goes dependents first: the app dies before the sidecar it depends on.
        since = time.time() - 1
        _stop(berth, "order", task_id)
        wait_until(lambda: _status(berth, "order", task_id, "STOPPED"), 60, "the ordered task STOPPED")
        deaths = [
            event["Actor"]["Attributes"]["berth.container-name"]
            for event in engine.events(
                since=since,
                until=time.time() + 1,
                decode=True,
                filters={"label": f"berth.task-id={task_id}", "event": "die"},
            )
        ]
        assert deaths == ["app", "sidecar"]
    finally:
        _stop(berth, "order", task_id)


def test_a_success_dependency_that_fails_stops_the_task_before_the_app_starts(
    berth: Berth, agent: AgentProcess, tmp_path: Path
) -> None:
    containers = [
        _container("migrate", "echo cannot migrate; exit 1", essential=False),
        _container("app", SERVE, dependsOn=[{"containerName": "migrate", "condition": "SUCCESS"}]),
    ]
    task_id = _run(berth, tmp_path, "order", "failing", containers)
    try:
        task, _ = wait_until(lambda: _status(berth, "order", task_id, "STOPPED"), 60, "the task STOPPED")
        assert task["stopCode"] == "TaskFailedToStart"
        assert task["stoppedReason"] == (
            "DependencyError: container app needs migrate to be SUCCESS, but migrate exited with code 1"
        )
        # Its containers are removed, the app's never started.
        wait_until(lambda: not _engine_containers(agent, task_id), 30, "the failed task's containers removed")
    finally:
        _stop(berth, "order", task_id)


def test_a_container_without_dependencies_starts_while_another_waits(
    berth: Berth, agent: AgentProcess, tmp_path: Path
) -> None:
    """The app waits for migrate's SUCCESS; migrate waits (at run time, through a shared volume)
    for db, which depends on nothing: db must start at once, not behind the app's wait."""
    document = {
        "family": "migrating",
        "volumes": [{"name": "shared"}],
        "containerDefinitions": [
            _container(
                "app",
                SERVE,
                dependsOn=[{"containerName": "migrate", "condition": "SUCCESS"}],
            ),
            _container(
                "migrate",
                "until [ -f /data/db-up ]; do sleep 0.2; done; echo migrated",
                essential=False,
                startTimeout=60,
                mountPoints=[{"sourceVolume": "shared", "containerPath": "/data"}],
            ),
            _container(
                "db",
                f"touch /data/db-up; {SERVE}",
                mountPoints=[{"sourceVolume": "shared", "containerPath": "/data"}],
            ),
        ],
    }
    berth("cluster", "create", "order")
    path = tmp_path / "migrating.json"
    path.write_text(json.dumps(document))
    berth.ok("taskdef", "register", "--cli-input-json", f"file://{path}")
    task_id = berth.ok("task", "run", "--cluster", "order", "--task-definition", "migrating").stdout.strip()
    try:
        task, _ = wait_until(lambda: _status(berth, "order", task_id, "RUNNING"), 90, "the task RUNNING")
        on_engine = _engine_containers(agent, task_id)
        migrate, db, app = (on_engine[name]["State"] for name in ("migrate", "db", "app"))
        assert (migrate["Status"], migrate["ExitCode"]) == ("exited", 0)
        assert _time(db["StartedAt"]) <= _time(migrate["FinishedAt"]) <= _time(app["StartedAt"])
        states = {c["name"]: c["lastStatus"] for c in task["containers"]}
        assert states == {"app": "RUNNING", "migrate": "STOPPED", "db": "RUNNING"}
    finally:
        _stop(berth, "order", task_id)
        wait_until(lambda: not _engine_containers(agent, task_id), 60, "the task's containers removed")


def test_a_stop_while_a_container_waits_ends_the_start_and_removes_its_containers(
    berth: Berth, agent: AgentProcess, tmp_path: Path
) -> None:
    """The user stops a task whose app waits for a dependency: the stop does not wait for the
    dependency's startTimeout (here 10 minutes); the start ends and its containers go."""
    containers = [
        _container("init", "sleep 600", essential=False, startTimeout=600),
        _container("app", SERVE, dependsOn=[{"containerName": "init", "condition": "COMPLETE"}]),
    ]
    task_id = _run(berth, tmp_path, "order", "waiting", containers)
    try:
        wait_until(
            lambda: (
                "init" in _engine_containers(agent, task_id)
                and _engine_containers(agent, task_id)["init"]["State"]["Running"]
            ),
            60,
            "init running, the app waiting",
        )
        assert _describe(berth, "order", task_id)["lastStatus"] == "PENDING"
        _stop(berth, "order", task_id)
        task, _ = wait_until(lambda: _status(berth, "order", task_id, "STOPPED"), 60, "the task STOPPED")
        assert task["stopCode"] == "UserInitiated"
        wait_until(lambda: not _engine_containers(agent, task_id), 30, "the task's containers removed")
    finally:
        _stop(berth, "order", task_id)


# First run: run for 62 s (past the 60 s restartAttemptPeriod), then fail. The same container
# started again finds its own marker file and fails early: not restarted, the task stops.
# (The image, FROM scratch, has no /tmp.)
RESTARTED = "if [ -f /tmp/ran ]; then sleep 10; exit 1; fi; mkdir -p /tmp; touch /tmp/ran; sleep 62; exit 1"


def test_a_container_is_restarted_in_place_then_not_after_an_early_exit(
    berth: Berth, agent: AgentProcess, tmp_path: Path
) -> None:
    containers = [
        _container(
            "app",
            RESTARTED,
            restartPolicy={"enabled": True, "ignoredExitCodes": [0], "restartAttemptPeriod": 60},
        )
    ]
    task_id = _run(berth, tmp_path, "restarts", "restarting", containers)
    try:
        wait_until(lambda: _status(berth, "restarts", task_id, "RUNNING"), 60, "the task RUNNING")
        (first,) = _engine_containers(agent, task_id).values()
        first_start = _time(first["State"]["StartedAt"])

        def restarted() -> dict[str, Any] | None:
            found = _engine_containers(agent, task_id)
            again = found.get("app")
            if again is None or _time(again["State"]["StartedAt"]) <= first_start:
                return None
            return again

        again, _ = wait_until(restarted, 120, "the container started again")
        assert again["Id"] == first["Id"], "restarted in place: the same container"
        assert len(_engine_containers(agent, task_id)) == 1

        # Still the same RUNNING task, its restart recorded at once (the second run lasts 10 s).
        def restart_recorded() -> dict[str, Any] | None:
            task = _status(berth, "restarts", task_id, "RUNNING")
            return (
                task
                if task is not None and task["containers"][0].get("berth", {}).get("restartCount") == 1
                else None
            )

        running, _ = wait_until(restart_recorded, 8, "the restart recorded on the RUNNING task")
        assert running["containers"][0]["runtimeId"] == first["Id"]

        stopped, _ = wait_until(
            lambda: _status(berth, "restarts", task_id, "STOPPED"), 60, "the task STOPPED"
        )
        assert stopped["stopCode"] == "EssentialContainerExited"
        (state,) = stopped["containers"]
        assert state["runtimeId"] == first["Id"]
        assert state["berth"]["restartCount"] == 1
        assert state["exitCode"] == 1
        # One task all along: restarted within its task, never replaced.
        assert [id_of(t) for t in berth.tasks("restarts")] == [task_id]
    finally:
        _stop(berth, "restarts", task_id)
