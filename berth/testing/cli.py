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

    def __call__(self, *args: str, stdin: str | None = None) -> CliResult:
        """The command's result; `stdin` is what it reads on stdin (default: nothing)."""
        config = ["--config", str(self.config)] if self.config is not None else []
        result = self._runner.invoke(
            app, ["--server", self.server, *config, *args], input=stdin, catch_exceptions=False
        )
        return CliResult(result.exit_code, result.stdout, result.stderr)

    def ok(self, *args: str) -> CliResult:
        result = self(*args)
        assert result.exit_code == 0, f"berth {' '.join(args)} failed: {result.stderr or result.stdout}"
        return result

    def tasks(self, cluster: str, service: str = "") -> list[dict[str, Any]]:
        args = ["task", "list", "--cluster", cluster, "-o", "json"]
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

    def nodes_exactly(self, count: int) -> list[dict[str, Any]] | None:
        """The nodes when there are exactly `count` of them, else None (for wait_until)."""
        nodes: list[dict[str, Any]] = self.ok("node", "list", "-o", "json").json()["nodes"]
        return nodes if len(nodes) == count else None

    def register(self, family: str, containers: list[dict[str, Any]], directory: Path) -> CliResult:
        """Register ECS container definitions as the family's next revision (written to a file first)."""
        path = directory / f"{family}.json"
        path.write_text(json.dumps(containers))
        return self.ok("taskdef", "register", "--family", family, "--container-definitions", f"file://{path}")
