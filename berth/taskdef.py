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
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from berth import tags as tag_rules
from berth.ecs_schema import EcsModel, one_line
from berth.errors import InvalidArgument
from berth.names import check_family, shown
from berth.secretnames import MAX_REFERENCE_LENGTH, parse_reference
from berth.taskdef_aws import IGNORED_DOCUMENT_FIELDS, check_kept_container, check_kept_document
from berth.taskdef_aws import take_container as take_aws_container
from berth.taskdef_aws import take_document as take_aws_document
from berth.taskdef_docker import DockerOptions, Namespaces, check_docker_options, namespaces_to_ecs
from berth.taskdef_docker import to_ecs as docker_options_to_ecs
from berth.taskdef_envfiles import EnvironmentFiles, check_environment_files
from berth.taskdef_envfiles import notes as environment_files_notes
from berth.taskdef_envfiles import to_ecs as environment_files_to_ecs
from berth.taskdef_lifecycle import LifecycleSettings, check_lifecycle
from berth.taskdef_lifecycle import to_ecs as lifecycle_to_ecs
from berth.taskdef_logging import LogSettings, check_log_configuration
from berth.taskdef_logging import note as log_configuration_note
from berth.taskdef_logging import to_ecs as log_configuration_to_ecs
from berth.taskdef_process import ProcessSettings, check_process_settings
from berth.taskdef_process import to_ecs as process_settings_to_ecs
from berth.taskdef_storage import ContainerStorage, check_storage, parse_volumes, volumes_to_ecs
from berth.taskdef_storage import to_ecs as storage_to_ecs
from berth.v1 import resources_pb2 as pb

# Fields of describe output (AWS's and Berth's own), pasted back into a register
# document: the registry sets them, so they are ignored, with a note.
READ_ONLY_DOCUMENT_FIELDS = frozenset(
    {
        "taskDefinitionArn",
        "revision",
        "status",
        "requiresAttributes",
        "compatibilities",
        "registeredAt",
        "registeredBy",
        "deregisteredAt",
    }
)
NETWORK_MODES: dict[str, pb.NetworkMode.ValueType] = {
    "bridge": pb.NETWORK_MODE_BRIDGE,
    "host": pb.NETWORK_MODE_HOST,
    "none": pb.NETWORK_MODE_NONE,
    "awsvpc": pb.NETWORK_MODE_AWSVPC,
}
AWSVPC_NOTE = (
    "networkMode awsvpc is AWS's own (an interface per task): Berth runs the task in bridge mode, "
    "its containers reachable through their port mappings"
)
_CONTAINER_NAME = re.compile(r"[A-Za-z0-9_-]{1,255}")
# ECS: port mapping names are up to 64 lowercase letters, digits, '_' or '-', not starting with '-'.
_PORT_NAME = re.compile(r"[a-z0-9_][a-z0-9_-]{0,63}")

# Limits, checked where a task definition enters (the JSON parsers below and
# `validate_task_definition`, which the control plane runs on every
# registration). ECS's own limits where ECS has one; otherwise generous bounds
# that keep every sum far inside the uint32 fields of the protocol.
MAX_CONTAINERS = 10  # ECS: 10 containers per task definition
MAX_CPU_UNITS = 262_144  # Docker's cpu-shares ceiling; per container, per task and for the sum
MIN_MEMORY_MIB = 6  # Docker's smallest memory limit (ECS: 6 MiB)
MAX_MEMORY_MIB = 4_194_304  # 4 TiB, per container, per task and for the sum
MAX_STOP_TIMEOUT = 3600  # seconds
MAX_PORT_MAPPINGS = 100  # per task definition
MAX_ENVIRONMENT = 500  # variables per container
MAX_SECRETS = 100  # secret references per container
MAX_ARGUMENTS = 500  # items of command and of entryPoint, each
MAX_IMAGE_LENGTH = 255  # ECS: up to 255 characters
MAX_NAME_LENGTH = 255  # environment variable names
MAX_VALUE_LENGTH = 32_768  # one environment value or command argument
MAX_DEFINITION_BYTES = 65_536  # ECS: a task definition is at most 64 KiB
# ECS's healthCheck limits and defaults, in seconds (retries: attempts).
HEALTH_INTERVAL = (5, 300, 30)
HEALTH_TIMEOUT = (2, 60, 5)
HEALTH_RETRIES = (1, 10, 3)
HEALTH_START_PERIOD = (0, 300, 0)
HEALTH_COMMAND_KINDS = ("CMD", "CMD-SHELL")


