"""ECS task definitions: parse the JSON operators already have, validate the result.

`parse_container_definitions` and `parse_register_document` accept the
`containerDefinitions` array and the `register-task-definition` input
document exactly as written for AWS, and turn them into protobuf messages.
`validate_task_definition` checks a message's meaning; the control plane runs
it on every registration, whichever client sent it.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from berth.errors import InvalidArgument
from berth.names import check_family
from berth.v1 import resources_pb2 as pb

# ECS fields Berth recognises but does not implement yet: a clear "not
# supported" beats silently ignoring something the operator relies on.
_UNSUPPORTED_CONTAINER_FIELDS = frozenset(
    {
        "links",
        "mountPoints",
        "volumesFrom",
        "logConfiguration",
        "healthCheck",
        "dependsOn",
        "startTimeout",
        "hostname",
        "user",
        "workingDirectory",
        "disableNetworking",
        "privileged",
        "readonlyRootFilesystem",
        "dnsServers",
        "dnsSearchDomains",
        "extraHosts",
        "dockerSecurityOptions",
        "interactive",
        "pseudoTerminal",
        "dockerLabels",
        "ulimits",
        "linuxParameters",
        "secrets",
        "environmentFiles",
        "resourceRequirements",
        "firelensConfiguration",
        "repositoryCredentials",
        "systemControls",
        "credentialSpecs",
        "restartPolicy",
        "versionConsistency",
    }
)
# Document fields that only mean something on AWS; accepted and ignored.
IGNORED_DOCUMENT_FIELDS = frozenset(
    {"taskRoleArn", "executionRoleArn", "requiresCompatibilities", "tags", "runtimePlatform"}
)
_UNSUPPORTED_DOCUMENT_FIELDS = frozenset(
    {
        "volumes",
        "placementConstraints",
        "pidMode",
        "ipcMode",
        "proxyConfiguration",
        "inferenceAccelerators",
        "ephemeralStorage",
        "enableFaultInjection",
    }
)
_CONTAINER_NAME = re.compile(r"^[A-Za-z0-9_-]{1,255}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=False)


class _KeyValue(_Strict):
    name: str
    value: str


class _PortMapping(_Strict):
    container_port: int = Field(alias="containerPort", ge=1, le=65535)
    host_port: int = Field(default=0, alias="hostPort", ge=0, le=65535)
    protocol: Literal["tcp", "udp"] = "tcp"
    name: str = ""
    app_protocol: str | None = Field(default=None, alias="appProtocol")


class _ContainerDefinition(_Strict):
    name: str
    image: str
    cpu: int = Field(default=0, ge=0, le=1024 * 1024)
    memory: int | None = Field(default=None, ge=6)
    memory_reservation: int | None = Field(default=None, alias="memoryReservation", ge=6)
    port_mappings: list[_PortMapping] = Field(default_factory=list, alias="portMappings")
    environment: list[_KeyValue] = Field(default_factory=list)
    command: list[str] = Field(default_factory=list)
    entry_point: list[str] = Field(default_factory=list, alias="entryPoint")
    essential: bool = True
    stop_timeout: int | None = Field(default=None, alias="stopTimeout", ge=0, le=3600)


def _int_or_string(value: Any) -> Any:
    # ECS writes task-level cpu and memory as strings ("256"); accept both.
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value


class _RegisterDocument(_Strict):
    family: str
    container_definitions: list[dict[str, Any]] = Field(alias="containerDefinitions", min_length=1)
    cpu: int | None = Field(default=None, ge=0)
    memory: int | None = Field(default=None, ge=6)
    network_mode: Literal["bridge"] | None = Field(default=None, alias="networkMode")

    _coerce = field_validator("cpu", "memory", mode="before")(_int_or_string)


def _one_line(error: ValidationError, where: str) -> InvalidArgument:
    """Turn pydantic's first complaint into one line that names the field to fix."""
    first = error.errors()[0]
    path = where
    for part in first["loc"]:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    if first["type"] == "extra_forbidden":
        field = str(first["loc"][-1])
        return InvalidArgument(f"{path}: unknown field {field!r}")
    if first["type"] == "missing":
        return InvalidArgument(f"{path}: required field is missing")
    return InvalidArgument(f"{path}: {first['msg']}")


def _reject_unsupported(doc: dict[str, Any], unsupported: frozenset[str], where: str) -> None:
    for field in doc:
        if field in unsupported:
            raise InvalidArgument(f"{where}.{field}: this ECS field is not supported by Berth yet")


