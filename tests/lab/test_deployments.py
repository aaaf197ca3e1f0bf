"""Rolling deployments on the lab, with a client asking the service's VIP the whole time.

A good revision rolls out over 3 hosts with no failed request and within
the deployment's bounds; a revision that crashes at start, and one whose
health check never passes, trip the circuit breaker and are rolled back while
the old tasks keep serving; a control plane killed in the middle of a rollout
finishes it after its restart, with no duplicate task.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import docker
import pytest

from berth.testing.cli import Berth, definition_of
from berth.testing.lab import Lab
from berth.testing.waiting import wait_until
from berth.testing.workloads import http_revision
from tests.lab.conftest import delete_services
from tests.lab.traffic import TaskSampler, VipClient, running_by_host

DESIRED = 6


def _create(berth: Berth, tmp_path: Path, name: str) -> str:
    berth.register(name, http_revision("v1"), tmp_path)
    berth.ok(
        "service", "create", "--name", name, "--task-definition", f"{name}:1",
        "--desired-count", str(DESIRED), "--port", "80:http",
    )  # fmt: skip
    _wait_steady(berth, name, f"{name}:1")
    service: dict[str, Any] = berth.ok("service", "describe", name, "-o", "json").json()
    return str(service["berth"]["vip"])


def _wait_steady(berth: Berth, name: str, task_definition: str, timeout: float = 60) -> None:
    def steady() -> bool | None:
        described = berth.ok("service", "describe", name, "-o", "json").json()
        first = described["deployments"][0]
        done = (
            first["rolloutState"] == "COMPLETED" and definition_of(first["taskDefinition"]) == task_definition
        )
        return True if done and len(described["deployments"]) == 1 else None

    wait_until(steady, timeout, f"{name} steady on {task_definition}")


def _on_every_host(berth: Berth, name: str) -> dict[str, int]:
    """Where the service's tasks run, asserted to be on all 3 hosts (2/2/2 by the default spread)."""
    by_host = dict(sorted(running_by_host(berth, name).items()))
    assert sum(by_host.values()) == DESIRED and len(by_host) == 3, f"not on every host: {by_host}"
    return by_host


def _engines_running(lab: Lab, service: str) -> int:
    """Containers of the service running on the hosts' engines (ground truth)."""
    count = 0
    for host in lab.hosts:
        engine = docker.DockerClient(base_url=host.docker_url)
        try:
            count += len(
                engine.api.containers(filters={"label": f"berth.service={service}", "status": "running"})
            )
        finally:
            engine.close()
    return count


def test_a_good_revision_rolls_out_with_no_failed_request_within_its_bounds(
    berth: Berth, lab: Lab, tmp_path: Path
) -> None:
    vip = _create(berth, tmp_path, "roll")
    before = _on_every_host(berth, "roll")
    client = VipClient(lab, vip, 80)
    sampler = TaskSampler(lab.controlplane, "roll").start()
    try:
        wait_until(lambda: client.requests()[0] >= 20 or None, 30, "the client under way")
        berth.register("roll", http_revision("v2"), tmp_path)
        started = time.monotonic()
        update = berth(
            "service", "update", "roll", "--task-definition", "roll:2", "--wait", "--timeout", "180"
        )
        rollout = time.monotonic() - started
        assert update.exit_code == 0, update.stdout + update.stderr
        sampler.stop()
        requests, failed = client.finish()
        after = _on_every_host(berth, "roll")
        print(
            f"rolling update of {DESIRED} tasks over 3 hosts (default settings): {rollout:.1f} s; "
            f"client requests {requests}, failed {failed}; healthy never below {sampler.lowest_healthy}, "
            f"live never above {sampler.highest_live}; tasks per host {before} before, {after} after",
            file=sys.stderr,
        )
        assert failed == 0, f"{failed} of {requests} requests through the VIP failed"
        assert requests > 50
        # The defaults: minimumHealthyPercent 100, maximumPercent 200.
        assert sampler.lowest_healthy >= DESIRED
        assert sampler.highest_live <= 2 * DESIRED
        running = berth.running("default", "roll")
        assert len(running) == DESIRED and {definition_of(t) for t in running} == {"roll:2"}
        wait_until(lambda: _engines_running(lab, "roll") == DESIRED or None, 30, "old containers gone")
        events = berth.ok("service", "events", "roll").stdout
        assert "deployment 2 started: roll:2, 6 tasks" in events
        assert "deployment 2 completed: roll:2, 6 tasks running" in events
    finally:
        client.close()
        delete_services(berth, ["roll"])


