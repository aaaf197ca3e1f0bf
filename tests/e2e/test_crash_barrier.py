"""A broken stored object stops only itself (issue 8, finding 4), against a real control plane.

A task definition that bypassed validation (two containers at 2^32-1 CPU
units, whose sum overflows the task's uint32) is written straight into etcd,
with a service using it. Before the crash barrier the leader crashed on every
pass and no other service scaled or healed. Needs no Docker: hollow agents.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from berth.testing.cli import Berth, id_of
from berth.testing.daemons import ControlPlaneProcess, HollowAgentsProcess, JoinFlags
from berth.testing.waiting import wait_until
from berth.v1 import resources_pb2 as pb
from controlplane.store import Put, keys

GARBAGE = b"\xff\xff\xff\xff"


def _write_broken_service(plane: ControlPlaneProcess) -> None:
    bad = pb.TaskDefinition(
        family="bad",
        revision=1,
        status=pb.ACTIVE,
        container_definitions=[
            pb.ContainerDefinition(name=f"c{i}", image="x:1", cpu=2**32 - 1, memory=16, essential=True)
            for i in range(2)
        ],
    )
    service = pb.Service(
        cluster="default", name="bad", task_definition="bad:1", desired_count=2, status=pb.SERVICE_ACTIVE
    )

    async def write() -> None:
        store = plane.etcd_store()
        await store.connect()
        try:
            assert await store.commit(
                [
                    Put(keys.taskdef("bad", 1), bad),
                    Put(keys.service("default", "bad"), service),
                    # Bytes that are no message at all: read as absent, never a crash.
                    Put(keys.taskdef("junk", 1), GARBAGE),
                    Put(keys.service("default", "junk"), GARBAGE),
                    Put(keys.task("0" * 32), GARBAGE),
                ]
            )
        finally:
            await store.close()

    asyncio.run(write())


def test_other_services_keep_scaling_and_healing_past_a_broken_one(
    plane: ControlPlaneProcess, tmp_path: Path
) -> None:
    hollow = HollowAgentsProcess(tmp_path / "hollow.log", plane.address, 2, join=JoinFlags.of(plane))
    hollow.start()
    try:
        berth = Berth.of(plane)
        wait_until(lambda: berth.nodes_exactly(2), 15, "2 nodes")
        berth.register("good", [{"name": "good", "image": "anything:1", "memory": 16}], tmp_path)
        berth.ok("service", "create", "--name", "good", "--task-definition", "good", "--desired-count", "1")
        wait_until(lambda: berth.running_exactly("default", 1, "good"), 15, "1 good task RUNNING")

        _write_broken_service(plane)
        wait_until(
            lambda: "could not be reconciled" in berth.ok("service", "describe", "bad").stdout or None,
            15,
            "the broken service's event",
        )
        events = berth.ok("service", "describe", "bad").stdout
        assert "ValueError" in events, events
        # The undecodable keys are left out of listings, which keep working.
        families = {t["family"] for t in berth.ok("taskdef", "list", "-o", "json").json()["taskDefinitions"]}
        assert families == {"good", "bad"}, families
        services = {s["serviceName"] for s in berth.ok("service", "list", "-o", "json").json()["services"]}
        assert services == {"good", "bad"}, services
        assert "event=undecodable_value" in plane.log_path.read_text()

        # Scaling goes on.
        berth.ok("service", "update", "good", "--desired-count", "3")
        running = wait_until(lambda: berth.running_exactly("default", 3, "good"), 15, "3 good tasks")[0]

        # Healing goes on.
        victim = id_of(running[0])
        berth.ok("task", "stop", victim)

        def healed() -> list[dict[str, Any]] | None:
            now = berth.running_exactly("default", 3, "good")
            ids = {id_of(t) for t in now or []}
            return now if now is not None and victim not in ids else None

        wait_until(healed, 20, "the stopped good task replaced")
        assert berth.running("default", "bad") == []
    finally:
        assert hollow.stop(timeout=15) is not None
