"""The workload the chaos runs under: continuous scaling, rolling deployments and services
created and deleted, every write made through the `berth` CLI and recorded in a Ledger.

Two long-lived services: "web" (an HTTP server behind a VIP, health-checked, so its rollouts are
gated on health and the VIP client has something to call) and "worker" (a process that only
sleeps). Short-lived "tmp-N" services are created and deleted in turn. Each `step()` makes one
write chosen by the seeded random generator.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from berth.testing.chaos.ledger import Ledger
from berth.testing.cli import Berth
from berth.testing.workloads import IMAGE, http_revision

WEB_PORT = 80


def web_revision(version: int) -> list[dict[str, Any]]:
    """An HTTP server answering its version; healthy once it answers itself."""
    return http_revision(f"v{version}")


def sleeper_revision(family: str, version: int) -> list[dict[str, Any]]:
    return [
        {
            "name": family,
            "image": IMAGE,
            "cpu": 16,
            "memory": 16,
            "stopTimeout": 1,
            "entryPoint": ["sh", "-c"],
            "command": [f"echo {family} v{version}; trap 'exit 0' TERM; sleep 100000 & wait"],
        }
    ]


@dataclass(frozen=True)
class Shape:
    """A long-lived service: how it is built and the counts it is scaled between."""

    name: str
    revision: Callable[[int], list[dict[str, Any]]]
    initial: int
    lowest: int
    highest: int
    # Further `service create` options.
    options: tuple[str, ...] = ()
    # Seconds between two deployments, at least.
    deploy_every: float = 0.0


SHAPES = (
    # Spread over the zones (one host each) and never below 2, as a service meant to survive a
    # host would be run: one host down leaves the VIP client an endpoint.
    Shape(
        "web",
        web_revision,
        initial=3,
        lowest=2,
        highest=5,
        options=("--port", f"{WEB_PORT}:http", "--placement-strategy", "type=spread,field=attribute:zone"),
        # Its health check runs every 5 s: a deployment every second or two would keep replacing
        # tasks before any became healthy, an outage of the workload's own making.
        deploy_every=10.0,
    ),
    Shape("worker", lambda v: sleeper_revision("worker", v), initial=2, lowest=0, highest=5),
)


class Workload:
    """Writes through `berth`, recorded in `ledger`; task definitions are written to `directory`."""

    def __init__(self, berth: Berth, rng: random.Random, directory: Path):
        self.berth = berth
        self.rng = rng
        self.directory = directory
        self.ledger = Ledger()
        # Writes by operation and outcome ("scale ok", "deploy failed"), for the report.
        self.outcomes: Counter[str] = Counter()
        self._versions = {shape.name: 1 for shape in SHAPES}
        self._tmp_serial = 0
        self._tmp: str | None = None
        # When each service's last deployment was asked for (time.monotonic()).
        self._deployed: dict[str, float] = {}

    # -- setup -----------------------------------------------------------------------------

    def setup(self) -> None:
        """Register the first revisions and create the long-lived services (these must succeed)."""
        for shape in SHAPES:
            self.berth.ok(*self._register_args(shape.name, shape.revision(1)))
            self.berth.ok(
                "service", "create", "--name", shape.name, "--task-definition", f"{shape.name}:1",
                "--desired-count", str(shape.initial), *shape.options,
            )  # fmt: skip
            self.ledger.record(f"{shape.name}/exists", True, True)
            self.ledger.record(f"{shape.name}/count", shape.initial, True)
            self.ledger.record(f"{shape.name}/taskdef", f"{shape.name}:1", True)
        self.berth.ok(*self._register_args("tmp", sleeper_revision("tmp", 1)))

    def vip(self) -> str:
        described = self.berth.ok("service", "describe", "web", "-o", "json").json()
        return str(described["berth"]["vip"])

    # -- writes ----------------------------------------------------------------------------

    def step(self) -> str:
        """One write, chosen at random; a line saying what and whether it was acknowledged."""
        roll = self.rng.random()
        shape = self.rng.choice(SHAPES)
        if 0.4 <= roll < 0.75 and self._may_deploy(shape):
            return self.deploy(shape)
        if roll < 0.75:
            return self.scale(shape, self.rng.randint(shape.lowest, shape.highest))
        return self.churn()

    def _may_deploy(self, shape: Shape) -> bool:
        """A service deploys at most once per its `deploy_every` seconds (web: longer than a new
        task takes to pass its health check, so rollouts overlap sometimes but not always)."""
        return time.monotonic() - self._deployed.get(shape.name, -1e9) >= shape.deploy_every

    def scale(self, shape: Shape, count: int) -> str:
        result = self.berth("service", "update", shape.name, "--desired-count", str(count))
        self.ledger.record(f"{shape.name}/count", count, result.exit_code == 0)
        return self._line("scale", f"{shape.name} to {count}", result.exit_code, result.stderr)

    def deploy(self, shape: Shape) -> str:
        """Register the next revision and roll the service to it."""
        version = self._versions[shape.name] + 1
        registered = self.berth(*self._register_args(shape.name, shape.revision(version)))
        found = re.search(rf"registered {shape.name}:(\d+)", registered.stdout)
        if registered.exit_code != 0 or found is None:
            # Perhaps registered, perhaps not: the next deploy registers a newer one either way.
            return self._line("register", f"{shape.name} v{version}", registered.exit_code, registered.stderr)
        self._versions[shape.name] = version
        self._deployed[shape.name] = time.monotonic()
        definition = f"{shape.name}:{found.group(1)}"
        result = self.berth("service", "update", shape.name, "--task-definition", definition)
        self.ledger.record(f"{shape.name}/taskdef", definition, result.exit_code == 0)
        return self._line("deploy", f"{definition} to {shape.name}", result.exit_code, result.stderr)

    def churn(self) -> str:
        """Create a tmp service when there is none, else delete it."""
        if self._tmp is None:
            self._tmp_serial += 1
            name = f"tmp-{self._tmp_serial}"
            # Known before the create: it does not exist.
            self.ledger.record(f"{name}/exists", False, True)
            result = self.berth(
                "service", "create", "--name", name, "--task-definition", "tmp:1", "--desired-count", "1"
            )
            self.ledger.record(f"{name}/exists", True, result.exit_code == 0)
            self.ledger.record(f"{name}/count", 1, result.exit_code == 0)
            self.ledger.record(f"{name}/taskdef", "tmp:1", result.exit_code == 0)
            self._tmp = name
            return self._line("create", name, result.exit_code, result.stderr)
        name, self._tmp = self._tmp, None
        result = self.berth("service", "delete", name)
        self.ledger.record(f"{name}/exists", False, result.exit_code == 0)
        return self._line("delete", name, result.exit_code, result.stderr)

    def _register_args(self, family: str, containers: list[dict[str, Any]]) -> list[str]:
        path = self.directory / f"{family}.json"
        path.write_text(json.dumps(containers))
        return ["taskdef", "register", "--family", family, "--container-definitions", f"file://{path}"]

    def _line(self, operation: str, what: str, exit_code: int, stderr: str) -> str:
        self.outcomes[f"{operation} {'ok' if exit_code == 0 else 'failed'}"] += 1
        if exit_code == 0:
            return f"{operation} {what}: acknowledged"
        why = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit code {exit_code}"
        return f"{operation} {what}: FAILED ({why})"