def _container_to_proto(raw: Any, index: int) -> pb.ContainerDefinition:
    where = f"containerDefinitions[{index}]"
    if not isinstance(raw, dict):
        raise InvalidArgument(f"{where}: expected a JSON object")
    _reject_unsupported(raw, _UNSUPPORTED_CONTAINER_FIELDS, where)
    try:
        model = _ContainerDefinition.model_validate(raw)
    except ValidationError as error:
        raise _one_line(error, where) from None
    return pb.ContainerDefinition(
        name=model.name,
        image=model.image,
        cpu=model.cpu,
        memory=model.memory or 0,
        memory_reservation=model.memory_reservation or 0,
        port_mappings=[
            pb.PortMapping(
                container_port=p.container_port,
                host_port=p.host_port,
                protocol=pb.UDP if p.protocol == "udp" else pb.TCP,
                name=p.name,
            )
            for p in model.port_mappings
        ],
        environment=[pb.KeyValuePair(name=e.name, value=e.value) for e in model.environment],
        command=model.command,
        entry_point=model.entry_point,
        essential=model.essential,
        stop_timeout=model.stop_timeout or 0,
    )


def load_json(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidArgument(
            f"{source} is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}"
        ) from None


def parse_container_definitions(data: Any) -> list[pb.ContainerDefinition]:
    """Convert a parsed ECS `containerDefinitions` array into protobuf messages."""
    if not isinstance(data, list) or not data:
        raise InvalidArgument("containerDefinitions must be a non-empty JSON array of objects")
    return [_container_to_proto(raw, i) for i, raw in enumerate(data)]


def parse_register_document(data: Any) -> tuple[pb.TaskDefinition, list[str]]:
    """Convert a whole register-task-definition document; also return ignored fields."""
    if not isinstance(data, dict):
        raise InvalidArgument("the task definition document must be a JSON object")
    _reject_unsupported(data, _UNSUPPORTED_DOCUMENT_FIELDS, "taskDefinition")
    ignored = sorted(field for field in data if field in IGNORED_DOCUMENT_FIELDS)
    relevant = {k: v for k, v in data.items() if k not in IGNORED_DOCUMENT_FIELDS}
    try:
        doc = _RegisterDocument.model_validate(relevant)
    except ValidationError as error:
        raise _one_line(error, "taskDefinition") from None
    task_definition = pb.TaskDefinition(
        family=doc.family,
        container_definitions=parse_container_definitions(doc.container_definitions),
        cpu=doc.cpu or 0,
        memory=doc.memory or 0,
    )
    return task_definition, ignored


def validate_task_definition(td: pb.TaskDefinition) -> None:
    """Check what the JSON schema cannot: names, uniqueness, reservations, ports."""
    check_family(td.family)
    if not td.container_definitions:
        raise InvalidArgument("a task definition needs at least one container definition")
    seen_names: set[str] = set()
    seen_host_ports: set[tuple[int, int]] = set()
    for i, c in enumerate(td.container_definitions):
        where = f"containerDefinitions[{i}]"
        if not _CONTAINER_NAME.match(c.name):
            raise InvalidArgument(f"{where}.name {c.name!r} is invalid: use 1-255 letters, digits, '-', '_'")
        if c.name in seen_names:
            raise InvalidArgument(f"{where}.name {c.name!r} is used by another container of the task")
        seen_names.add(c.name)
        if not c.image.strip():
            raise InvalidArgument(f"{where}.image must not be empty")
        if not (c.memory or c.memory_reservation or td.memory):
            raise InvalidArgument(f"{where}: set memory or memoryReservation (MiB), or a task-level memory")
        if c.memory and c.memory_reservation and c.memory_reservation > c.memory:
            raise InvalidArgument(
                f"{where}: memoryReservation ({c.memory_reservation}) must not exceed memory ({c.memory})"
            )
        for p in c.port_mappings:
            if not 1 <= p.container_port <= 65535 or p.host_port > 65535:
                raise InvalidArgument(f"{where}.portMappings: ports must be between 1 and 65535")
            if p.host_port:
                key = (p.host_port, p.protocol)
                if key in seen_host_ports:
                    raise InvalidArgument(f"{where}.portMappings: hostPort {p.host_port} is mapped twice")
                seen_host_ports.add(key)
    if not any(c.essential for c in td.container_definitions):
        raise InvalidArgument("at least one container definition must be essential")


def task_reservation(td: pb.TaskDefinition) -> tuple[int, int]:
    """CPU units and MiB a task of this definition reserves on its node.

    As in ECS: a task-level value wins; otherwise each container counts its
    memoryReservation if set, else its hard memory limit.
    """
    cpu = td.cpu or sum(c.cpu for c in td.container_definitions)
    memory = td.memory or sum(c.memory_reservation or c.memory for c in td.container_definitions)
    return cpu, memory


def static_host_ports(td: pb.TaskDefinition) -> list[tuple[int, int]]:
    """The (hostPort, protocol) pairs a task of this definition needs free on its node."""
    return [
        (p.host_port, p.protocol) for c in td.container_definitions for p in c.port_mappings if p.host_port
    ]