def _int_or_string(value: Any) -> Any:
    # ECS writes task-level cpu and memory as strings ("256"), and exports often
    # carry container numbers as strings too; accept both.
    # ASCII digits only: "²".isdigit() is true, and int("²") raises.
    if isinstance(value, str) and len(value) <= 16 and value.strip().isascii() and value.strip().isdigit():
        return int(value)
    return value


# ECS's task-level forms with a unit: "1 vCPU", "0.25 vcpu", "2 GB", "512 MiB".
_WITH_UNIT = re.compile(r" *([0-9]{1,7})(?:\.([0-9]{1,4}))? ?([A-Za-z]{2,4}) *")
_CPU_UNITS = {"vcpu": 1024}
_MEMORY_UNITS = {"gb": 1024, "gib": 1024, "mb": 1, "mib": 1}


def _with_unit(value: Any, units: dict[str, int], what: str) -> Any:
    value = _int_or_string(value)
    if not isinstance(value, str) or len(value) > 32:
        return value
    match = _WITH_UNIT.fullmatch(value)
    if match is None or match.group(3).lower() not in units:
        raise ValueError(f"{what} {shown(value)} is not a number: write {_EXAMPLES[what]}")
    whole, fraction, unit = match.group(1), match.group(2) or "", match.group(3).lower()
    # Exact decimal arithmetic: 0.25 vCPU is 256 units, 0.3 vCPU is refused rather than rounded.
    scaled = (int(whole) * 10 ** len(fraction) + int(fraction or "0")) * units[unit]
    if scaled % 10 ** len(fraction):
        raise ValueError(f"{what} {shown(value)} is not a whole number of {_BASE[what]}")
    return scaled // 10 ** len(fraction)


_EXAMPLES = {"cpu": '"256" or "0.25 vCPU"', "memory": '"512", "512 MiB" or "1 GB"'}
_BASE = {"cpu": "CPU units", "memory": "MiB"}


def _task_cpu(value: Any) -> Any:
    return _with_unit(value, _CPU_UNITS, "cpu")


def _task_memory(value: Any) -> Any:
    return _with_unit(value, _MEMORY_UNITS, "memory")


class _KeyValue(EcsModel):
    name: str = Field(max_length=MAX_NAME_LENGTH)
    value: str = Field(max_length=MAX_VALUE_LENGTH)


class _SecretReference(EcsModel):
    name: str = Field(max_length=MAX_NAME_LENGTH)
    value_from: str = Field(alias="valueFrom", max_length=MAX_REFERENCE_LENGTH)


class _PortMapping(EcsModel):
    container_port: int = Field(alias="containerPort", ge=1, le=65535)
    host_port: int = Field(default=0, alias="hostPort", ge=0, le=65535)
    protocol: Literal["tcp", "udp"] = "tcp"
    name: str = Field(default="", max_length=64)
    app_protocol: Literal["http", "http2", "grpc"] | None = Field(default=None, alias="appProtocol")

    _coerce = field_validator("container_port", "host_port", mode="before")(_int_or_string)


class _HealthCheck(EcsModel):
    # Only types and uint32 safety here; `_check_health_check` says ECS's limits in its own words.
    command: list[str] = Field(max_length=MAX_ARGUMENTS)
    interval: int = Field(default=HEALTH_INTERVAL[2], ge=0, le=2**31)
    timeout: int = Field(default=HEALTH_TIMEOUT[2], ge=0, le=2**31)
    retries: int = Field(default=HEALTH_RETRIES[2], ge=0, le=2**31)
    start_period: int = Field(default=HEALTH_START_PERIOD[2], alias="startPeriod", ge=0, le=2**31)


