"""ECS's environmentFiles on real Docker: an agent started with --environment-files-dir reads
arn:aws:s3:::BUCKET/KEY.env from DIR/BUCKET/KEY.env; the container sees the variables, its
`environment` wins over the files and the first file wins over later ones; a file that is a
Berth secret reaches the container too; a missing file or a symbolic-link loop stops its own task
(only that one) as TASK_FAILED_TO_START with a reason that names the file as registered."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from berth.testing.cli import Berth
from berth.testing.daemons import AgentProcess, ControlPlaneProcess, JoinFlags
from berth.testing.waiting import wait_until

CLUSTER = "envfiles"


@pytest.fixture(scope="module")
def files_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("environment-files")


@pytest.fixture(scope="module")
def envagent(
    tmp_path_factory: pytest.TempPathFactory,
    controlplane: ControlPlaneProcess,
    test_image: str,
    files_dir: Path,
) -> Iterator[AgentProcess]:
    process = AgentProcess(
        tmp_path_factory.mktemp("envagent") / "data",
        controlplane.address,
        ["--no-service-network", "--environment-files-dir", str(files_dir)],
        join=JoinFlags.of(controlplane),
    )
    process.start()
    try:
        process.wait_registered()
        yield process
    finally:
        process.stop()
        process.remove_containers()


def _container(name: str, files: list[str], **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "image": "berth-busybox:2",
        "memory": 32,
        "essential": True,
        "entryPoint": ["sh", "-c"],
        "command": [
            'echo "A=$A"; echo "B=$B"; echo "C=$C"; echo "Q=$Q"; echo end; '
            "trap 'exit 0' TERM; sleep 3600 & wait"
        ],
        "stopTimeout": 2,
        "environmentFiles": [{"value": f"arn:aws:s3:::{file}", "type": "s3"} for file in files],
        **fields,
    }


def _run(berth: Berth, tmp_path: Path, family: str, container: dict[str, Any]) -> tuple[str, str]:
    path = tmp_path / f"{family}.json"
    path.write_text(json.dumps([container]))
    registered = berth.ok(
        "taskdef", "register", "--family", family, "--container-definitions", f"file://{path}"
    )
    task_id = berth.ok("task", "run", "--cluster", CLUSTER, "--task-definition", family).stdout.strip()
    return task_id, registered.stderr


def test_the_container_sees_the_files_variables_and_environment_wins(
    berth: Berth, envagent: AgentProcess, files_dir: Path, tmp_path: Path
) -> None:
    (files_dir / "config-bucket" / "shop").mkdir(parents=True)
    (files_dir / "config-bucket" / "shop" / "base.env").write_text(
        '# shop settings\nA=from-file\nB=first-file\nQ="quoted stays"\n'
    )
    (files_dir / "config-bucket" / "shop" / "extra.env").write_text("B=second-file\nC=second-file\n")
    berth("cluster", "create", CLUSTER)
    container = _container(
        "shop",
        ["config-bucket/shop/base.env", "config-bucket/shop/extra.env"],
        environment=[{"name": "A", "value": "from-environment"}],
    )
    task_id, notes = _run(berth, tmp_path, "envshop", container)
    try:
        assert notes.splitlines() == [
            f"note: containerDefinitions[0].environmentFiles[{i}]: Berth reads no S3; each agent reads "
            f"--environment-files-dir/config-bucket/shop/{name} on its own host when the task starts"
            for i, name in enumerate(("base.env", "extra.env"))
        ]

        def output() -> list[str] | None:
            lines = berth("logs", task_id[:12], "--cluster", CLUSTER).stdout.splitlines()
            return lines if "end" in lines else None

        shown, _ = wait_until(output, 60, "the task's output")
        assert shown == ["A=from-environment", "B=first-file", "C=second-file", 'Q="quoted stays"', "end"]
    finally:
        berth("task", "stop", task_id, "--cluster", CLUSTER)


def test_a_bad_file_stops_only_its_own_task_as_failed_to_start(
    berth: Berth, envagent: AgentProcess, files_dir: Path, tmp_path: Path
) -> None:
    """A missing file and a symbolic-link loop each stop their task with a reason naming the file
    as registered (no host path); a task next to them with a good file starts."""
    (files_dir / "looping").mkdir()
    os.symlink("spin.env", files_dir / "looping" / "spin.env")
    (files_dir / "fine").mkdir()
    (files_dir / "fine" / "ok.env").write_text("A=fine\n")
    berth("cluster", "create", CLUSTER)
    missing, _ = _run(berth, tmp_path, "envmissing", _container("lost", ["config-bucket/nowhere.env"]))
    looping, _ = _run(berth, tmp_path, "envloop", _container("loop", ["looping/spin.env"]))
    good, _ = _run(berth, tmp_path, "envgood", _container("good", ["fine/ok.env"]))
    try:

        def stopped(task_id: str) -> dict[str, Any] | None:
            task: dict[str, Any] = berth.ok(
                "task", "describe", task_id, "--cluster", CLUSTER, "-o", "json"
            ).json()
            return task if task["lastStatus"] == "STOPPED" else None

        for task_id, reason in (
            (
                missing,
                "container lost environmentFiles[0]: the file config-bucket/nowhere.env does not "
                "exist on this host",
            ),
            (
                looping,
                "container loop environmentFiles[0]: the file looping/spin.env is, or is under, a "
                "symbolic link or a non-directory: links are not followed",
            ),
        ):
            task, _ = wait_until(functools.partial(stopped, task_id), 60, "the task STOPPED")
            assert task["stopCode"] == "TaskFailedToStart", task
            assert task["stoppedReason"] == reason, task
            assert str(files_dir) not in json.dumps(task)
            # Nothing was created for it.
            assert not [c for c in envagent.containers(all=True) if c.labels.get("berth.task-id") == task_id]

        def output() -> list[str] | None:
            lines = berth("logs", good[:12], "--cluster", CLUSTER).stdout.splitlines()
            return lines if "end" in lines else None

        shown, _ = wait_until(output, 60, "the good task's output")
        assert shown == ["A=fine", "B=", "C=", "Q=", "end"]
        described = berth.ok("task", "describe", good, "--cluster", CLUSTER, "-o", "json").json()
        assert described["lastStatus"] == "RUNNING", described
        # The agent still runs.
        assert envagent.process is not None and envagent.process.poll() is None
    finally:
        for task_id in (missing, looping, good):
            berth("task", "stop", task_id, "--cluster", CLUSTER)


def test_a_file_that_is_a_berth_secret_reaches_the_container(
    berth: Berth, envagent: AgentProcess, tmp_path: Path
) -> None:
    berth("cluster", "create", CLUSTER)
    berth.ok("secret", "put", "/envfiles/shop.env", input="A=from-secret\nC=also-secret\n")
    try:
        container = _container("vault", [], environment=[{"name": "C", "value": "from-environment"}])
        container["environmentFiles"] = [
            {"value": "arn:aws:ssm:eu-west-1:123456789012:parameter/envfiles/shop.env", "type": "s3"}
        ]
        task_id, notes = _run(berth, tmp_path, "envsecret", container)
        try:
            assert notes.splitlines() == [
                "note: containerDefinitions[0].environmentFiles[0]: read from the Berth secret "
                "/envfiles/shop.env when the task starts"
            ]

            def output() -> list[str] | None:
                lines = berth("logs", task_id[:12], "--cluster", CLUSTER).stdout.splitlines()
                return lines if "end" in lines else None

            shown, _ = wait_until(output, 60, "the task's output")
            assert shown == ["A=from-secret", "B=", "C=from-environment", "Q=", "end"]
        finally:
            berth("task", "stop", task_id, "--cluster", CLUSTER)
    finally:
        berth("secret", "delete", "/envfiles/shop.env")
