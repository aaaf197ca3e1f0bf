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
    assert ignored == ["executionRoleArn"]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([{"name": "w", "image": "x", "memry": 64}], "containerDefinitions[0].memry: unknown field 'memry'"),
        ([{"name": "w", "memory": 64}], "containerDefinitions[0].image: required field is missing"),
        ([{"name": "w", "image": "x", "cpu": -1}], "containerDefinitions[0].cpu"),
        ([{"name": "w", "image": "x", "healthCheck": {}}], "not supported by Berth yet"),
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
