"""Parsing ECS JSON into task definitions, and rejecting bad input in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from berth.errors import InvalidArgument
from berth.taskdef import (
    load_json,
    parse_container_definitions,
    parse_register_document,
    task_reservation,
    validate_task_definition,
)
from berth.v1 import resources_pb2 as pb

REPO = Path(__file__).resolve().parents[2]


def test_example_parses_as_written_for_aws() -> None:
    containers = parse_container_definitions(json.loads((REPO / "examples" / "web.json").read_text()))
    (web,) = containers
    assert web.name == "web"
    assert web.image == "berth-busybox:2"
    assert (web.cpu, web.memory, web.memory_reservation) == (128, 64, 32)
    assert web.port_mappings[0].container_port == 8080
    assert web.port_mappings[0].host_port == 0
    assert web.environment[0].name == "GREETING"
    assert web.entry_point == ["sh", "-c"]
    assert web.stop_timeout == 5
    assert web.essential


def test_register_document_accepts_ecs_strings_and_ignores_aws_only_fields() -> None:
    td, ignored = parse_register_document(
        {
            "family": "api",
            "cpu": "256",
            "memory": "512",
            "networkMode": "bridge",
            "executionRoleArn": "arn:aws:iam::1:role/x",
            "containerDefinitions": [{"name": "api", "image": "busybox", "essential": True}],
        }
    )
    assert (td.family, td.cpu, td.memory) == ("api", 256, 512)
    assert ignored == ["executionRoleArn: AWS-only, Berth ignores it"]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([{"name": "w", "image": "x", "memry": 64}], "containerDefinitions[0].memry: unknown field 'memry'"),
        ([{"name": "w", "memory": 64}], "containerDefinitions[0].image: required field is missing"),
        ([{"name": "w", "image": "x", "cpu": -1}], "containerDefinitions[0].cpu"),
        ([{"name": "w", "image": "x", "memory": 64, "links": ["db"]}], "[0].links: 'db' is not another"),
        ([{"name": "w", "image": "x", "portMappings": [{"containerPort": 70000}]}], "containerPort"),
        ([], "non-empty JSON array"),
        ({"name": "w"}, "non-empty JSON array"),
    ],
)
def test_bad_container_definitions_name_the_field(document: object, message: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        parse_container_definitions(document)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_malformed_json_says_where() -> None:
    with pytest.raises(InvalidArgument, match=r"not valid JSON: .* line 1 column"):
        load_json('[{"name": ', "--container-definitions")


def _td(**container: object) -> pb.TaskDefinition:
    base: dict[str, object] = {"name": "web", "image": "busybox", "memory": 64, "essential": True}
    base.update(container)
    return pb.TaskDefinition(family="web", container_definitions=[pb.ContainerDefinition(**base)])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("td", "message"),
    [
        (_td(name="bad name"), "name 'bad name' is invalid"),
        (_td(image=" "), "image must not be empty"),
        (_td(memory=0), "set memory or memoryReservation"),
        (_td(memory=32, memory_reservation=64), "must not exceed memory"),
        (_td(essential=False), "must be essential"),
        (pb.TaskDefinition(family="bad family!"), "family 'bad family!' is invalid"),
    ],
)
def test_validation_rejects(td: pb.TaskDefinition, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        validate_task_definition(td)


def test_reservation_prefers_memory_reservation_like_ecs() -> None:
    td = pb.TaskDefinition(
        family="f",
        container_definitions=[
            pb.ContainerDefinition(name="a", cpu=100, memory=256, memory_reservation=128),
            pb.ContainerDefinition(name="b", cpu=50, memory=64),
        ],
    )
    assert task_reservation(td) == (150, 192)
    td.memory = 1024
    assert task_reservation(td) == (150, 1024)


def _health(check: object) -> list[object]:
    return [{"name": "w", "image": "x", "memory": 64, "healthCheck": check}]


def test_health_check_gets_ecs_defaults() -> None:
    (container,) = parse_container_definitions(_health({"command": ["CMD-SHELL", "test -f /tmp/ok"]}))
    check = container.health_check
    assert list(check.command) == ["CMD-SHELL", "test -f /tmp/ok"]
    assert (check.interval, check.timeout, check.retries, check.start_period) == (30, 5, 3, 0)


@pytest.mark.parametrize(
    "check",
    [
        {"command": ["CMD", "/bin/true"], "interval": 5, "timeout": 2, "retries": 1, "startPeriod": 0},
        {"command": ["CMD", "curl", "-f", "http://x/"], "interval": 300, "timeout": 60, "retries": 10},
        {"command": ["CMD-SHELL", "exit 0"], "startPeriod": 300},
    ],
)
def test_health_check_limits_are_accepted(check: dict[str, object]) -> None:
    (container,) = parse_container_definitions(_health(check))
    assert list(container.health_check.command) == check["command"]
    assert container.health_check.interval == check.get("interval", 30)


@pytest.mark.parametrize(
    ("check", "message"),
    [
        ({}, "healthCheck.command: required field is missing"),
        ({"command": ["CMD"]}, "healthCheck.command"),
        ({"command": ["curl", "-f", "x"]}, '["CMD", "program", "arg", ...] or ["CMD-SHELL"'),
        ({"command": ["NONE", "x"]}, '["CMD", "program"'),
        ({"command": ["CMD-SHELL", "a", "b"]}, "exactly one shell command"),
        ({"command": ["CMD", " "]}, "not blank"),
        ({"command": ["CMD", "x"], "interval": 4}, "healthCheck.interval"),
        ({"command": ["CMD", "x"], "interval": 301}, "healthCheck.interval"),
        ({"command": ["CMD", "x"], "timeout": 1}, "healthCheck.timeout"),
        ({"command": ["CMD", "x"], "timeout": 61}, "healthCheck.timeout"),
        ({"command": ["CMD", "x"], "retries": 0}, "healthCheck.retries"),
        ({"command": ["CMD", "x"], "retries": 11}, "healthCheck.retries"),
        ({"command": ["CMD", "x"], "startPeriod": -1}, "healthCheck.startPeriod"),
        ({"command": ["CMD", "x"], "startPeriod": 301}, "healthCheck.startPeriod"),
        ({"command": ["CMD", "x"], "intervall": 5}, "unknown field 'intervall'"),
        ("yes", "healthCheck"),
    ],
)
def test_bad_health_checks_are_refused_in_one_line(check: object, message: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        parse_container_definitions(_health(check))
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("check", "message"),
    [
        (pb.HealthCheck(command=["CMD", "x"], interval=30, timeout=5, retries=3), None),
        (
            pb.HealthCheck(command=["CMD", "x"], interval=0, timeout=5, retries=3),
            "interval 0 is out of range: use 5-300",
        ),
        (
            pb.HealthCheck(command=["CMD", "x"], interval=30, timeout=5, retries=0),
            "retries 0 is out of range",
        ),
        (pb.HealthCheck(command=["CMD-SHELL"], interval=30, timeout=5, retries=3), "command must be"),
    ],
)
def test_health_checks_sent_over_grpc_are_checked(check: pb.HealthCheck, message: str | None) -> None:
    td = _td(health_check=check)
    if message is None:
        validate_task_definition(td)
        return
    with pytest.raises(InvalidArgument, match=message):
        validate_task_definition(td)