class _ContainerDefinition(EcsModel):
    name: str = Field(max_length=255)
    image: str = Field(max_length=MAX_IMAGE_LENGTH)
    cpu: int = Field(default=0, ge=0, le=MAX_CPU_UNITS)
    memory: int | None = Field(default=None, ge=MIN_MEMORY_MIB, le=MAX_MEMORY_MIB)
    memory_reservation: int | None = Field(
        default=None, alias="memoryReservation", ge=MIN_MEMORY_MIB, le=MAX_MEMORY_MIB
    )
    port_mappings: list[_PortMapping] = Field(
        default_factory=list, alias="portMappings", max_length=MAX_PORT_MAPPINGS
    )
    environment: list[_KeyValue] = Field(default_factory=list, max_length=MAX_ENVIRONMENT)
    command: list[str] = Field(default_factory=list, max_length=MAX_ARGUMENTS)
    entry_point: list[str] = Field(default_factory=list, alias="entryPoint", max_length=MAX_ARGUMENTS)
    essential: bool = True
    stop_timeout: int | None = Field(default=None, alias="stopTimeout", ge=0, le=MAX_STOP_TIMEOUT)
    health_check: _HealthCheck | None = Field(default=None, alias="healthCheck")
    secrets: list[_SecretReference] = Field(default_factory=list, max_length=MAX_SECRETS)

    _coerce = field_validator("cpu", "memory", "memory_reservation", "stop_timeout", mode="before")(
        _int_or_string
    )


class _RegisterDocument(EcsModel):
    family: str = Field(max_length=255)
    container_definitions: list[dict[str, Any]] = Field(
        alias="containerDefinitions", min_length=1, max_length=MAX_CONTAINERS
    )
    cpu: int | None = Field(default=None, ge=0, le=MAX_CPU_UNITS)
    memory: int | None = Field(default=None, ge=MIN_MEMORY_MIB, le=MAX_MEMORY_MIB)
    network_mode: Literal["bridge", "host", "none", "awsvpc"] | None = Field(
        default=None, alias="networkMode"
    )

    _coerce_cpu = field_validator("cpu", mode="before")(_task_cpu)
    _coerce_memory = field_validator("memory", mode="before")(_task_memory)


def _present(doc: dict[str, Any]) -> dict[str, Any]:
    """The fields that are there: explicit nulls are absent, as AWS reads them. (Every field of
    ECS's schema is known; one that is not is refused by the schema, naming it.)"""
    return {key: value for key, value in doc.items() if value is not None}


def _container_to_proto(raw: Any, index: int, notes: list[str]) -> pb.ContainerDefinition:
    """One container definition as a message; what the user should read about it goes to `notes`
    (each note starts with the container's place, so a note on a ten-container file is findable)."""
    where = f"containerDefinitions[{index}]"
    if not isinstance(raw, dict):
        raise InvalidArgument(f"{where}: expected a JSON object")
    raw = _without_nulls(raw)
    try:
        aws_notes, aws_only, present = take_aws_container(_present(raw), where)
        options, present = DockerOptions.take(present)
        settings, rest = ProcessSettings.take(present)
        logging, rest = LogSettings.take(rest)
        environment_files, rest = EnvironmentFiles.take(rest)
        storage, rest = ContainerStorage.take(rest)
        lifecycle, rest = LifecycleSettings.take(rest)
        model = _ContainerDefinition.model_validate(rest)
    except ValidationError as error:
        raise one_line(error, where) from None
    notes.extend(aws_notes)
    container = pb.ContainerDefinition(
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
        secrets=[pb.SecretReference(name=r.name, value_from=r.value_from) for r in model.secrets],
        command=model.command,
        entry_point=model.entry_point,
        essential=model.essential,
        stop_timeout=model.stop_timeout or 0,
        health_check=(
            pb.HealthCheck(
                command=model.health_check.command,
                interval=model.health_check.interval,
                timeout=model.health_check.timeout,
                retries=model.health_check.retries,
                start_period=model.health_check.start_period,
            )
            if model.health_check is not None
            else None
        ),
    )
    container.aws_only_fields = aws_only
    settings.apply(container, where)
    options.apply(container)
    if logging is not None:
        logging.apply(container)
    environment_files.apply(container)
    check_log_configuration(where, container)
    check_environment_files(where, container)
    if (said := log_configuration_note(where, container)) is not None:
        notes.append(said)
    notes.extend(environment_files_notes(where, container))
    storage.apply(container, where)
    lifecycle.apply(container)
    return container


