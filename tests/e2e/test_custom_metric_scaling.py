"""A custom-metric policy scales a service up and down from pushed values (real control plane,
one hollow node, whose tasks turn RUNNING at once): a queue of 40 against a per-task target of
10 scales 1 task out to 4; an empty queue brings it back to its minimum of 1, stepwise after
the scale-in window, with a bounded number of scaling events (no oscillation)."""

from __future__ import annotations

import re
from pathlib import Path

from berth.testing.cli import Berth
from berth.testing.daemons import ControlPlaneProcess, HollowAgentsProcess
from berth.testing.waiting import wait_until


def _desired(berth: Berth, count: int) -> bool:
    service = berth.ok("service", "describe", "worker", "-o", "json").json()
    return service["desiredCount"] == count and len(berth.running("default", "worker")) == count


def test_a_pushed_queue_depth_scales_the_service_out_and_back_in(
    plane: ControlPlaneProcess, hollow: HollowAgentsProcess, tmp_path: Path
) -> None:
    berth = Berth.of(plane)
    wait_until(lambda: berth.nodes_exactly(1), 15, "1 hollow node")
    berth.register("worker", [{"name": "worker", "image": "anything:1", "memory": 16}], tmp_path)
    berth.ok("service", "create", "--name", "worker", "--task-definition", "worker", "--desired-count", "1")
    wait_until(lambda: _desired(berth, 1), 30, "1 RUNNING task")
    berth.ok(
        "service", "autoscale", "worker", "--metric", "custom:queue_depth", "--target", "10",
        "--min", "1", "--max", "6", "--warmup", "0", "--scale-in-window", "10",
    )  # fmt: skip

    # 40 queued for 1 task: 40 per task against a target of 10 asks for ceil(1 x 40 / 10) = 4.
    berth.ok("metric", "put", "worker", "queue_depth", "40")
    wait_until(lambda: _desired(berth, 4), 60, "4 RUNNING tasks after the queue grew")

    # The queue drains: nothing per task, so back to the minimum once the 10 s scale-in
    # window has asked for fewer throughout (at most half the tasks per step: 4 -> 2 -> 1).
    berth.ok("metric", "put", "worker", "queue_depth", "0")
    wait_until(lambda: _desired(berth, 1), 90, "back to 1 RUNNING task after the queue drained")

    events = berth.ok("service", "describe", "worker").stdout.split("events (newest first):")[1]
    # Events are listed newest first.
    scalings = re.findall(r"scaling (out|in) from (\d+) to (\d+)", events)[::-1]
    assert scalings[0] == ("out", "1", "4"), events
    assert scalings[-1][0] == "in" and scalings[-1][2] == "1", events
    # No oscillation: one step out, at most two steps in.
    assert len(scalings) <= 3, events
