"""Task definitions as ECS users have them: console exports and describe output pasted back
(nulls, read-only fields, numbers as strings, empty lists), every networkMode, and the round
trip `describe -o json` -> `register --cli-input-json`. Tables of real-world-shaped snippets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.runtime.docker_spec import container_specs
from agent.runtime.docker_state import from_summary, host_bindings
from agent.runtime.driver import LABEL_HOST_PORTS
from berth.errors import InvalidArgument
from berth.taskdef import (
    AWSVPC_NOTE,
    parse_container_definitions,
    parse_register_document,
    static_host_ports,
    to_ecs_document,
    validate_task_definition,
)
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb

REPO = Path(__file__).resolve().parents[2]
FILES = sorted((REPO / "tests" / "data" / "taskdefs").glob("*.json"))
WEB = {"name": "web", "image": "busybox", "memory": 64}


def doc(**fields: Any) -> dict[str, Any]:
    return {"family": "app", "containerDefinitions": [dict(WEB)]} | fields


def web(**fields: Any) -> dict[str, Any]:
    return {"family": "app", "containerDefinitions": [dict(WEB) | fields]}


# -- task-level cpu and memory as ECS writes them ---------------------------------------


@pytest.mark.parametrize(
    ("cpu", "expected"),
    [(256, 256), ("256", 256), (" 1024 ", 1024), ("1 vCPU", 1024), ("0.5 vCPU", 512),
     ("0.25 vcpu", 256), ("2vCPU", 2048), ("4 VCPU", 4096)],
)  # fmt: skip
def test_task_cpu_forms(cpu: Any, expected: int) -> None:
    td, _ = parse_register_document(doc(cpu=cpu))
    assert td.cpu == expected


@pytest.mark.parametrize(
    ("memory", "expected"),
    [("512", 512), ("1 GB", 1024), ("2 GB", 2048), ("3GB", 3072), ("0.5 GB", 512),
     ("512 MiB", 512), ("512 MB", 512), ("1 GiB", 1024)],
)  # fmt: skip
def test_task_memory_forms(memory: Any, expected: int) -> None:
    td, _ = parse_register_document(doc(memory=memory))
    assert td.memory == expected


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"cpu": "0.3 vCPU"}, "taskDefinition.cpu: Value error, cpu '0.3 vCPU' is not a whole number"),
        ({"cpu": "lots"}, "cpu 'lots' is not a number"),
        ({"cpu": "1 GB"}, "cpu '1 GB' is not a number"),
        ({"memory": "1 TB"}, "memory '1 TB' is not a number"),
        ({"memory": "1" * 40}, "taskDefinition.memory"),
        ({"memory": "9999999 GB"}, "taskDefinition.memory: Input should be less than or equal to"),
        ({"cpu": "²"}, "taskDefinition.cpu"),
        ({"cpu": "-1"}, "taskDefinition.cpu"),
        ({"cpu": "1\nvCPU"}, "taskDefinition.cpu"),
    ],
)
def test_task_numbers_refused_in_one_line(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        parse_register_document(doc(**fields))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_container_numbers_written_as_strings() -> None:
    td, _ = parse_register_document(
        web(
            cpu="128",
            memory="256",
            memoryReservation="128",
            stopTimeout="10",
            portMappings=[{"containerPort": "8080", "hostPort": "0"}],
        )
    )
    (c,) = td.container_definitions
    assert (c.cpu, c.memory, c.memory_reservation, c.stop_timeout) == (128, 256, 128, 10)
    assert c.port_mappings[0].container_port == 8080


# -- nulls, read-only fields, empty lists -----------------------------------------------


def test_nulls_are_absent_at_every_level() -> None:
    td, notes = parse_register_document(
        doc(
            taskRoleArn=None,
            networkMode=None,
            cpu=None,
            volumes=None,
            containerDefinitions=[
                dict(WEB)
                | {
                    "cpu": None,
                    "memoryReservation": None,
                    "hostname": None,
                    "links": None,
                    "logConfiguration": None,
                    "healthCheck": {"command": ["CMD", "true"], "startPeriod": None, "retries": None},
                    "portMappings": [{"containerPort": 80, "hostPort": None, "name": None}],
                }
            ],
        )
    )
    (c,) = td.container_definitions
    assert (td.cpu, td.network_mode, c.cpu, c.memory_reservation) == (0, pb.NETWORK_MODE_UNSPECIFIED, 0, 0)
    assert (c.health_check.start_period, c.health_check.retries) == (0, 3)  # ECS's defaults
    assert c.port_mappings[0].host_port == 0
    assert notes == []


def test_deeply_nested_input_is_one_refusal_not_a_crash() -> None:
    nested: Any = None
    for _ in range(900):
        nested = [nested]
    with pytest.raises(InvalidArgument) as error:
        parse_register_document(web(healthCheck={"command": nested}))
    assert "containerDefinitions[0].healthCheck.command" in str(error.value)


def test_read_only_fields_of_describe_output_are_ignored_with_a_note() -> None:
    td, notes = parse_register_document(
        doc(
            taskDefinitionArn="arn:aws:ecs:us-east-1:1:task-definition/app:3",
            revision=3,
            status="ACTIVE",
            requiresAttributes=[{"name": "com.amazonaws.ecs.capability.docker-remote-api.1.18"}],
            compatibilities=["EC2", "FARGATE"],
            registeredAt="2024-02-05T10:11:12Z",
            registeredBy="arn:aws:iam::1:user/x",
            deregisteredAt=None,
        )
    )
    assert td.revision == 0 and td.status == pb.TASK_DEFINITION_STATUS_UNSPECIFIED
    assert notes == [
        "compatibilities, registeredAt, registeredBy, requiresAttributes, revision, status, "
        "taskDefinitionArn: read-only fields of describe output, ignored"
    ]


def test_describe_output_wrapper_is_unwrapped() -> None:
    td, _ = parse_register_document({"taskDefinition": doc(), "tags": []})
    assert td.family == "app"


@pytest.mark.parametrize(
    "fields",
    [{"volumes": []}, {"placementConstraints": []}, {"volumes": [], "placementConstraints": []}],
)
def test_empty_unsupported_document_lists_register(fields: dict[str, Any]) -> None:
    td, _ = parse_register_document(doc(**fields))
    assert td.family == "app"


# Empty lists ask for nothing and register, as console exports write them.
@pytest.mark.parametrize("field", ["mountPoints", "volumesFrom", "ulimits", "links", "systemControls"])
def test_empty_unsupported_container_lists_register(field: str) -> None:
    (c,) = parse_container_definitions([dict(WEB) | {field: []}])
    assert c.name == "web"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (web(restartPolicies={"enabled": True}), "containerDefinitions[0].restartPolicies: "),
        (doc(volume=[{"name": "data"}]), "taskDefinition.volume: "),
        ({"taskDefinition": "x"}, "must be a JSON object"),
    ],
)  # fmt: skip
def test_a_field_ecs_does_not_have_is_refused_naming_it(document: Any, message: str) -> None:
    """Every field of ECS's schema is known; a misspelt one is not silently ignored."""
    with pytest.raises(InvalidArgument) as error:
        parse_register_document(document)
    assert message in str(error.value)


