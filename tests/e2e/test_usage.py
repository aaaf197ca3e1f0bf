"""`berth top -o json` reports per-task CPU and memory that agree with the engine's own figures.

A task burns one core in a shell loop and holds ~48 MB in a shell variable.
The engine's figures come from `docker stats` (one reading over ~1 s, as the
CLI computes them: CPU from the cumulative delta over the system's, memory
as usage minus inactive_file). Tolerances: CPU within 256 units (a quarter of
a core), memory within 20 %. The two readings cover different seconds, so
the comparison is retried for up to 30 s to ride out a moment of load from
other work on the machine.
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from berth.testing.cli import Berth, id_of
from berth.testing.daemons import AgentProcess, ControlPlaneProcess, JoinFlags, free_port
from berth.testing.waiting import wait_until

CPU_TOLERANCE = 256.0
MEMORY_TOLERANCE = 0.20
HOLD = "x=$(head -c 48000000 /dev/zero | tr '\\0' a); timeout 120 sh -c 'while :; do :; done'; echo ${#x}"


@pytest.fixture()
def daemons(tmp_path: Path, test_image: str) -> Iterator[tuple[ControlPlaneProcess, AgentProcess, int]]:
    metrics_port = free_port()
    plane = ControlPlaneProcess(tmp_path / "cp", ["--metrics-listen", f"127.0.0.1:{metrics_port}"])
    plane.start()
    agent = AgentProcess(
        tmp_path / "agent",
        plane.address,
        ["--no-service-network", "--usage-interval", "1"],
        join=JoinFlags.of(plane),
    )
    agent.start()
    agent.wait_registered()
    try:
        yield plane, agent, metrics_port
    finally:
        agent.stop()
        agent.remove_containers()
        plane.stop()


def engine_figures(container_id: str) -> tuple[float, int]:
    """(CPU units, memory bytes) as `docker stats` computes them."""
    client = docker.APIClient()
    try:
        stats: dict[str, Any] = client.stats(container_id, stream=False)
    finally:
        client.close()
    cpu, pre = stats["cpu_stats"], stats["precpu_stats"]
    cpu_delta = cpu["cpu_usage"]["total_usage"] - pre["cpu_usage"]["total_usage"]
    system_delta = cpu["system_cpu_usage"] - pre.get("system_cpu_usage", 0)
    cores = cpu.get("online_cpus") or len(cpu["cpu_usage"].get("percpu_usage") or [1])
    units = cpu_delta / system_delta * cores * 1024 if system_delta > 0 else 0.0
    memory = stats["memory_stats"]
    detail = memory.get("stats") or {}
    inactive = detail.get("inactive_file", detail.get("total_inactive_file", 0))
    return units, int(memory["usage"] - inactive)


def top_task(berth: Berth, task_id: str) -> dict[str, Any] | None:
    usage = berth.ok("top", "--service", "burn", "-o", "json").json()
    return next((t for t in usage["tasks"] if t["taskId"] == task_id), None)


def test_top_agrees_with_the_engine(
    daemons: tuple[ControlPlaneProcess, AgentProcess, int], tmp_path: Path
) -> None:
    plane, agent, metrics_port = daemons
    berth = Berth.of(plane)
    berth.register(
        "burn",
        [
            {
                "name": "burn",
                "image": "berth-busybox:2",
                "cpu": 1024,
                "memory": 256,
                "essential": True,
                "entryPoint": ["sh", "-c"],
                "command": [HOLD],
                "stopTimeout": 2,
            }
        ],
        tmp_path,
    )
    berth.ok("service", "create", "--name", "burn", "--task-definition", "burn", "--desired-count", "1")
    try:
        [task], _ = wait_until(lambda: berth.running_exactly("default", 1, "burn"), 30, "burn RUNNING")
        task_id = id_of(task)
        [container] = agent.containers()

        def agreement() -> tuple[dict[str, Any], float, int] | None:
            reported = top_task(berth, task_id)
            if reported is None:
                return None
            units, memory = engine_figures(container.id)
            cpu_ok = abs(reported["cpuUnits"] - units) <= CPU_TOLERANCE
            memory_ok = abs(int(reported["memoryBytes"]) - memory) <= MEMORY_TOLERANCE * memory
            return (reported, units, memory) if cpu_ok and memory_ok and memory > 40_000_000 else None

        (reported, units, memory), _ = wait_until(agreement, 30, "top agrees with docker stats", 1.0)
        print(
            f"top: {reported['cpuUnits']:.0f} CPU units, {int(reported['memoryBytes'])} bytes; "
            f"docker stats: {units:.0f} CPU units, {memory} bytes"
        )
        assert 700 <= reported["cpuUnits"] <= 1300, reported  # one busy core
        assert abs(reported["cpuPercent"] - reported["cpuUnits"] / 1024 * 100) < 1e-6
        assert reported["memoryPercent"] == pytest.approx(int(reported["memoryBytes"]) / (256 << 20) * 100)
        assert [c["name"] for c in reported["containers"]] == ["burn"]

        usage = berth.ok("top", "--service", "burn", "-o", "json").json()
        [service] = usage["services"]
        assert service["counted"] == 1 and service["cpuPercent"] > 50
        [node] = usage["nodes"]
        assert node["tasks"] == 1 and int(node["memoryTotalBytes"]) > 0
        table = berth.ok("top").stdout
        assert task_id[:12] in table and "burn" in table
        assert "utilization:      cpu" in berth.ok("service", "describe", "burn").stdout

        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        assert re.search(
            rf'^berth_task_cpu_units{{cluster="default",service="burn",task="{task_id}"}} ', text, re.M
        )
        assert re.search(rf'^berth_task_memory_bytes{{.*task="{task_id}"}} ', text, re.M)
        assert re.search(r"^berth_node_cpu_percent\{node=", text, re.M)
    finally:
        berth("service", "delete", "burn")

    def gone() -> bool | None:
        usage = berth.ok("top", "-o", "json").json()
        return True if not usage.get("tasks") else None

    wait_until(gone, 60, "the stopped task leaves berth top")
