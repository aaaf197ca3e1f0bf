"""AWS-only fields: accepted with a note that says what Berth does instead, or refused with the
reason; malformed ones refused naming the field; nothing of them is stored (tables)."""

from __future__ import annotations

from typing import Any

import pytest

from berth.errors import InvalidArgument
from berth.taskdef import (
    parse_container_definitions,
    parse_register_document,
    to_ecs_document,
    validate_task_definition,
)
from berth.taskdef_aws import (
    EPHEMERAL_STORAGE_NOTE,
    FAULT_INJECTION_NOTE,
    FIRELENS_NOTE,
    INFERENCE_ACCELERATORS_NOTE,
    PLACEMENT_CONSTRAINTS_NOTE,
    PROXY_CONFIGURATION_NOTE,
    REPOSITORY_CREDENTIALS_NOTE,
    VERSION_CONSISTENCY_NOTE,
)


def web(**fields: Any) -> dict[str, Any]:
    return {"name": "web", "image": "web:1", "memory": 64} | fields


def doc(*containers: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"family": "app", "containerDefinitions": list(containers) or [web()]} | fields


PLAIN, _ = parse_register_document(doc())

CONTAINER_NOTES = [
    (
        {"repositoryCredentials": {"credentialsParameter": "arn:aws:secretsmanager:us-east-1:1:secret:x"}},
        REPOSITORY_CREDENTIALS_NOTE,
    ),
    (
        {"firelensConfiguration": {"type": "fluentbit", "options": {"enable-ecs-log-metadata": "true"}}},
        FIRELENS_NOTE,
    ),
    ({"firelensConfiguration": {"type": "fluentd"}}, FIRELENS_NOTE),
    ({"versionConsistency": "enabled"}, VERSION_CONSISTENCY_NOTE),
]


@pytest.mark.parametrize(("fields", "note"), CONTAINER_NOTES)
def test_aws_only_container_fields_are_accepted_with_a_note_naming_the_container(
    fields: dict[str, Any], note: str
) -> None:
    td, notes = parse_register_document(doc(web(), web(name="side", **fields)))
    assert notes == [f"containerDefinitions[1].{note}"]
    # Kept as registered and shown by describe; otherwise the definition is the one without it.
    shown = to_ecs_document(td)["containerDefinitions"][1]
    assert {k: shown[k] for k in fields} == fields
    td.container_definitions[1].ClearField("aws_only_fields")
    assert td == parse_register_document(doc(web(), web(name="side")))[0]


@pytest.mark.parametrize(
    "fields",
    [
        {"versionConsistency": "disabled"},
        {"resourceRequirements": []},
        {"credentialSpecs": []},
        {"repositoryCredentials": None, "firelensConfiguration": None},
    ],
)
def test_container_fields_that_ask_for_nothing_get_no_note(fields: dict[str, Any]) -> None:
    notes: list[str] = []
    parse_container_definitions([web(**fields)], notes)
    assert notes == []


DOCUMENT_NOTES = [
    (
        {"placementConstraints": [{"type": "memberOf", "expression": "attribute:ecs.instance-type =~ t2.*"}]},
        PLACEMENT_CONSTRAINTS_NOTE,
    ),
    (
        {
            "proxyConfiguration": {
                "type": "APPMESH",
                "containerName": "web",
                "properties": [{"name": "AppPorts", "value": "9080"}],
            }
        },
        PROXY_CONFIGURATION_NOTE,
    ),
    ({"ephemeralStorage": {"sizeInGiB": 30}}, EPHEMERAL_STORAGE_NOTE),
    ({"ephemeralStorage": {"sizeInGiB": "30"}}, EPHEMERAL_STORAGE_NOTE),
    ({"enableFaultInjection": True}, FAULT_INJECTION_NOTE),
    (
        {"inferenceAccelerators": [{"deviceName": "device_1", "deviceType": "eia2.medium"}]},
        INFERENCE_ACCELERATORS_NOTE,
    ),
]


@pytest.mark.parametrize(("fields", "note"), DOCUMENT_NOTES)
def test_aws_only_task_fields_are_accepted_with_a_note(fields: dict[str, Any], note: str) -> None:
    td, notes = parse_register_document(doc(**fields))
    assert notes == [note]
    # Kept as registered and shown by describe; otherwise the definition is the plain one.
    shown = to_ecs_document(td)
    assert {k: shown[k] for k in fields} == fields
    td.ClearField("aws_only_fields")
    assert td == PLAIN


@pytest.mark.parametrize(
    "fields",
    [
        {"placementConstraints": []},
        {"inferenceAccelerators": []},
        {"enableFaultInjection": False},
        {"proxyConfiguration": None, "ephemeralStorage": None},
    ],
)
def test_task_fields_that_ask_for_nothing_get_no_note(fields: dict[str, Any]) -> None:
    assert parse_register_document(doc(**fields))[1] == []


REFUSED = [
    (
        doc(web(resourceRequirements=[{"type": "GPU", "value": "1"}])),
        "containerDefinitions[0].resourceRequirements: GPU is refused: Berth does not schedule GPUs",
    ),
    (
        doc(web(resourceRequirements=[{"type": "InferenceAccelerator", "value": "device_1"}])),
        "containerDefinitions[0].resourceRequirements: InferenceAccelerator is refused",
    ),
    (
        doc(web(credentialSpecs=["credentialspecdomainless:arn:aws:s3:::bucket/spec.json"])),
        "containerDefinitions[0].credentialSpecs is refused: these are Windows gMSA credentials",
    ),
]


