"""`berth service recommend`: a sleeping container that reserves 512 CPU units and 256 MiB is
recommended less of both after 30 s of samples, and --apply registers revision 2 with those
reservations and deploys it to completion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from berth.testing.cli import Berth, definition_of
from berth.testing.daemons import AgentProcess, ControlPlaneProcess
from berth.testing.waiting import wait_until


def test_recommend_and_apply(sampled: tuple[ControlPlaneProcess, AgentProcess], tmp_path: Path) -> None:
    plane, _ = sampled
    berth = Berth.of(plane)
    berth.register(
        "idle",
        [
            {
                "name": "idle",
                "image": "berth-busybox:2",
                "cpu": 512,
                "memoryReservation": 256,
                "essential": True,
                "entryPoint": ["sh", "-c"],
                "command": ["sleep 600"],
                "stopTimeout": 2,
            }
        ],
        tmp_path,
    )
    berth.ok("service", "create", "--name", "idle", "--task-definition", "idle", "--desired-count", "1")
    try:
        wait_until(lambda: berth.running_exactly("default", 1, "idle"), 30, "idle RUNNING")
        early = berth.ok("service", "recommend", "idle", "-o", "json").json()
        assert early["taskDefinition"] == "idle:1"
        [row] = early["containers"]
        assert row["currentCpu"] == 512 and row["currentMemoryMib"] == 256
        if "recommendedCpu" not in row:
            assert "not enough data yet" in row["reason"]
            refused = berth("service", "recommend", "idle", "--apply")
            assert refused.exit_code != 0 and "not enough data yet" in refused.stderr

        def recommended() -> dict[str, Any] | None:
            [found] = berth.ok("service", "recommend", "idle", "-o", "json").json()["containers"]
            return found if "recommendedCpu" in found else None

        ready, _ = wait_until(recommended, 90, "a recommendation", 2.0)
        assert 8 <= ready["recommendedCpu"] < 512 and ready["recommendedCpu"] % 8 == 0
        assert 6 <= ready["recommendedMemoryMib"] < 256
        assert ready["samples"] >= 10 and ready["windowSeconds"] >= 30
        assert "idle" in berth.ok("service", "recommend", "idle").stdout

        applied = berth.ok("service", "recommend", "idle", "--apply")
        assert "registered idle:2" in applied.stderr
        revision = berth.ok("taskdef", "describe", "idle:2", "-o", "json").json()
        [container] = revision["containerDefinitions"]
        # The new reservations are at most what was recommended a moment before
        # and far below the old ones (the figures may move by a step between calls).
        assert 8 <= container["cpu"] < 512
        assert 6 <= container["memoryReservation"] < 256
        waited = berth("service", "wait", "idle", "--timeout", "90")
        assert waited.exit_code == 0, waited.stdout + waited.stderr
        service = berth.ok("service", "describe", "idle", "-o", "json").json()
        primary = service["deployments"][0]
        assert primary["status"] == "PRIMARY" and definition_of(primary["taskDefinition"]) == "idle:2"
        assert primary["id"] == "ecs-svc/2" and primary["rolloutState"] == "COMPLETED"
    finally:
        berth("service", "delete", "idle")
