"""Target tracking on real CPU load (real control plane, agent and Docker): a service of 1 whose
task burns CPU while a file exists in its container scales out to at least 3 within 60 s of the
load starting, and back to its minimum of 1 after the load stops and the scale-in window passes,
with a bounded number of scaling events (no oscillation).

The task reserves 256 CPU units (a quarter core), so one busy shell loop is ~400 % of its
reservation against a target of 50 %. The load is bounded: the loop burns only while /tmp/burn
exists, and the test removes it (and the service) even when it fails.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import docker

from berth.testing.cli import Berth
from berth.testing.daemons import AgentProcess, ControlPlaneProcess
from berth.testing.waiting import wait_until

# Burns while /tmp/burn exists (rechecked every 100,000 steps), idles otherwise.
BURNER = (
    "mkdir -p /tmp; trap 'exit 0' TERM; while :; do "
    "if [ -f /tmp/burn ]; then i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; "
    "else sleep 0.5; fi; done"
)


def _running(berth: Berth, count: int) -> list[dict[str, object]] | None:
    desired = berth.ok("service", "describe", "burner", "-o", "json").json()["desiredCount"]
    running = berth.running("default", "burner")
    return running if desired == count and len(running) == count else None


def test_cpu_load_scales_out_within_a_minute_and_back_to_the_minimum(
    sampled: tuple[ControlPlaneProcess, AgentProcess], tmp_path: Path, test_image: str
) -> None:
    plane, agent = sampled
    berth = Berth.of(plane)
    berth.register(
        "burner",
        [{"name": "burner", "image": test_image, "cpu": 256, "memory": 32, "stopTimeout": 2,
          "entryPoint": ["sh", "-c"], "command": [BURNER]}],
        tmp_path,
    )  # fmt: skip
    berth.ok("service", "create", "--name", "burner", "--task-definition", "burner", "--desired-count", "1")
    (first,), _ = wait_until(lambda: _running(berth, 1), 60, "1 RUNNING task")
    berth.ok(
        "service", "autoscale", "burner", "--metric", "cpu", "--target", "50", "--min", "1", "--max", "4",
        "--warmup", "5", "--scale-in-window", "15",
    )  # fmt: skip
    client = docker.DockerClient(base_url=agent.docker_url)
    container = client.containers.get(str(first["containers"][0]["runtimeId"]))  # type: ignore[index]
    try:
        container.exec_run(["touch", "/tmp/burn"])
        started = time.monotonic()
        _, _ = wait_until(
            lambda: (r := berth.running("default", "burner")) and len(r) >= 3, 60, "3 RUNNING tasks"
        )
        took = time.monotonic() - started
        print(f"seconds from load start to 3 RUNNING tasks: {took:.1f}", file=sys.stderr)
    finally:
        container.exec_run(["rm", "-f", "/tmp/burn"])
        client.close()

    # Load gone: every task idles, so after the 15 s scale-in window the service steps back to 1.
    wait_until(lambda: _running(berth, 1), 120, "back to 1 RUNNING task")
    events = berth.ok("service", "describe", "burner").stdout.split("events (newest first):")[1]
    scalings = re.findall(r"scaling (out|in) from (\d+) to (\d+)", events)[::-1]  # oldest first
    assert scalings and scalings[0][0] == "out", events
    assert scalings[-1][0] == "in" and scalings[-1][2] == "1", events
    outs = [s for s in scalings if s[0] == "out"]
    ins = [s for s in scalings if s[0] == "in"]
    # No oscillation: out (in at most two steps, capped at 4), then in (halving: 4 -> 2 -> 1).
    assert len(outs) <= 2 and len(ins) <= 3, events
    assert scalings.index(outs[-1]) < scalings.index(ins[0]), events
    berth.ok("service", "delete", "burner")
