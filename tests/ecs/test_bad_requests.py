"""Requests the real clients would never send (malformed JSON, wrong types, unknown members
and operations, huge or deeply nested bodies) get ECS's error types and change nothing.
A control plane with no agent, so nothing else writes while the records are compared."""

from __future__ import annotations

from typing import Any

from berth.testing.daemons import ControlPlaneProcess
from berth.testing.ecs import EcsClients


def test_malformed_requests_get_ecs_errors_and_change_nothing(
    clients: EcsClients, ecs_plane: ControlPlaneProcess
) -> None:
    before = ecs_plane.operator_records()
    cases: list[tuple[str, bytes | dict[str, Any], int, str]] = [
        ("CreateCluster", b"{not json", 400, "SerializationException"),
        ("CreateCluster", b"[1, 2]", 400, "SerializationException"),
        ("CreateCluster", {"clusterName": 7}, 400, "SerializationException"),
        ("CreateCluster", {"clusterName": "ok", "surprise": 1}, 400, "InvalidParameterException"),
        ("CreateCluster", {"clusterName": "bad name!"}, 400, "InvalidParameterException"),
        ("CreateService", {"serviceName": "x", "desiredCount": True}, 400, "SerializationException"),
        (
            "CreateService",
            {"serviceName": "x", "taskDefinition": "web", "desiredCount": -1},
            400,
            "InvalidParameterException",
        ),
        ("FlyToTheMoon", {}, 400, "UnknownOperationException"),
        ("DescribeServices", {"services": ["a"] * 11}, 400, "InvalidParameterException"),
        ("CreateCluster", b"[" * 100_000 + b"]" * 100_000, 400, "SerializationException"),
    ]
    for operation, body, status, error_type in cases:
        code, answer = clients.raw(operation, body)
        assert (code, answer.get("__type")) == (status, error_type), (
            operation,
            body if len(str(body)) < 100 else "…",
            answer,
        )
        assert answer["message"] and "\n" not in answer["message"]
    code, answer = clients.raw("CreateCluster", b"{" + b'"a":1,' * 200_000 + b"}")
    assert code == 413 and answer["__type"] == "SerializationException"
    assert ecs_plane.operator_records() == before
