"""Task definitions as ECS users have them, against a real control plane (real etcd, TLS; no
Docker): a Fargate-style document with nulls, read-only fields, string cpu/memory and awsvpc
registers with notes, and `describe -o json` registers again unchanged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from berth.taskdef import AWSVPC_NOTE
from berth.testing.cli import Berth
from berth.testing.daemons import ControlPlaneProcess

FILES = sorted((Path(__file__).resolve().parents[1] / "data" / "taskdefs").glob("*.json"))
FARGATE: dict[str, Any] = {
    "taskDefinitionArn": "arn:aws:ecs:eu-west-1:123456789012:task-definition/shop:14",
    "family": "shop",
    "revision": 14,
    "status": "ACTIVE",
    "compatibilities": ["EC2", "FARGATE"],
    "requiresAttributes": [{"name": "com.amazonaws.ecs.capability.task-eni"}],
    "registeredAt": "2024-03-01T09:00:00.000Z",
    "registeredBy": "arn:aws:sts::123456789012:assumed-role/deploy/ci",
    "requiresCompatibilities": ["FARGATE"],
    "networkMode": "awsvpc",
    "cpu": "1 vCPU",
    "memory": "2 GB",
    "taskRoleArn": None,
    "volumes": [],
    "placementConstraints": [],
    "containerDefinitions": [
        {
            "name": "shop",
            "image": "berth-busybox:2",
            "cpu": 0,
            "memory": None,
            "memoryReservation": "512",
            "essential": True,
            "portMappings": [{"containerPort": 8080, "hostPort": 8080, "protocol": "tcp", "name": None}],
            "environment": [{"name": "MODE", "value": "prod"}],
            "mountPoints": [],
            "volumesFrom": [],
            "links": None,
            "healthCheck": {"command": ["CMD", "true"], "interval": 10, "startPeriod": None},
        }
    ],
}


def _describe(berth: Berth, ref: str) -> dict[str, Any]:
    shown: dict[str, Any] = berth.ok("taskdef", "describe", ref, "-o", "json").json()
    return shown


def test_a_fargate_document_as_found_registers_with_notes_and_round_trips(
    plane: ControlPlaneProcess, tmp_path: Path
) -> None:
    berth = Berth.of(plane)
    document = tmp_path / "shop.json"
    document.write_text(json.dumps(FARGATE))
    registered = berth.ok("taskdef", "register", "--cli-input-json", f"file://{document}")
    assert registered.stdout.strip() == "registered shop:1"
    assert registered.stderr.splitlines() == [
        "note: requiresCompatibilities: AWS-only, Berth ignores it",
        "note: compatibilities, registeredAt, registeredBy, requiresAttributes, revision, status, "
        "taskDefinitionArn: read-only fields of describe output, ignored",
        f"note: {AWSVPC_NOTE}",
    ]

    first = _describe(berth, "shop:1")
    assert (first["cpu"], first["memory"], first["networkMode"]) == ("1024", "2048", "awsvpc")
    (shop,) = first["containerDefinitions"]
    assert shop["memoryReservation"] == 512 and "memory" not in shop and "cpu" not in shop
    assert shop["portMappings"] == [{"containerPort": 8080, "hostPort": 8080, "protocol": "tcp"}]
    assert shop["healthCheck"] == {
        "command": ["CMD", "true"], "interval": 10, "timeout": 5, "retries": 3, "startPeriod": 0,
    }  # fmt: skip
    assert (first["revision"], first["status"]) == (1, "ACTIVE")
    assert "networkMode=awsvpc" in berth.ok("taskdef", "describe", "shop:1").stdout

    # describe -o json, registered again as it is: the same definition, as revision 2.
    again = tmp_path / "again.json"
    again.write_text(berth.ok("taskdef", "describe", "shop:1", "-o", "json").stdout)
    assert berth.ok("taskdef", "register", "--cli-input-json", f"file://{again}").stdout.strip() == (
        "registered shop:2"
    )
    second = _describe(berth, "shop:2")
    assert second.pop("revision") == 2
    assert second.pop("taskDefinitionArn").endswith(":task-definition/shop:2")
    first.pop("revision"), first.pop("taskDefinitionArn")
    second.pop("registeredAt"), first.pop("registeredAt")
    assert second == first


def test_a_host_path_volume_is_refused_by_the_default_policy_and_nothing_is_written(
    plane: ControlPlaneProcess, tmp_path: Path
) -> None:
    berth = Berth.of(plane)
    document = tmp_path / "volumes.json"
    shop = {"name": "shop", "image": "berth-busybox:2", "memory": 64}
    shop["mountPoints"] = [{"sourceVolume": "data", "containerPath": "/data"}]
    document.write_text(
        json.dumps(
            {
                "family": "shop",
                "volumes": [{"name": "data", "host": {"sourcePath": "/srv"}}],
                "containerDefinitions": [shop],
            }
        )
    )
    berth("taskdef", "register", "--cli-input-json", f"file://{document}").assert_refused(
        "volumes[0].host.sourcePath /srv is refused by the host-path policy: the control plane allows no "
        "host paths (start it with --allow-host-path PREFIX)"
    )
    assert berth.ok("taskdef", "list", "-o", "json").json() == {"taskDefinitions": []}


def test_every_file_of_the_corpus_registers_and_round_trips(
    plane: ControlPlaneProcess, tmp_path: Path
) -> None:
    berth = Berth.of(plane)
    for path in FILES:
        family = (
            json.loads(path.read_text()).get("family")
            or json.loads(path.read_text())["taskDefinition"]["family"]
        )
        assert berth.ok("taskdef", "register", "--cli-input-json", f"file://{path}").stdout.strip() == (
            f"registered {family}:1"
        ), path.name
        shown = tmp_path / path.name
        shown.write_text(berth.ok("taskdef", "describe", f"{family}:1", "-o", "json").stdout)
        berth.ok("taskdef", "register", "--cli-input-json", f"file://{shown}")
        first, second = _describe(berth, f"{family}:1"), _describe(berth, f"{family}:2")
        for described in (first, second):
            described.pop("revision"), described.pop("registeredAt"), described.pop("taskDefinitionArn")
        assert first == second, path.name
