"""Health checks on the lab: a task that turns UNHEALTHY in steady state leaves every host's
rules and is replaced at once, gets its SIGTERM only after the deregistration delay, and a
client on the VIP keeps being served."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import docker

from berth.testing.cli import Berth, id_of, node_of
from berth.testing.lab import Lab
from berth.testing.waiting import wait_until
from tests.lab.conftest import delete_services
from tests.lab.test_service_network import IMAGE, dnat_targets, endpoint_set, http_get

# Healthy while /tmp/ok exists; the test removes it in one container. On SIGTERM it
# says when (whole seconds: busybox's date has no %N) and exits at once: the
# deregistration delay, not the container, is what lets requests in flight finish.
CHECKED = [
    {
        "name": "web",
        "image": IMAGE,
        "cpu": 32,
        "memory": 32,
        "stopTimeout": 10,
        "portMappings": [{"containerPort": 8080, "name": "http"}],
        "entryPoint": ["sh", "-c"],
        "command": [
            "mkdir -p /www /tmp && hostname > /www/index.html && touch /tmp/ok && "
            "trap 'echo SIGTERM at $(date +%s); exit 0' TERM; httpd -f -p 8080 -h /www & wait"
        ],
        "healthCheck": {
            "command": ["CMD-SHELL", "test -f /tmp/ok || { echo no /tmp/ok; exit 1; }"],
            "interval": 5,
            "timeout": 2,
            "retries": 1,
        },
    }
]


def _healthy(berth: Berth, count: int) -> list[dict[str, Any]] | None:
    running = berth.running("default", "checked")
    healthy = [t for t in running if t.get("healthStatus") == "HEALTHY"]
    return healthy if len(running) == count and len(healthy) == count else None


def test_an_unhealthy_task_leaves_the_rules_while_running_and_is_replaced(
    berth: Berth, lab: Lab, tmp_path: Path
) -> None:
    path = tmp_path / "checked.json"
    path.write_text(json.dumps(CHECKED))
    berth.ok("taskdef", "register", "--family", "checked", "--container-definitions", f"file://{path}")
    berth.ok(
        "service", "create", "--name", "checked", "--task-definition", "checked", "--desired-count", "2",
        "--port", "80:http",
    )  # fmt: skip
    h1 = lab.host("h1")
    engine = docker.DockerClient(base_url=h1.docker_url)
    runner = None
    try:
        wait_until(lambda: _healthy(berth, 2), 30, "2 HEALTHY tasks")
        vip: str = berth.ok("service", "describe", "checked", "-o", "json").json()["berth"]["vip"]
        serving = endpoint_set(berth, "checked")
        wait_until(lambda: all(dnat_targets(h, vip) == serving for h in lab.hosts), 10, "rules on every host")

        # A client that keeps asking (bounded: 400 requests, 0.05 s apart) through the VIP.
        loop = (
            f"i=0; while [ $i -lt 400 ]; do out=$({http_get(vip, 80)}); "
            f'[ -n "$out" ] && echo "r$i:ok" || echo "r$i:fail"; i=$((i+1)); sleep 0.05; done'
        )
        runner = engine.containers.run(IMAGE, ["sh", "-c", loop], dns=[h1.address], detach=True)

        originals = berth.running("default", "checked")
        victim = originals[0]
        host = next(h for h in lab.hosts if lab.agents[h.name].node_id == node_of(victim))
        victim_engine = docker.DockerClient(base_url=host.docker_url)
        try:
            container = victim_engine.containers.get(victim["containers"][0]["runtimeId"])
            rows = berth.ok("service", "endpoints", "checked", "-o", "json").json()["endpoints"]
            gone_endpoint = {f"{r['address']}:{r['port']}" for r in rows if r["taskId"] == id_of(victim)}
            assert len(gone_endpoint) == 1
            container.exec_run(["rm", "-f", "/tmp/ok"])

            # Within one check interval it is UNHEALTHY; its endpoint leaves every host's
            # rules while its container still runs, and a replacement starts at once.
            _, took = wait_until(
                lambda: all(not dnat_targets(h, vip) & gone_endpoint for h in lab.hosts),
                20,
                "the unhealthy endpoint gone from every host's rules",
                interval=0.05,
            )
            gone_at = time.time()  # every host's rules were seen without it by now
            container.reload()
            assert container.status == "running", "the endpoint left the rules only after the stop"
        finally:
            victim_engine.close()

        def stopped_task() -> dict[str, Any] | None:
            task: dict[str, Any] = berth.ok("task", "describe", id_of(victim), "-o", "json").json()
            return task if task["lastStatus"] == "STOPPED" else None

        stopped, _ = wait_until(stopped_task, 30, "the unhealthy task STOPPED")
        assert stopped["healthStatus"] == "UNHEALTHY"
        assert stopped["stoppedReason"] == "Task failed container health checks"
        assert stopped["stopCode"] == "ServiceSchedulerInitiated" and stopped["berth"]["failedHealthCheck"]
        assert "deregisteredAt" in stopped["berth"]
        said = re.findall(r"SIGTERM at (\d+)", " ".join(stopped["berth"]["keptOutput"]["lines"]))
        assert said, f"the container never said it got SIGTERM: {stopped['berth']['keptOutput']}"
        sigterm_at = int(said[-1])  # the whole second: SIGTERM came at or after it
        # Every host's rules had dropped the endpoint a second or more before SIGTERM reached the
        # container (a stop written with the deregistration would race SIGTERM against the rules).
        print(f"unhealthy endpoint gone from every host's rules {took:.1f} s after /tmp/ok went; "
              f"SIGTERM {sigterm_at - gone_at:.1f} s after that (or more)", file=sys.stderr)  # fmt: skip
        assert sigterm_at - gone_at >= 1, (
            f"SIGTERM reached the container at {sigterm_at}, the rules were gone at {gone_at:.2f}"
        )
        replacements, _ = wait_until(lambda: _healthy(berth, 2), 30, "a HEALTHY replacement")
        assert id_of(victim) not in {id_of(t) for t in replacements}
        # Replaced at once: its replacement was created before the victim got SIGTERM.
        (replacement,) = [t for t in replacements if id_of(t) not in {id_of(o) for o in originals}]
        assert float(replacement["createdAt"]) < sigterm_at
        after = endpoint_set(berth, "checked")
        wait_until(
            lambda: all(dnat_targets(h, vip) == after for h in lab.hosts), 10, "rules with the replacement"
        )
        events = berth.ok("service", "describe", "checked").stdout
        assert (
            f"task {id_of(victim)[:12]} failed its health check (exit 1: no /tmp/ok) and was replaced"
            in events
        )

        runner.wait(timeout=120)
        results = dict(re.findall(r"\br(\d+):(ok|fail)\b", runner.logs().decode()))
    finally:
        if runner is not None:
            runner.remove(force=True)
        engine.close()
        delete_services(berth, ["checked"])
    failed = sum(1 for outcome in results.values() if outcome == "fail")
    print(f"requests while a task turned unhealthy and was replaced: {len(results)}, failed: {failed}",
          file=sys.stderr)  # fmt: skip
    assert len(results) == 400
    assert failed == 0, f"{failed} of 400 requests through the VIP failed"