# -- networkMode ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "stored", "notes"),
    [
        ("bridge", pb.NETWORK_MODE_BRIDGE, []),
        ("host", pb.NETWORK_MODE_HOST, []),
        ("none", pb.NETWORK_MODE_NONE, []),
        ("awsvpc", pb.NETWORK_MODE_AWSVPC, [AWSVPC_NOTE]),
    ],
)
def test_network_modes(mode: str, stored: int, notes: list[str]) -> None:
    td, said = parse_register_document(doc(networkMode=mode))
    assert td.network_mode == stored
    assert said == notes


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (doc(networkMode="nat"), "taskDefinition.networkMode: Input should be 'bridge', 'host', 'none' or"),
        (web(portMappings=[{"containerPort": 80}]) | {"networkMode": "none"},
         "containerDefinitions[0].portMappings: networkMode none has no network to map ports on"),
        (web(portMappings=[{"containerPort": 80, "hostPort": 8080}]) | {"networkMode": "host"},
         "with networkMode host, hostPort (8080) must be absent or equal containerPort (80)"),
        (web(portMappings=[{"containerPort": 80}, {"containerPort": 80}]) | {"networkMode": "host"},
         "containerPort 80 is used twice on the host"),
    ],
)  # fmt: skip
def test_network_mode_refusals(document: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        parse_register_document(document)
    assert message in str(error.value)


def test_an_unknown_network_mode_from_a_grpc_client_is_refused() -> None:
    td = pb.TaskDefinition(family="app", container_definitions=parse_container_definitions([WEB]))
    td.network_mode = 99  # type: ignore[assignment]
    with pytest.raises(InvalidArgument, match="networkMode 99 is unknown"):
        validate_task_definition(td)


def test_host_mode_needs_the_container_ports_free_on_the_node() -> None:
    mappings = [{"containerPort": 80}, {"containerPort": 53, "protocol": "udp"}]
    host, _ = parse_register_document(web(portMappings=mappings) | {"networkMode": "host"})
    bridge, _ = parse_register_document(web(portMappings=mappings))
    assert static_host_ports(host) == [(80, pb.TCP), (53, pb.UDP)]
    assert static_host_ports(bridge) == []  # dynamic host ports: nothing fixed to check


def _spec(mode: str) -> dict[str, Any]:
    ports = [] if mode == "none" else [{"containerPort": 80}]
    td, _ = parse_register_document(web(portMappings=ports) | {"networkMode": mode})
    td.revision = 1
    assignment = agent_pb.TaskAssignment(task_id="t1", cluster="default", task_definition=td)
    (spec,) = container_specs(assignment, "node-1", dns_servers=("10.0.0.1",))
    return spec.create_kwargs()


@pytest.mark.parametrize(
    ("mode", "network_mode", "ports", "dns"),
    [
        ("bridge", None, {"80/tcp": None}, ["10.0.0.1"]),
        ("awsvpc", None, {"80/tcp": None}, ["10.0.0.1"]),  # run as bridge, as the note says
        ("host", "host", {}, None),  # the host's own ports and resolv.conf
        ("none", "none", {}, None),
    ],
)
def test_network_mode_reaches_docker(
    mode: str, network_mode: str | None, ports: dict[str, Any], dns: list[str] | None
) -> None:
    kwargs = _spec(mode)
    assert kwargs.get("network_mode") == network_mode
    assert kwargs["ports"] == ports
    assert kwargs.get("dns") == dns


# -- files as found, and the round trip ------------------------------------------------------

EXPECTED_NOTES = {
    "batch-none.json": ["requiresCompatibilities: AWS-only, Berth ignores it"],
    "bridge-sidecar.json": [],
    "console-export.json": [
        "executionRoleArn, requiresCompatibilities, runtimePlatform: AWS-only, Berth ignores them",
        AWSVPC_NOTE,
    ],
    "describe-output.json": [
        "compatibilities, registeredAt, registeredBy, requiresAttributes, revision, status, "
        "taskDefinitionArn: read-only fields of describe output, ignored"
    ],
    "fargate-webserver.json": [
        "executionRoleArn, requiresCompatibilities, runtimePlatform: AWS-only, Berth ignores them",
        AWSVPC_NOTE,
    ],
    "host-network.json": ["requiresCompatibilities: AWS-only, Berth ignores it"],
    "docker-volumes.json": [],
}


def test_every_file_in_the_corpus_has_its_notes() -> None:
    assert sorted(p.name for p in FILES) == sorted(EXPECTED_NOTES)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_files_register_as_found(path: Path) -> None:
    _, notes = parse_register_document(json.loads(path.read_text()))
    assert notes == EXPECTED_NOTES[path.name]


def _registered(td: pb.TaskDefinition) -> pb.TaskDefinition:
    stored = pb.TaskDefinition()
    stored.CopyFrom(td)
    stored.revision, stored.status = 7, pb.ACTIVE
    stored.registered_at.FromSeconds(1_700_000_000)
    return stored


def _round_trip(td: pb.TaskDefinition) -> tuple[pb.TaskDefinition, dict[str, Any], list[str]]:
    shown = json.loads(json.dumps(to_ecs_document(_registered(td))))
    again, notes = parse_register_document(shown)
    return again, shown, notes


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_describe_output_registers_again_unchanged(path: Path) -> None:
    td, _ = parse_register_document(json.loads(path.read_text()))
    again, _, notes = _round_trip(td)
    assert again == td
    # The AWS-only fields it was registered with are shown again, and noted again.
    assert "registeredAt, revision, status: read-only fields of describe output, ignored" in notes


def test_the_example_round_trips() -> None:
    td = pb.TaskDefinition(
        family="web",
        container_definitions=parse_container_definitions(
            json.loads((REPO / "examples" / "web.json").read_text())
        ),
    )
    again, _, _ = _round_trip(td)
    assert again == td


def test_a_rich_definition_round_trips_in_ecs_shape() -> None:
    td, _ = parse_register_document(
        {
            "family": "rich",
            "cpu": "0.5 vCPU",
            "memory": "1 GB",
            "networkMode": "host",
            "containerDefinitions": [
                {
                    "name": "app",
                    "image": "registry.example.com/app@sha256:" + "a" * 64,
                    "cpu": 256,
                    "memory": 512,
                    "memoryReservation": 256,
                    "essential": True,
                    "portMappings": [
                        {"containerPort": 8080, "hostPort": 8080, "protocol": "tcp", "name": "http"},
                        {"containerPort": 8125, "protocol": "udp"},
                    ],
                    "environment": [{"name": "A", "value": "1"}, {"name": "EMPTY", "value": ""}],
                    "secrets": [{"name": "DB", "valueFrom": "arn:aws:ssm:eu-west-1:1:parameter/db"}],
                    "entryPoint": ["sh", "-c"],
                    "command": ["exec app --port 8080"],
                    "stopTimeout": 45,
                    "healthCheck": {"command": ["CMD", "app", "check"], "interval": 10, "startPeriod": 5},
                },
                {"name": "side", "image": "busybox", "memoryReservation": 16, "essential": False},
            ],
        }
    )
    again, shown, _ = _round_trip(td)
    assert again == td
    assert (shown["cpu"], shown["memory"], shown["networkMode"]) == ("512", "1024", "host")
    app, side = shown["containerDefinitions"]
    assert app["portMappings"] == [
        {"containerPort": 8080, "hostPort": 8080, "protocol": "tcp", "name": "http"},
        {"containerPort": 8125, "protocol": "udp"},
    ]
    assert app["healthCheck"] == {
        "command": ["CMD", "app", "check"], "interval": 10, "timeout": 5, "retries": 3, "startPeriod": 5,
    }  # fmt: skip
    # Numbers only where set: no "cpu": 0 or "memory": 0 that would register differently.
    assert side == {"name": "side", "image": "busybox", "memoryReservation": 16, "essential": False}
    assert (shown["revision"], shown["status"]) == (7, "ACTIVE")


def test_host_mode_ports_are_remembered_on_the_container_and_reported_as_bindings() -> None:
    mappings = [{"containerPort": 80}, {"containerPort": 53, "protocol": "udp"}]
    td, _ = parse_register_document(web(portMappings=mappings) | {"networkMode": "host"})
    td.revision = 1
    (spec,) = container_specs(agent_pb.TaskAssignment(task_id="t1", task_definition=td), "node-1")
    assert spec.labels[LABEL_HOST_PORTS] == "80/tcp,53/udp"
    # Docker lists no published ports on the host's network: the label says what the task serves.
    listed = from_summary({"Id": "c1", "Labels": spec.labels, "Ports": [], "State": "running"})
    assert listed is not None
    assert [(b.container_port, b.host_port, b.protocol) for b in listed.bindings] == [
        (80, 80, pb.TCP),
        (53, 53, pb.UDP),
    ]


def test_bridge_containers_carry_no_host_ports_label() -> None:
    assert (
        LABEL_HOST_PORTS
        not in container_specs(
            agent_pb.TaskAssignment(task_id="t1", task_definition=parse_register_document(doc())[0]), "n"
        )[0].labels
    )


@pytest.mark.parametrize("label", ["", "x", "80", "80/sctp", "0/tcp", "70000/tcp", "²/tcp", "-1/udp", ",,,"])
def test_a_malformed_host_ports_label_yields_no_bindings(label: str) -> None:
    assert host_bindings("web", label) == ()


def test_process_and_security_settings_round_trip() -> None:
    td, _ = parse_register_document(
        {
            "family": "settings",
            "containerDefinitions": [
                {
                    "name": "app",
                    "image": "busybox",
                    "memory": 64,
                    "user": "1000:1000",
                    "workingDirectory": "/srv",
                    "hostname": "app-1",
                    "readonlyRootFilesystem": True,
                    "ulimits": [{"name": "nofile", "softLimit": 1024, "hardLimit": 4096}],
                    "dockerLabels": {"team": "web", "tier": "front"},
                    "extraHosts": [{"hostname": "db.local", "ipAddress": "10.0.0.5"}],
                    "dnsServers": ["10.0.0.2"],
                    "dnsSearchDomains": ["example.internal"],
                    "systemControls": [{"namespace": "net.core.somaxconn", "value": "1024"}],
                    "linuxParameters": {
                        "capabilities": {"drop": ["NET_RAW"]},
                        "initProcessEnabled": True,
                        "sharedMemorySize": 128,
                        "tmpfs": [{"containerPath": "/run", "size": 16, "mountOptions": ["noexec"]}],
                    },
                }
            ],
        }
    )
    again, shown, _ = _round_trip(td)
    assert again == td
    (app,) = shown["containerDefinitions"]
    assert app["linuxParameters"]["initProcessEnabled"] is True and app["user"] == "1000:1000"
