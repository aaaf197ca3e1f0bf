"""Runs the real `berth` CLI in-process, the way an operator would type it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from berth.cli.main import app
from berth.testing.daemons import ControlPlaneProcess


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def assert_refused(self, message: str) -> None:
        """The command failed with exactly one line, `error: ...`, that contains `message`."""
        assert self.exit_code != 0
        lines = self.stderr.strip().splitlines()
        assert len(lines) == 1, f"expected one line, got: {self.stderr!r}"
        assert lines[0].startswith("error: ")
        assert message in lines[0]


# The CLI's -o json prints ECS's objects (berth.ecs.shapes); these read the facts tests
# check most often out of them.


def arn_name(arn: str) -> str:
    """The last part of an ARN: a task's id, a service's or cluster's name."""
    return arn.rsplit("/", 1)[-1]


def id_of(task: dict[str, Any]) -> str:
    return arn_name(task["taskArn"])


def node_of(task: dict[str, Any]) -> str:
    """The node id a task is placed on ("" while unplaced)."""
    return str(task["berth"].get("nodeId", ""))


def service_of(task: dict[str, Any]) -> str:
    """The service that started a task ("" for a one-off task)."""
    return str(task["berth"].get("service", ""))


def exit_code_of(task: dict[str, Any]) -> int | None:
    """The task's exit code (its essential container's), None when it has none."""
    code = task["berth"].get("exitCode")
    return None if code is None else int(code)


def definition_of(task_or_arn: dict[str, Any] | str) -> str:
    """ "family:revision" of a task's definition, or of a task definition ARN (a service's
    or a deployment's taskDefinition)."""
    arn = task_or_arn if isinstance(task_or_arn, str) else str(task_or_arn["taskDefinitionArn"])
    return arn.split(":task-definition/", 1)[1]


def bindings(task: dict[str, Any]) -> list[dict[str, Any]]:
    """Every network binding of a task's containers."""
    return [b for c in task["containers"] for b in c["networkBindings"]]


def container_of(task: dict[str, Any], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [c for c in task["containers"] if c["name"] == name]
    assert found, f"task {id_of(task)} has no container {name!r}"
    return found[0]


def node_id_of(instance: dict[str, Any]) -> str:
    """A container instance's (node's) Berth id."""
    return str(instance["berth"]["nodeId"])


class Berth:
    """The CLI in-process, as one user: `config` holds their credentials (None: found as
    the CLI finds them, `--config`, then BERTH_CONFIG, then ~/.config/berth/config)."""

    def __init__(self, server: str, config: Path | None = None) -> None:
        self.server = server
        self.config = config
        self._runner = CliRunner()

    @classmethod
    def of(cls, plane: ControlPlaneProcess) -> Berth:
        """The administrator of a control plane the tests started."""
        return cls(plane.address, plane.admin_config)

    def __call__(self, *args: str, input: bytes | str | None = None) -> CliResult:
        """input: the command's standard input (e.g. a secret's value)."""
        config = ["--config", str(self.config)] if self.config is not None else []
        result = self._runner.invoke(
            app, ["--server", self.server, *config, *args], input=input, catch_exceptions=False
        )
        return CliResult(result.exit_code, result.stdout, result.stderr)

    def ok(self, *args: str, input: bytes | str | None = None) -> CliResult:
        result = self(*args, input=input)
        assert result.exit_code == 0, f"berth {' '.join(args)} failed: {result.stderr or result.stdout}"
        return result

    def tasks(self, cluster: str, service: str = "") -> list[dict[str, Any]]:
        args = ["task", "list", "--all", "--cluster", cluster, "-o", "json"]
        if service:
            args += ["--service", service]
        tasks: list[dict[str, Any]] = self.ok(*args).json()["tasks"]
        return tasks

    def running(self, cluster: str, service: str = "") -> list[dict[str, Any]]:
        return [t for t in self.tasks(cluster, service) if t["lastStatus"] == "RUNNING"]

    def running_exactly(self, cluster: str, count: int, service: str = "") -> list[dict[str, Any]] | None:
        """The RUNNING tasks when there are exactly `count` of them, else None (for wait_until)."""
        running = self.running(cluster, service)
        return running if len(running) == count else None

    def instances(self) -> list[dict[str, Any]]:
        """The nodes, as ECS's container instances (`node list -o json`)."""
        nodes: list[dict[str, Any]] = self.ok("node", "list", "-o", "json").json()["containerInstances"]
        return nodes

    def nodes_exactly(self, count: int) -> list[dict[str, Any]] | None:
        """The nodes when there are exactly `count` of them, else None (for wait_until)."""
        nodes = self.instances()
        return nodes if len(nodes) == count else None

    def register(self, family: str, containers: list[dict[str, Any]], directory: Path) -> CliResult:
        """Register ECS container definitions as the family's next revision (written to a file first)."""
        path = directory / f"{family}.json"
        path.write_text(json.dumps(containers))
        return self.ok("taskdef", "register", "--family", family, "--container-definitions", f"file://{path}")
