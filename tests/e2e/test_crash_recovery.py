"""kill -9 of the control plane or the agent loses nothing and duplicates nothing."""

from __future__ import annotations

import time
from typing import Any

from berth.testing.cli import Berth, id_of
from berth.testing.daemons import REPO, AgentProcess, ControlPlaneProcess
from berth.testing.waiting import wait_until

EXAMPLE = REPO / "examples" / "web.json"


def _containers(agent: AgentProcess, cluster: str) -> dict[str, tuple[str, str]]:
    """task id -> (container id, started at), for every container of cluster on this agent, in any state.

    Fails when a task has more than one container (running or not): a second
    copy must never collapse into the first and hide a duplicate.
    """
    per_task: dict[str, list[tuple[str, str]]] = {}
    for container in agent.containers(all=True):
        if container.labels.get("berth.cluster") != cluster:
            continue
        per_task.setdefault(container.labels["berth.task-id"], []).append(
            (container.id, container.started_at)
        )
    duplicated = {task: found for task, found in per_task.items() if len(found) != 1}
    assert not duplicated, f"tasks with more than one container: {duplicated}"
    return {task: found[0] for task, found in per_task.items()}


def _start_service(berth: Berth, cluster: str) -> list[dict[str, Any]]:
    berth.ok("cluster", "create", cluster)
    berth.ok(
        "taskdef", "register", "--family", f"web-{cluster}", "--container-definitions", f"file://{EXAMPLE}"
    )
    berth.ok(
        "service",
        "create",
        "--cluster",
        cluster,
        "--name",
        "web",
        "--task-definition",
        f"web-{cluster}",
        "--desired-count",
        "3",
    )
    running, _ = wait_until(lambda: berth.running_exactly(cluster, 3), 15, "3 RUNNING")
    return running


def test_controlplane_kill9_and_restart_changes_nothing(
    berth: Berth, agent: AgentProcess, controlplane: ControlPlaneProcess
) -> None:
    running = _start_service(berth, "cpcrash")
    before = _containers(agent, "cpcrash")
    assert len(before) == 3

    controlplane.kill9()
    # Static stability: with the control plane gone, containers keep running.
    time.sleep(2)
    assert _containers(agent, "cpcrash") == before
    controlplane.restart()

    wait_until(lambda: len(berth.running("cpcrash")) == 3, 15, "3 RUNNING after the restart")
    # Give the controllers and the reconnected agent time to do anything wrong.
    time.sleep(3)
    tasks = berth.tasks("cpcrash")
    assert sorted(id_of(t) for t in tasks) == sorted(id_of(t) for t in running), (
        "tasks were added or replaced"
    )
    assert all(t["lastStatus"] == "RUNNING" for t in tasks)
    assert _containers(agent, "cpcrash") == before, "containers were restarted or duplicated"


def test_agent_kill9_and_restart_adopts_its_containers(berth: Berth, agent: AgentProcess) -> None:
    running = _start_service(berth, "agentcrash")
    before = _containers(agent, "agentcrash")
    assert len(before) == 3

    agent.kill9()
    time.sleep(1)
    assert _containers(agent, "agentcrash") == before, "containers must outlive their agent"
    agent.start()
    wait_until(
        lambda: "event=connected" in agent.log_path.read_text().split("agent_started")[-1],
        15,
        "the restarted agent to connect",
    )
    time.sleep(3)
    assert _containers(agent, "agentcrash") == before, "the restarted agent must adopt, not duplicate"
    tasks = berth.tasks("agentcrash")
    assert sorted(id_of(t) for t in tasks) == sorted(id_of(t) for t in running)
    assert all(t["lastStatus"] == "RUNNING" for t in tasks)

    # The adopted containers are really managed: a kill is still healed.
    victim_task = next(iter(before))
    import docker

    client = docker.from_env()
    client.containers.get(before[victim_task][0]).kill()
    client.close()
    wait_until(
        lambda: (
            len(berth.running("agentcrash")) == 3
            and victim_task not in {id_of(t) for t in berth.running("agentcrash")}
        ),
        5,
        "a replacement",
    )


def test_sigterm_stops_both_daemons_cleanly_and_leaves_containers(
    berth: Berth, agent: AgentProcess, controlplane: ControlPlaneProcess
) -> None:
    _start_service(berth, "sigterm")
    before = _containers(agent, "sigterm")
    assert len(before) == 3
    assert agent.stop(timeout=15) == 0
    assert "event=agent_stopped" in agent.log_path.read_text()
    assert controlplane.stop(timeout=15) == 0
    log = controlplane.log_path.read_text()
    assert "event=controlplane_stopped" in log and "event=etcd_stopped" in log
    # Stopping Berth is not stopping the workload.
    assert _containers(agent, "sigterm") == before
    controlplane.restart()
    agent.start()
    wait_until(lambda: berth.running_exactly("sigterm", 3), 15, "3 RUNNING after both restarted")
    time.sleep(2)
    assert _containers(agent, "sigterm") == before