@pytest.mark.parametrize(("document", "message"), REFUSED)
def test_what_berth_cannot_honour_is_refused_with_the_reason(document: Any, message: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        parse_register_document(document)
    assert message in str(refused.value)


MALFORMED = [
    (doc(web(repositoryCredentials={"credentialsParameter": "x" * 3000})), "[0].repositoryCredentials"),
    (doc(web(repositoryCredentials={"credentialsparameter": "arn"})), "credentialsParameter: required"),
    (doc(web(firelensConfiguration={"type": "logstash"})), "[0].firelensConfiguration.type"),
    (doc(web(firelensConfiguration={"type": "fluentbit", "options": {"k": 1}})), "firelensConfiguration"),
    (doc(web(firelensConfiguration={"type": "fluentd", "options": {"k": "v" * 5000}})), ".options"),
    (doc(web(versionConsistency="maybe")), "containerDefinitions[0].versionConsistency"),
    (doc(web(resourceRequirements=[{"type": "TPU", "value": "1"}])), "[0].resourceRequirements[0].type"),
    (doc(placementConstraints=[{"type": "distinctInstance"}]), "taskDefinition.placementConstraints[0].type"),
    (doc(placementConstraints=[{"type": "memberOf"}] * 11), "taskDefinition.placementConstraints"),
    (doc(ephemeralStorage={"sizeInGiB": 20}), "taskDefinition.ephemeralStorage.sizeInGiB"),
    (doc(ephemeralStorage={"sizeInGiB": 10**30}), "taskDefinition.ephemeralStorage.sizeInGiB"),
    (doc(enableFaultInjection="perhaps"), "taskDefinition.enableFaultInjection"),
    (doc(enableFaultInjection="true"), "enableFaultInjection: Input should be a valid boolean"),
    (doc(enableFaultInjection=1), "enableFaultInjection: Input should be a valid boolean"),
    (doc(inferenceAccelerators=[{"deviceName": "d1"}]), "taskDefinition.inferenceAccelerators[0].deviceType"),
    (doc(inferenceAccelerators=[{"deviceName": "d" * 300, "deviceType": "eia2.medium"}]), "[0].deviceName"),
    (doc(inferenceAccelerators=[{"deviceName": "d", "deviceType": "t"}] * 11), "inferenceAccelerators"),
    (
        doc(proxyConfiguration={"type": "APPMESH", "containerName": "envoy"}),
        "taskDefinition.proxyConfiguration.containerName: 'envoy' is not a container of this task",
    ),
    (doc(proxyConfiguration={"type": "ISTIO", "containerName": "web"}), "proxyConfiguration.type"),
]  # fmt: skip


@pytest.mark.parametrize(("document", "message"), MALFORMED)
def test_malformed_aws_only_fields_are_refused_naming_the_field(document: Any, message: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        parse_register_document(document)
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)


def test_ignored_task_fields_are_kept_as_registered_and_shown_by_describe() -> None:
    fields = {
        "taskRoleArn": "arn:aws:iam::1:role/app",
        "requiresCompatibilities": ["FARGATE"],
        "tags": [{"key": "team", "value": "web"}],
    }
    td, notes = parse_register_document(doc(**fields))
    # Tags are the definition's own (TagResource, ListTagsForResource), not an AWS-only field.
    assert notes == ["requiresCompatibilities, taskRoleArn: AWS-only, Berth ignores them"]
    assert [(t.key, t.value) for t in td.tags] == [("team", "web")]
    shown = to_ecs_document(td)
    assert {k: shown[k] for k in fields} == fields
    assert parse_register_document(shown)[0] == td


@pytest.mark.parametrize(
    ("container_fields", "task_fields", "message"),
    [
        ("not json", "", "AWS-only fields are not a JSON object"),
        ("[]", "", "not a non-empty JSON object"),
        ('{"privileged": true}', "", "'privileged' is not an AWS-only field Berth keeps"),
        ('{"resourceRequirements": [{"type": "GPU", "value": "1"}]}', "", "GPU is refused"),
        ('{"firelensConfiguration": {"type": "nope"}}', "", "AWS-only fields are malformed"),
        ("", '{"containerDefinitions": []}', "'containerDefinitions' is not an AWS-only field"),
        ("", '{"proxyConfiguration": {"containerName": "ghost"}}', "not a container of this task"),
        ("", '{"taskRoleArn": "' + "a" * 20_000 + '"}', "AWS-only fields take more than"),
    ],
)
def test_kept_fields_from_a_grpc_client_are_checked_on_registration(
    container_fields: str, task_fields: str, message: str
) -> None:
    """A client may skip the CLI and fill the kept JSON itself: registration checks it."""
    td, _ = parse_register_document(doc())
    td.container_definitions[0].aws_only_fields = container_fields
    td.aws_only_fields = task_fields
    with pytest.raises(InvalidArgument) as refused:
        validate_task_definition(td)
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)


def test_the_tags_of_describe_output_are_kept_with_the_definition() -> None:
    tags = [{"key": "team", "value": "web"}]
    td, notes = parse_register_document({"taskDefinition": doc(), "tags": tags})
    assert notes == []
    assert to_ecs_document(td)["tags"] == tags
