"""ECS fields that only mean something on AWS: what Berth accepts, with which note, and what
it refuses, with the reason.

A field Berth can do without (the task runs as its author meant) is accepted, checked for
shape and bounds, and answered with a note that says what Berth does instead. It changes
nothing Berth does, but it is kept as registered (JSON text in the definition's
`aws_only_fields`), so `describe -o json` shows the document the user registered. A field
whose absence would change what the task does (a GPU, a Windows credential) is refused,
saying why.

    container field           Berth
    repositoryCredentials     note: the agent's engine pulls with the credentials it is logged in with
    firelensConfiguration     note: no log router is set up; the container runs as an ordinary one
    versionConsistency        note (enabled): each node pulls the tag when it starts a task
    resourceRequirements      refused: GPUs and inference accelerators are not scheduled
    credentialSpecs           refused: Windows gMSA credentials; Berth runs Linux containers

    task field                Berth
    placementConstraints      note: not applied; give the constraints to the service
    proxyConfiguration        note: App Mesh's; no proxy redirection, the proxy runs as an ordinary container
    ephemeralStorage          note: Fargate's; containers write to the node's disk
    enableFaultInjection      note (true): no fault-injection endpoints
    inferenceAccelerators     note: Elastic Inference is AWS's; no accelerator is attached (a container
                              asking for one through resourceRequirements is refused)

Empty lists and objects, and false, ask for nothing and get no note.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool, ValidationError

from berth.ecs_schema import EcsModel
from berth.errors import InvalidArgument
from berth.names import shown

CONTAINER_FIELDS = frozenset(
    {
        "repositoryCredentials",
        "firelensConfiguration",
        "versionConsistency",
        "resourceRequirements",
        "credentialSpecs",
    }
)
DOCUMENT_FIELDS = frozenset(
    {
        "placementConstraints",
        "proxyConfiguration",
        "ephemeralStorage",
        "enableFaultInjection",
        "inferenceAccelerators",
    }
)

MAX_ARN_LENGTH = 2048
MAX_OPTIONS = 100  # firelensConfiguration.options entries
MAX_OPTION_LENGTH = 4096
MAX_ITEMS = 10  # constraints, accelerators, requirements, properties
# The kept fields of one container or one document, as JSON text (the whole definition is at
# most 64 KiB anyway; this bounds what a gRPC client may put in the field directly).
MAX_KEPT_BYTES = 16_384
# Document fields that only mean something on AWS and need no note of their own (the parser
# names them in one "AWS-only, Berth ignores ..." note); kept as registered like the rest.
IGNORED_DOCUMENT_FIELDS = frozenset(
    {"taskRoleArn", "executionRoleArn", "requiresCompatibilities", "runtimePlatform"}
)


class _RepositoryCredentials(EcsModel):
    credentials_parameter: str = Field(alias="credentialsParameter", max_length=MAX_ARN_LENGTH)


class _FirelensConfiguration(EcsModel):
    type: Literal["fluentbit", "fluentd"]
    options: dict[
        Annotated[str, Field(max_length=255)], Annotated[str, Field(max_length=MAX_OPTION_LENGTH)]
    ] = Field(default_factory=dict, max_length=MAX_OPTIONS)


class _ResourceRequirement(EcsModel):
    type: Literal["GPU", "InferenceAccelerator"]
    value: str = Field(max_length=64)


class _AwsContainerFields(EcsModel):
    repository_credentials: _RepositoryCredentials | None = Field(default=None, alias="repositoryCredentials")
    firelens_configuration: _FirelensConfiguration | None = Field(default=None, alias="firelensConfiguration")
    version_consistency: Literal["enabled", "disabled"] | None = Field(
        default=None, alias="versionConsistency"
    )
    resource_requirements: list[_ResourceRequirement] = Field(
        default_factory=list, alias="resourceRequirements", max_length=MAX_ITEMS
    )
    credential_specs: list[Annotated[str, Field(max_length=MAX_ARN_LENGTH)]] = Field(
        default_factory=list, alias="credentialSpecs", max_length=MAX_ITEMS
    )


class _PlacementConstraint(EcsModel):
    type: Literal["memberOf"]
    expression: str = Field(default="", max_length=2000)


class _ProxyProperty(EcsModel):
    name: str = Field(max_length=255)
    value: str = Field(max_length=MAX_OPTION_LENGTH)


class _ProxyConfiguration(EcsModel):
    type: Literal["APPMESH"] = "APPMESH"
    container_name: str = Field(alias="containerName", max_length=255)
    properties: list[_ProxyProperty] = Field(default_factory=list, max_length=MAX_ITEMS)


class _EphemeralStorage(EcsModel):
    size_in_gib: int = Field(alias="sizeInGiB", ge=21, le=200)


class _InferenceAccelerator(EcsModel):
    device_name: str = Field(alias="deviceName", max_length=255)
    device_type: str = Field(alias="deviceType", max_length=255)


class _AwsDocumentFields(EcsModel):
    placement_constraints: list[_PlacementConstraint] = Field(
        default_factory=list, alias="placementConstraints", max_length=MAX_ITEMS
    )
    proxy_configuration: _ProxyConfiguration | None = Field(default=None, alias="proxyConfiguration")
    ephemeral_storage: _EphemeralStorage | None = Field(default=None, alias="ephemeralStorage")
    # ECS takes a JSON boolean only (as for every boolean field Berth adds).
    enable_fault_injection: StrictBool = Field(default=False, alias="enableFaultInjection")
    inference_accelerators: list[_InferenceAccelerator] = Field(
        default_factory=list, alias="inferenceAccelerators", max_length=MAX_ITEMS
    )


REPOSITORY_CREDENTIALS_NOTE = (
    "repositoryCredentials: Berth does not read AWS Secrets Manager: the agent's Docker engine pulls "
    "with the registry credentials it is logged in with (docker login on each node)"
)
FIRELENS_NOTE = (
    "firelensConfiguration: Berth sets up no FireLens log router: this container runs as an ordinary "
    "container, with its own configuration"
)
VERSION_CONSISTENCY_NOTE = (
    "versionConsistency: Berth does not pin the image digest at deployment: each node pulls the tag "
    "when it starts a task"
)
PLACEMENT_CONSTRAINTS_NOTE = (
    "placementConstraints: a task definition's constraints are not applied by Berth: give them to the "
    "service (berth service create --placement-constraints)"
)
PROXY_CONFIGURATION_NOTE = (
    "proxyConfiguration: App Mesh is AWS's: Berth redirects no traffic through a proxy; the proxy "
    "container runs as an ordinary container"
)
EPHEMERAL_STORAGE_NOTE = (
    "ephemeralStorage: Fargate's task storage: on Berth, containers write to the node's own disk"
)
INFERENCE_ACCELERATORS_NOTE = (
    "inferenceAccelerators: Elastic Inference accelerators exist only on AWS: Berth attaches none; "
    "a container that asks for one (resourceRequirements) is refused"
)
FAULT_INJECTION_NOTE = "enableFaultInjection: Berth has no fault-injection endpoints; ignored"


def take_container(raw: dict[str, Any], where: str) -> tuple[list[str], str, dict[str, Any]]:
    """Split a container definition: the notes its AWS-only fields get, those fields as
    registered (JSON text, "" for none), and every other field.

    Raises InvalidArgument for a field Berth refuses, pydantic's ValidationError for a
    malformed one (the caller names the field)."""
    fields = _AwsContainerFields.model_validate({k: v for k, v in raw.items() if k in CONTAINER_FIELDS})
    rest = {k: v for k, v in raw.items() if k not in CONTAINER_FIELDS}
    if fields.resource_requirements:
        kinds = sorted({r.type for r in fields.resource_requirements})
        raise InvalidArgument(
            f"{where}.resourceRequirements: {', '.join(kinds)} is refused: Berth does not schedule "
            "GPUs or inference accelerators, and the container would run without one"
        )
    if fields.credential_specs:
        raise InvalidArgument(
            f"{where}.credentialSpecs is refused: these are Windows gMSA credentials, and Berth runs "
            "Linux containers only"
        )
    notes = []
    if fields.repository_credentials is not None:
        notes.append(f"{where}.{REPOSITORY_CREDENTIALS_NOTE}")
    if fields.firelens_configuration is not None:
        notes.append(f"{where}.{FIRELENS_NOTE}")
    if fields.version_consistency == "enabled":
        notes.append(f"{where}.{VERSION_CONSISTENCY_NOTE}")
    return notes, _kept({k: v for k, v in raw.items() if k in CONTAINER_FIELDS}), rest


def take_document(
    doc: dict[str, Any], containers: list[dict[str, Any]]
) -> tuple[list[str], str, dict[str, Any]]:
    """Split a register document: the notes its AWS-only fields get (IGNORED_DOCUMENT_FIELDS
    get theirs from the caller), all its AWS-only fields as registered (JSON text, "" for none),
    and every other field.

    Raises as take_container does."""
    fields = _AwsDocumentFields.model_validate({k: v for k, v in doc.items() if k in DOCUMENT_FIELDS})
    kept = _kept({k: v for k, v in doc.items() if k in DOCUMENT_FIELDS or k in IGNORED_DOCUMENT_FIELDS})
    rest = {k: v for k, v in doc.items() if k not in DOCUMENT_FIELDS and k not in IGNORED_DOCUMENT_FIELDS}
    notes = []
    if fields.inference_accelerators:
        notes.append(INFERENCE_ACCELERATORS_NOTE)
    if fields.placement_constraints:
        notes.append(PLACEMENT_CONSTRAINTS_NOTE)
    proxy = fields.proxy_configuration
    if proxy is not None:
        names = {c.get("name") for c in containers if isinstance(c, dict)}
        if proxy.container_name not in names:
            raise InvalidArgument(
                f"taskDefinition.proxyConfiguration.containerName: {shown(proxy.container_name)} is not "
                "a container of this task"
            )
        notes.append(PROXY_CONFIGURATION_NOTE)
    if fields.ephemeral_storage is not None:
        notes.append(EPHEMERAL_STORAGE_NOTE)
    if fields.enable_fault_injection:
        notes.append(FAULT_INJECTION_NOTE)
    return notes, kept, rest


def _kept(fields: dict[str, Any]) -> str:
    if not fields:
        return ""
    text = json.dumps(fields, separators=(",", ":"), ensure_ascii=False)
    if len(text.encode()) > MAX_KEPT_BYTES:
        raise InvalidArgument(
            f"the AWS-only fields ({', '.join(sorted(fields))}) take {len(text.encode())} bytes: "
            f"the limit is {MAX_KEPT_BYTES}"
        )
    return text


def _parse_kept(text: str, where: str, allowed: frozenset[str]) -> dict[str, Any]:
    """The kept fields a gRPC client sent: a bounded JSON object of allowed fields only."""
    if len(text.encode()) > MAX_KEPT_BYTES:
        raise InvalidArgument(f"{where}: AWS-only fields take more than {MAX_KEPT_BYTES} bytes")
    try:
        fields = json.loads(text)
    except (ValueError, RecursionError):
        raise InvalidArgument(f"{where}: AWS-only fields are not a JSON object") from None
    if not isinstance(fields, dict) or not fields:
        raise InvalidArgument(f"{where}: AWS-only fields are not a non-empty JSON object")
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise InvalidArgument(f"{where}: {shown(unknown[0])} is not an AWS-only field Berth keeps")
    return fields


def check_kept_container(where: str, text: str) -> None:
    """Check a container's kept AWS-only fields as the parser would (registration re-checks
    what a gRPC client sent unchecked). Raises InvalidArgument."""
    if text:
        try:
            take_container(_parse_kept(text, where, CONTAINER_FIELDS), where)
        except ValidationError as error:
            message = error.errors()[0]["msg"]
            raise InvalidArgument(f"{where}: AWS-only fields are malformed: {message}") from None


def check_kept_document(text: str, container_names: list[str]) -> None:
    """The document-level counterpart of check_kept_container."""
    if text:
        fields = _parse_kept(text, "taskDefinition", DOCUMENT_FIELDS | IGNORED_DOCUMENT_FIELDS)
        try:
            take_document(fields, [{"name": name} for name in container_names])
        except ValidationError as error:
            raise InvalidArgument(
                f"taskDefinition: AWS-only fields are malformed: {error.errors()[0]['msg']}"
            ) from None
