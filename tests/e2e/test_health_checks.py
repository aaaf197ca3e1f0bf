"""Health checks on real Docker: a task serves once HEALTHY, and is replaced when it turns UNHEALTHY;
the stopped task keeps its health history, also through a kill -9 of the control plane."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from berth.testing.cli import Berth, id_of
from berth.testing.daemons import AgentProcess, ControlPlaneProcess
from berth.testing.waiting import wait_until

CLUSTER = "health"
# Healthy while /tmp/ok exists: the container creates it (the image, FROM scratch, has
# no /tmp), then removes it after 12 s, so the check (every 5 s, one failure is
# enough) turns it UNHEALTHY.
CONTAINERS = [
    {
        "name": "web",
        "image": "berth-busybox:2",
        "memory": 64,
        "essential": True,
        "portMappings": [{"name": "http", "containerPort": 8080, "hostPort": 0}],
        "entryPoint": ["sh", "-c"],
        "command": [
            "mkdir -p /www /tmp; echo ok > /www/index.html; touch /tmp/ok; (sleep 12; rm -f /tmp/ok) & "
            "trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait"
        ],
        "healthCheck": {
            "command": ["CMD-SHELL", "test -f /tmp/ok || { echo no /tmp/ok; exit 1; }"],
            "interval": 5,
            "timeout": 2,
            "retries": 1,
        },
        "stopTimeout": 2,
    }
]


def _task(berth: Berth, task_id: str) -> dict[str, Any]:
    task: dict[str, Any] = berth.ok("task", "describe", task_id, "--cluster", CLUSTER, "-o", "json").json()
    return task


def _endpoint_tasks(berth: Berth) -> set[str]:
    rows = berth.ok("service", "endpoints", "web", "--cluster", CLUSTER, "-o", "json").json()["endpoints"]
    return {row["taskId"] for row in rows}


def _history(task: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(c["container"], c["healthStatus"], c.get("output", "")) for c in task["berth"]["healthHistory"]]


def test_a_task_serves_once_healthy_and_is_replaced_when_unhealthy(
    berth: Berth, agent: AgentProcess, controlplane: ControlPlaneProcess, tmp_path: Path
) -> None:
    definitions = tmp_path / "web.json"
    definitions.write_text(json.dumps(CONTAINERS))
    berth.ok("cluster", "create", CLUSTER)
    berth.ok("taskdef", "register", "--family", "checked", "--container-definitions", f"file://{definitions}")
    described = berth.ok("taskdef", "describe", "checked").stdout
    assert "interval=5s timeout=2s retries=1 startPeriod=0s" in described
    berth.ok(
        "service", "create", "--cluster", CLUSTER, "--name", "web", "--task-definition", "checked",
        "--desired-count", "1", "--port", "80:http",
    )  # fmt: skip
    try:
        (first,), _ = wait_until(lambda: berth.running_exactly(CLUSTER, 1, "web"), 20, "1 RUNNING task")
        task_id = id_of(first)

        # Before its first check passes the task is RUNNING but no endpoint. Health only goes
        # UNKNOWN -> HEALTHY here, so a describe taken after the endpoint list proves it.
        serving = _endpoint_tasks(berth)
        if _task(berth, task_id)["healthStatus"] == "UNKNOWN":
            assert task_id not in serving

        healthy, _ = wait_until(
            lambda: (t := _task(berth, task_id)).get("healthStatus") == "HEALTHY" and t, 20, "task HEALTHY"
        )
        assert healthy["containers"][0]["healthStatus"] == "HEALTHY"
        assert task_id in _endpoint_tasks(berth)
        shown = berth.ok("task", "describe", task_id, "--cluster", CLUSTER).stdout
        assert "health:           HEALTHY" in shown
        assert "HEALTHY" in berth.ok("task", "list", "--cluster", CLUSTER).stdout

        # /tmp/ok goes at 12 s; the next check fails: UNHEALTHY, replaced, stopped after the delay.
        stopped, _ = wait_until(
            lambda: (t := _task(berth, task_id)).get("desiredStatus") == "STOPPED" and t,
            30,
            "the unhealthy task asked to stop",
        )
        assert stopped["healthStatus"] == "UNHEALTHY"
        assert stopped["containers"][0]["berth"]["healthOutput"] == "exit 1: no /tmp/ok"
        assert stopped["stopCode"] == "ServiceSchedulerInitiated"
        assert stopped["stoppedReason"] == "Task failed container health checks"
        assert task_id not in _endpoint_tasks(berth)
        wait_until(
            lambda: any(id_of(t) != task_id for t in berth.running(CLUSTER, "web")), 20, "a replacement"
        )
        final, _ = wait_until(
            lambda: (t := _task(berth, task_id))["lastStatus"] == "STOPPED" and t,
            20,
            "the unhealthy task STOPPED",
        )
        # Out of the endpoints first, stopped only once the deregistration delay (5 s) had passed.
        assert final["berth"]["failedHealthCheck"]
        assert float(final["stoppedAt"]) - float(final["berth"]["deregisteredAt"]) >= 5
        events = berth.ok("service", "describe", "web", "--cluster", CLUSTER).stdout
        assert f"task {task_id[:12]} failed its health check (exit 1: no /tmp/ok) and was replaced" in events

        # The stopped task keeps its health history, in its own record: through a kill -9 too.
        history = [("web", "HEALTHY", ""), ("web", "UNHEALTHY", "exit 1: no /tmp/ok")]
        stopped = _task(berth, task_id)
        assert _history(stopped) == history
        changed_at = [c["at"] for c in stopped["berth"]["healthHistory"]]
        assert stopped["createdAt"] <= changed_at[0] < changed_at[1] <= stopped["stoppedAt"]
        shown = berth.ok("task", "describe", task_id, "--cluster", CLUSTER).stdout
        lines = shown[shown.index("health history (oldest first):") :].splitlines()
        assert re.fullmatch(r"  \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ  web  HEALTHY", lines[1]), shown
        assert re.fullmatch(r"  \S+Z  web  UNHEALTHY  exit 1: no /tmp/ok", lines[2]), shown
        controlplane.kill9()
        controlplane.restart()
        assert _history(_task(berth, task_id)) == history
    finally:
        berth.ok("service", "update", "web", "--cluster", CLUSTER, "--desired-count", "0")


def test_a_health_check_outside_ecs_limits_is_refused_in_one_line_and_registers_nothing(
    berth: Berth, tmp_path: Path
) -> None:
    before = berth.ok("taskdef", "list", "-o", "json").stdout
    for check, message in (
        ({"command": ["CMD-SHELL", "true"], "interval": 1}, "healthCheck.interval"),
        ({"command": ["CMD-SHELL", "true"], "retries": 11}, "healthCheck.retries"),
        ({"command": ["true"]}, "healthCheck.command must be"),
    ):
        definitions = tmp_path / "bad.json"
        definitions.write_text(json.dumps([{**CONTAINERS[0], "healthCheck": check}]))
        result = berth(
            "taskdef", "register", "--family", "badcheck", "--container-definitions", f"file://{definitions}"
        )
        assert result.exit_code != 0
        assert message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert berth.ok("taskdef", "list", "-o", "json").stdout == before