def _without_nulls(value: Any, depth: int = 4) -> Any:
    """Explicit nulls in objects read as absent fields (as AWS reads them), down to `depth`
    levels (a container's fields are at most three deep); deeper input is left to the schema,
    so hostile nesting costs no recursion here."""
    if depth <= 0:
        return value
    if isinstance(value, dict):
        return {k: _without_nulls(v, depth - 1) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(item, depth - 1) for item in value]
    return value


def load_json(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidArgument(
            f"{source} is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}"
        ) from None


def parse_container_definitions(data: Any, notes: list[str] | None = None) -> list[pb.ContainerDefinition]:
    """Convert a parsed ECS `containerDefinitions` array into protobuf messages; the notes a
    user should read (what runs differently than on AWS) are appended to `notes` when given."""
    if not isinstance(data, list) or not data:
        raise InvalidArgument("containerDefinitions must be a non-empty JSON array of objects")
    if len(data) > MAX_CONTAINERS:
        raise InvalidArgument(
            f"containerDefinitions has {len(data)} containers: a task definition has at most {MAX_CONTAINERS}"
        )
    said: list[str] = [] if notes is None else notes
    containers = [_container_to_proto(raw, i, said) for i, raw in enumerate(data)]
    validate_containers(containers)
    check_docker_options(pb.TaskDefinition(container_definitions=containers))
    return containers


def parse_register_document(data: Any) -> tuple[pb.TaskDefinition, list[str]]:
    """Convert a whole register-task-definition document (or describe output pasted back);
    also return the notes a user should read: what was ignored, what runs differently."""
    if isinstance(data, dict) and set(data) <= {"taskDefinition", "tags"} and "taskDefinition" in data:
        # `aws ecs describe-task-definition` output: the document sits under "taskDefinition",
        # and its tags (--include TAGS) beside it: they are the definition's, kept like its own.
        wrapper_tags, data = data.get("tags"), data["taskDefinition"]
        if wrapper_tags and isinstance(data, dict) and data.get("tags") is None:
            data = data | {"tags": wrapper_tags}
    if not isinstance(data, dict):
        raise InvalidArgument("the task definition document must be a JSON object")
    data = {k: v for k, v in data.items() if v is not None}
    notes = []
    ignored = sorted(field for field in data if field in IGNORED_DOCUMENT_FIELDS)
    if ignored:
        notes.append(f"{', '.join(ignored)}: AWS-only, Berth ignores {'them' if len(ignored) > 1 else 'it'}")
    read_only = sorted(field for field in data if field in READ_ONLY_DOCUMENT_FIELDS)
    if read_only:
        notes.append(f"{', '.join(read_only)}: read-only fields of describe output, ignored")
    relevant = {k: v for k, v in _present(data).items() if k not in READ_ONLY_DOCUMENT_FIELDS}
    # The definition's own tags, as TagResource and ListTagsForResource see them (berth.tags).
    tags = tag_rules.from_document(relevant.pop("tags", None))
    containers = relevant.get("containerDefinitions")
    volumes = parse_volumes(relevant.pop("volumes", []), notes)
    try:
        aws_notes, aws_only, relevant = take_aws_document(
            relevant, containers if isinstance(containers, list) else []
        )
        namespaces, relevant = Namespaces.take(relevant)
        doc = _RegisterDocument.model_validate(relevant)
    except ValidationError as error:
        raise one_line(error, "taskDefinition") from None
    if doc.network_mode == "awsvpc":
        notes.append(AWSVPC_NOTE)
    notes.extend(aws_notes)
    task_definition = pb.TaskDefinition(
        family=doc.family,
        container_definitions=[
            _container_to_proto(raw, i, notes) for i, raw in enumerate(doc.container_definitions)
        ],
        cpu=doc.cpu or 0,
        memory=doc.memory or 0,
        network_mode=NETWORK_MODES[doc.network_mode] if doc.network_mode else pb.NETWORK_MODE_UNSPECIFIED,
        aws_only_fields=aws_only,
        volumes=volumes,
        tags=tags,
    )
    namespaces.apply(task_definition)
    validate_task_definition(task_definition)
    return task_definition, notes


def _printable(text: str) -> bool:
    """No whitespace or control characters anywhere (names, images)."""
    return text.isprintable() and not any(c.isspace() for c in text)


def _check_strings(where: str, c: pb.ContainerDefinition) -> None:
    if not c.image.strip():
        raise InvalidArgument(f"{where}.image must not be empty")
    if len(c.image) > MAX_IMAGE_LENGTH or not _printable(c.image):
        raise InvalidArgument(
            f"{where}.image {shown(c.image)} is invalid: use up to {MAX_IMAGE_LENGTH} characters "
            "without spaces or control characters"
        )
    for field, items in (("command", c.command), ("entryPoint", c.entry_point)):
        if len(items) > MAX_ARGUMENTS:
            raise InvalidArgument(f"{where}.{field} has {len(items)} items: the limit is {MAX_ARGUMENTS}")
        for item in items:
            if len(item) > MAX_VALUE_LENGTH or "\0" in item:
                raise InvalidArgument(
                    f"{where}.{field}: each item is at most {MAX_VALUE_LENGTH} characters, without NUL"
                )
    if len(c.environment) > MAX_ENVIRONMENT:
        raise InvalidArgument(
            f"{where}.environment has {len(c.environment)} variables: the limit is {MAX_ENVIRONMENT}"
        )
    for variable in c.environment:
        if not variable.name or len(variable.name) > MAX_NAME_LENGTH or "=" in variable.name:
            raise InvalidArgument(
                f"{where}.environment: name {shown(variable.name)} is invalid: use 1-{MAX_NAME_LENGTH} "
                "characters without '='"
            )
        if not _printable(variable.name):
            raise InvalidArgument(
                f"{where}.environment: name {shown(variable.name)} has spaces or control characters"
            )
        if len(variable.value) > MAX_VALUE_LENGTH or "\0" in variable.value:
            raise InvalidArgument(
                f"{where}.environment: the value of {variable.name} must be at most "
                f"{MAX_VALUE_LENGTH} characters, without NUL"
            )


def _check_secrets(where: str, c: pb.ContainerDefinition) -> None:
    """References only (the values stay in the secret store); each names a secret validly.

    A secret that does not exist yet is no error here, as in ECS: it is looked up when a
    task starts, and a task whose secret is missing stops with a clear reason."""
    if len(c.secrets) > MAX_SECRETS:
        raise InvalidArgument(f"{where}.secrets has {len(c.secrets)} entries: the limit is {MAX_SECRETS}")
    names = {variable.name for variable in c.environment}
    for reference in c.secrets:
        if (
            not reference.name
            or len(reference.name) > MAX_NAME_LENGTH
            or "=" in reference.name
            or not _printable(reference.name)
        ):
            raise InvalidArgument(
                f"{where}.secrets: name {shown(reference.name)} is invalid: use 1-{MAX_NAME_LENGTH} "
                "characters without '=', spaces or control characters"
            )
        if reference.name in names:
            raise InvalidArgument(
                f"{where}.secrets: {reference.name} is set twice (in environment or secrets)"
            )
        names.add(reference.name)
        try:
            parse_reference(reference.value_from)
        except InvalidArgument as error:
            raise InvalidArgument(f"{where}.secrets[{reference.name}].valueFrom: {error}") from None


def _check_health_check(where: str, c: pb.ContainerDefinition) -> None:
    if not c.HasField("health_check"):
        return
    check = c.health_check
    where = f"{where}.healthCheck"
    command = list(check.command)
    if len(command) < 2 or command[0] not in HEALTH_COMMAND_KINDS:
        raise InvalidArgument(
            f'{where}.command must be ["CMD", "program", "arg", ...] or ["CMD-SHELL", "shell command"]'
        )
    if command[0] == "CMD-SHELL" and len(command) != 2:
        raise InvalidArgument(f'{where}.command: "CMD-SHELL" takes exactly one shell command string')
    if len(command) > MAX_ARGUMENTS:
        raise InvalidArgument(f"{where}.command has {len(command)} items: the limit is {MAX_ARGUMENTS}")
    for item in command[1:]:
        if not item.strip() or len(item) > MAX_VALUE_LENGTH or "\0" in item:
            raise InvalidArgument(
                f"{where}.command: each item is 1-{MAX_VALUE_LENGTH} characters, not blank, without NUL"
            )
    for field, value, (low, high, _default) in (
        ("interval", check.interval, HEALTH_INTERVAL),
        ("timeout", check.timeout, HEALTH_TIMEOUT),
        ("retries", check.retries, HEALTH_RETRIES),
        ("startPeriod", check.start_period, HEALTH_START_PERIOD),
    ):
        if not low <= value <= high:
            unit = "" if field == "retries" else " seconds"
            raise InvalidArgument(
                f"{where}.{field} {value} is out of range: use {low}-{high}{unit}, as in ECS"
            )


def _check_numbers(where: str, c: pb.ContainerDefinition, task_memory: int) -> None:
    if c.cpu > MAX_CPU_UNITS:
        raise InvalidArgument(f"{where}.cpu {c.cpu} is too large: use 0-{MAX_CPU_UNITS} CPU units")
    for field, value in (("memory", c.memory), ("memoryReservation", c.memory_reservation)):
        if value and not MIN_MEMORY_MIB <= value <= MAX_MEMORY_MIB:
            raise InvalidArgument(
                f"{where}.{field} {value} is out of range: use {MIN_MEMORY_MIB}-{MAX_MEMORY_MIB} MiB"
            )
    if not (c.memory or c.memory_reservation or task_memory):
        raise InvalidArgument(f"{where}: set memory or memoryReservation (MiB), or a task-level memory")
    if c.memory and c.memory_reservation and c.memory_reservation > c.memory:
        raise InvalidArgument(
            f"{where}: memoryReservation ({c.memory_reservation}) must not exceed memory ({c.memory})"
        )
    if c.stop_timeout > MAX_STOP_TIMEOUT:
        raise InvalidArgument(
            f"{where}.stopTimeout {c.stop_timeout} is too large: use 0-{MAX_STOP_TIMEOUT} seconds"
        )


def validate_containers(containers: Sequence[pb.ContainerDefinition], task_memory: int = 0) -> None:
    """Check the containers of one task definition: names, strings, numbers, ports, counts."""
    if not containers:
        raise InvalidArgument("a task definition needs at least one container definition")
    if len(containers) > MAX_CONTAINERS:
        raise InvalidArgument(
            f"a task definition has at most {MAX_CONTAINERS} containers, not {len(containers)}"
        )
    seen_names: set[str] = set()
    seen_host_ports: set[tuple[int, int]] = set()
    mappings = 0
    for i, c in enumerate(containers):
        where = f"containerDefinitions[{i}]"
        if not _CONTAINER_NAME.fullmatch(c.name):
            raise InvalidArgument(
                f"{where}.name {shown(c.name)} is invalid: use 1-255 letters, digits, '-', '_'"
            )
        if c.name in seen_names:
            raise InvalidArgument(f"{where}.name {c.name!r} is used by another container of the task")
        seen_names.add(c.name)
        _check_strings(where, c)
        _check_secrets(where, c)
        _check_numbers(where, c, task_memory)
        _check_health_check(where, c)
        check_process_settings(where, c)
        check_log_configuration(where, c)
        check_environment_files(where, c)
        mappings += len(c.port_mappings)
        if mappings > MAX_PORT_MAPPINGS:
            raise InvalidArgument(f"a task definition has at most {MAX_PORT_MAPPINGS} port mappings")
        for p in c.port_mappings:
            if not 1 <= p.container_port <= 65535 or p.host_port > 65535:
                raise InvalidArgument(f"{where}.portMappings: ports must be between 1 and 65535")
            if p.protocol not in (pb.TCP, pb.UDP):
                raise InvalidArgument(f"{where}.portMappings: protocol must be tcp or udp")
            if p.name and not _PORT_NAME.fullmatch(p.name):
                raise InvalidArgument(
                    f"{where}.portMappings: name {shown(p.name)} is invalid: use up to 64 lowercase "
                    "letters, digits, '_' or '-', not starting with '-'"
                )
            if p.host_port:
                key = (p.host_port, p.protocol)
                if key in seen_host_ports:
                    raise InvalidArgument(f"{where}.portMappings: hostPort {p.host_port} is mapped twice")
                seen_host_ports.add(key)
    if not any(c.essential for c in containers):
        raise InvalidArgument("at least one container definition must be essential")
    check_lifecycle(containers)


def validate_task_definition(td: pb.TaskDefinition) -> None:
    """Check what the JSON schema cannot, and everything a gRPC client may send unchecked:
    names, strings, every number, the totals a task reserves, the definition's size."""
    check_family(td.family)
    if td.cpu > MAX_CPU_UNITS:
        raise InvalidArgument(f"task cpu {td.cpu} is too large: use 0-{MAX_CPU_UNITS} CPU units")
    if td.memory and not MIN_MEMORY_MIB <= td.memory <= MAX_MEMORY_MIB:
        raise InvalidArgument(
            f"task memory {td.memory} is out of range: use {MIN_MEMORY_MIB}-{MAX_MEMORY_MIB} MiB"
        )
    validate_containers(td.container_definitions, td.memory)
    for index, container in enumerate(td.container_definitions):
        check_kept_container(f"containerDefinitions[{index}]", container.aws_only_fields)
    check_kept_document(td.aws_only_fields, [c.name for c in td.container_definitions])
    _check_network_mode(td)
    check_docker_options(td)
    check_storage(td)
    cpu = sum(c.cpu for c in td.container_definitions)
    memory = sum(c.memory_reservation or c.memory for c in td.container_definitions)
    if cpu > MAX_CPU_UNITS:
        raise InvalidArgument(
            f"the containers reserve {cpu} CPU units in total: a task reserves at most {MAX_CPU_UNITS}"
        )
    if memory > MAX_MEMORY_MIB:
        raise InvalidArgument(
            f"the containers reserve {memory} MiB in total: a task reserves at most {MAX_MEMORY_MIB}"
        )
    size = td.ByteSize()
    if size > MAX_DEFINITION_BYTES:
        raise InvalidArgument(
            f"the task definition is {size} bytes: the limit is {MAX_DEFINITION_BYTES} (64 KiB, as in ECS)"
        )


def _check_network_mode(td: pb.TaskDefinition) -> None:
    if td.network_mode not in pb.NetworkMode.values():
        raise InvalidArgument(f"networkMode {td.network_mode} is unknown: use bridge, host, none or awsvpc")
    mappings = [(i, p) for i, c in enumerate(td.container_definitions) for p in c.port_mappings]
    # What a container without a network may not ask for: berth.taskdef_namespaces.
    if td.network_mode == pb.NETWORK_MODE_HOST:
        seen: set[tuple[int, int]] = set()
        for i, p in mappings:
            where = f"containerDefinitions[{i}].portMappings"
            if p.host_port and p.host_port != p.container_port:
                raise InvalidArgument(
                    f"{where}: with networkMode host, hostPort ({p.host_port}) must be absent or equal "
                    f"containerPort ({p.container_port})"
                )
            if (p.container_port, p.protocol) in seen:
                raise InvalidArgument(f"{where}: containerPort {p.container_port} is used twice on the host")
            seen.add((p.container_port, p.protocol))


def health_checked(td: pb.TaskDefinition) -> bool:
    """An essential container has a health check: its tasks serve only once HEALTHY (as in ECS)."""
    return any(c.essential and c.HasField("health_check") for c in td.container_definitions)


def task_reservation(td: pb.TaskDefinition) -> tuple[int, int]:
    """CPU units and MiB a task of this definition reserves on its node.

    As in ECS: a task-level value wins; otherwise each container counts its
    memoryReservation if set, else its hard memory limit.
    """
    cpu = td.cpu or sum(c.cpu for c in td.container_definitions)
    memory = td.memory or sum(c.memory_reservation or c.memory for c in td.container_definitions)
    return cpu, memory


def static_host_ports(td: pb.TaskDefinition) -> list[tuple[int, int]]:
    """The (hostPort, protocol) pairs a task of this definition needs free on its node.

    In host mode every containerPort is a port of the host's own."""
    if td.network_mode == pb.NETWORK_MODE_HOST:
        return [(p.container_port, p.protocol) for c in td.container_definitions for p in c.port_mappings]
    return [
        (p.host_port, p.protocol) for c in td.container_definitions for p in c.port_mappings if p.host_port
    ]


_NETWORK_MODE_NAMES = {value: name for name, value in NETWORK_MODES.items()}


def _ecs_container(c: pb.ContainerDefinition) -> dict[str, Any]:
    out: dict[str, Any] = {"name": c.name, "image": c.image}
    if c.cpu:
        out["cpu"] = c.cpu
    if c.memory:
        out["memory"] = c.memory
    if c.memory_reservation:
        out["memoryReservation"] = c.memory_reservation
    out["essential"] = c.essential
    if c.port_mappings:
        mappings = []
        for p in c.port_mappings:
            mapping: dict[str, Any] = {"containerPort": p.container_port}
            if p.host_port:
                mapping["hostPort"] = p.host_port
            mapping["protocol"] = "udp" if p.protocol == pb.UDP else "tcp"
            if p.name:
                mapping["name"] = p.name
            mappings.append(mapping)
        out["portMappings"] = mappings
    if c.environment:
        out["environment"] = [{"name": e.name, "value": e.value} for e in c.environment]
    if c.secrets:
        out["secrets"] = [{"name": r.name, "valueFrom": r.value_from} for r in c.secrets]
    if c.entry_point:
        out["entryPoint"] = list(c.entry_point)
    if c.command:
        out["command"] = list(c.command)
    if c.stop_timeout:
        out["stopTimeout"] = c.stop_timeout
    if c.HasField("health_check"):
        check = c.health_check
        out["healthCheck"] = {
            "command": list(check.command),
            "interval": check.interval,
            "timeout": check.timeout,
            "retries": check.retries,
            "startPeriod": check.start_period,
        }
    out.update(process_settings_to_ecs(c))
    out.update(log_configuration_to_ecs(c))
    out.update(environment_files_to_ecs(c))
    out.update(docker_options_to_ecs(c))
    if c.aws_only_fields:
        out.update(json.loads(c.aws_only_fields))
    out.update(storage_to_ecs(c))
    out.update(lifecycle_to_ecs(c))
    return out


def to_ecs_document(td: pb.TaskDefinition) -> dict[str, Any]:
    """A stored task definition in ECS's describe shape: camelCase fields, lowercase
    protocols, numbers only where set, task cpu/memory as ECS's strings. Registering it
    again (`--cli-input-json`) gives the same definition; the read-only fields at the end
    (revision, status, registeredAt) are ignored then, with a note."""
    out: dict[str, Any] = {
        "family": td.family,
        "containerDefinitions": [_ecs_container(c) for c in td.container_definitions],
    }
    if td.cpu:
        out["cpu"] = str(td.cpu)
    if td.memory:
        out["memory"] = str(td.memory)
    if td.network_mode:
        out["networkMode"] = _NETWORK_MODE_NAMES.get(td.network_mode, "bridge")
    out.update(namespaces_to_ecs(td))
    if td.aws_only_fields:
        out.update(json.loads(td.aws_only_fields))
    if td.volumes:
        out["volumes"] = volumes_to_ecs(td)
    if td.tags:
        out["tags"] = tag_rules.to_ecs(td.tags)
    if td.revision:
        out["revision"] = td.revision
    if td.status:
        out["status"] = pb.TaskDefinitionStatus.Name(td.status)
    if td.HasField("registered_at"):
        out["registeredAt"] = td.registered_at.ToJsonString()
    return out