@pytest.mark.parametrize("bad", ["crash", "unhealthy"])
def test_a_bad_revision_is_rolled_back_while_the_old_tasks_serve(
    berth: Berth, lab: Lab, tmp_path: Path, bad: str
) -> None:
    name = f"bad-{bad}"
    vip = _create(berth, tmp_path, name)
    client = VipClient(lab, vip, 80)
    sampler = TaskSampler(lab.controlplane, name).start()
    try:
        wait_until(lambda: client.requests()[0] >= 20 or None, 30, "the client under way")
        broken = (
            http_revision("v2", command="echo crashing; exit 3")
            if bad == "crash"
            else http_revision("v2", healthy=False)
        )
        berth.register(name, broken, tmp_path)
        update = berth(
            "service", "update", name, "--task-definition", f"{name}:2", "--wait", "--timeout", "180"
        )
        assert update.exit_code == 1, update.stdout + update.stderr
        _wait_steady(berth, name, f"{name}:1")
        sampler.stop()
        requests, failed = client.finish()

        described = berth.ok("service", "describe", name, "-o", "json").json()
        back = described["deployments"][0]
        assert back["berth"]["rolledBackFrom"] == 2 and definition_of(back["taskDefinition"]) == f"{name}:1"
        tasks = berth.ok("task", "list", "--service", name, "-o", "json").json()["tasks"]
        failures = [t for t in tasks if definition_of(t) == f"{name}:2" and t["lastStatus"] == "STOPPED"]
        first_failure = min(float(t["stoppedAt"]) for t in failures)
        rollback = float(back["berth"]["completedAt"]) - first_failure
        print(
            f"{bad} revision: rolled back {rollback:.1f} s after its first failed task; client requests "
            f"{requests}, failed {failed}; healthy never below {sampler.lowest_healthy}",
            file=sys.stderr,
        )
        assert failed == 0, f"{failed} of {requests} requests through the VIP failed"
        assert sampler.lowest_healthy >= DESIRED
        running = berth.running("default", name)
        assert len(running) == DESIRED and {definition_of(t) for t in running} == {f"{name}:1"}
        events = berth.ok("service", "events", name).stdout
        assert "deployment 2 failed: " in events and "rolled back to deployment 1" in events
        assert "steady state" not in update.stdout
        text = berth.ok("service", "describe", name).stdout
        assert "FAILED" in text and "rolled back" in text
    finally:
        client.close()
        delete_services(berth, [name])


def test_a_rollout_survives_kill_9_of_the_control_plane(berth: Berth, lab: Lab, tmp_path: Path) -> None:
    vip = _create(berth, tmp_path, "survivor")
    client = VipClient(lab, vip, 80)
    try:
        wait_until(lambda: client.requests()[0] >= 20 or None, 30, "the client under way")
        berth.register("survivor", http_revision("v2"), tmp_path)
        berth.ok("service", "update", "survivor", "--task-definition", "survivor:2")

        def new_running() -> bool | None:
            running = berth.running("default", "survivor")
            return True if any(definition_of(t) == "survivor:2" for t in running) else None

        wait_until(new_running, 60, "the rollout under way")
        # In the middle of it: new tasks RUNNING, the rollout not done (health checks every 5 s and a
        # deregistration delay of 5 s are still ahead of it).
        middle = berth.ok("service", "describe", "survivor", "-o", "json").json()["deployments"]
        primary = middle[0]  # the PRIMARY comes first
        assert (primary["id"], primary["rolloutState"]) == ("ecs-svc/2", "IN_PROGRESS"), middle
        asked_before_kill = client.requests()[0]
        lab.controlplane.kill9()
        lab.controlplane.restart()
        waited = berth("service", "wait", "survivor", "--timeout", "180")
        assert waited.exit_code == 0, waited.stdout + waited.stderr
        requests, failed = client.finish()
        running = berth.running("default", "survivor")
        assert len(running) == DESIRED and {definition_of(t) for t in running} == {"survivor:2"}
        wait_until(lambda: _engines_running(lab, "survivor") == DESIRED or None, 30, "no duplicate container")
        described = berth.ok("service", "describe", "survivor", "-o", "json").json()
        assert [d["id"] for d in described["deployments"]] == ["ecs-svc/2"], (
            "the rollout was restarted or forgotten"
        )
        print(
            f"kill -9 mid-rollout: client requests {requests} ({asked_before_kill} before the kill), "
            f"failed {failed}",
            file=sys.stderr,
        )
        assert asked_before_kill > 0 and requests > asked_before_kill, "the client was not asking throughout"
        assert failed == 0, f"{failed} of {requests} requests through the VIP failed"
    finally:
        client.close()
        delete_services(berth, ["survivor"])
