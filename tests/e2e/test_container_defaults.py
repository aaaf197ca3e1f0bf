"""Containers Berth starts are hardened beyond the engine's defaults (real Docker)."""

from __future__ import annotations

import docker

from berth.testing.cli import Berth
from berth.testing.daemons import REPO, AgentProcess
from berth.testing.waiting import wait_until

EXAMPLE = REPO / "examples" / "web.json"


def test_a_started_container_has_no_new_privileges_and_a_pids_limit(
    berth: Berth, agent: AgentProcess
) -> None:
    berth.ok("cluster", "create", "hardened")
    berth.ok("taskdef", "register", "--family", "hardened", "--container-definitions", f"file://{EXAMPLE}")
    berth.ok(
        "service",
        "create",
        "--cluster",
        "hardened",
        "--name",
        "web",
        "--task-definition",
        "hardened",
        "--desired-count",
        "1",
    )
    wait_until(lambda: berth.running_exactly("hardened", 1, "web"), 20, "1 RUNNING task")
    (container,) = [c for c in agent.containers() if c.labels.get("berth.cluster") == "hardened"]

    client = docker.DockerClient(base_url=agent.docker_url)
    try:
        host_config = client.api.inspect_container(container.id)["HostConfig"]
    finally:
        client.close()
    assert "no-new-privileges:true" in (host_config["SecurityOpt"] or [])
    assert host_config["PidsLimit"] == 4096  # the agent's default --pids-limit

    berth.ok("service", "update", "web", "--cluster", "hardened", "--desired-count", "0")
