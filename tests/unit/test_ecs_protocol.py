"""The ECS door's wire checks: targets, bodies, input against ECS's model, pages, error types."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from berth import errors
from controlplane.ecs.errors import translate
from controlplane.ecs.pages import page
from controlplane.ecs.protocol import TARGET_PREFIX, EcsError, check_input, operation_name, parse_body


def test_the_target_names_an_ecs_operation() -> None:
    assert operation_name(TARGET_PREFIX + "CreateService") == "CreateService"
    for bad in (
        None,
        "",
        "CreateService",
        TARGET_PREFIX + "Nope",
        "Other_20141113.CreateService",
        TARGET_PREFIX * 20,
    ):
        with pytest.raises(EcsError) as refused:
            operation_name(bad)
        assert refused.value.error_type in ("MissingAction", "UnknownOperationException")


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b"[]",
        b'"text"',
        b"1",
        b"\xff\xfe",
        b"[" * 50_000 + b"]" * 50_000,
        b'{"a":' * 40 + b"1" + b"}" * 40,
    ],
)
def test_bodies_that_are_not_one_json_object_are_serialization_errors(raw: bytes) -> None:
    with pytest.raises(EcsError) as refused:
        parse_body(raw)
    assert refused.value.error_type == "SerializationException"
    assert "\n" not in str(refused.value)


def test_an_empty_body_is_an_empty_request() -> None:
    assert parse_body(b"") == {} and parse_body(b"  ") == {}


@pytest.mark.parametrize(
    ("operation", "params", "error_type"),
    [
        ("CreateService", {"serviceName": 5}, "SerializationException"),
        ("CreateService", {"serviceName": "a", "desiredCount": True}, "SerializationException"),
        ("CreateService", {"serviceName": "a", "surprise": 1}, "InvalidParameterException"),
        ("DescribeServices", {}, "InvalidParameterException"),
        ("TagResource", {"resourceArn": "x", "tags": [{"key": 1}]}, "SerializationException"),
    ],
)
def test_input_is_checked_against_the_ecs_model(
    operation: str, params: dict[str, object], error_type: str
) -> None:
    with pytest.raises(EcsError) as refused:
        check_input(operation, params)
    assert refused.value.error_type == error_type


def test_valid_input_passes() -> None:
    check_input("CreateService", {"serviceName": "web", "taskDefinition": "web:1", "desiredCount": 2})
    check_input("ListClusters", {})


@settings(deadline=None, max_examples=200)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
        max_leaves=20,
    )
)
def test_any_json_body_is_refused_or_accepted_never_crashes(value: object) -> None:
    raw = json.dumps(value).encode()
    try:
        params = parse_body(raw)
        check_input("CreateService", params)
    except EcsError as error:
        assert error.error_type in ("SerializationException", "InvalidParameterException")


def test_pages_cover_every_item_once_in_order() -> None:
    items = [f"arn:{i:03d}" for i in range(25)]
    seen, token = [], None
    while True:
        params: dict[str, object] = {"maxResults": 7}
        if token:
            params["nextToken"] = token
        answer = page(params, items, "arns")
        seen.extend(answer["arns"])
        token = answer.get("nextToken")
        if not token:
            break
    assert seen == items


@given(st.text(max_size=100))
def test_a_hostile_next_token_is_refused_or_a_position(token: str) -> None:
    try:
        page({"nextToken": token}, ["a", "b"], "arns")
    except EcsError as error:
        assert error.error_type == "InvalidParameterException"


@pytest.mark.parametrize("size", [0, 101])
def test_max_results_is_bounded(size: int) -> None:
    with pytest.raises(EcsError):
        page({"maxResults": size}, ["a"], "arns")


@pytest.mark.parametrize(
    ("error", "not_found", "error_type"),
    [
        (errors.NotFound("x"), "ServiceNotFoundException", "ServiceNotFoundException"),
        (errors.InvalidArgument("x"), "ClientException", "InvalidParameterException"),
        (errors.ClusterHasServices("x"), "ClientException", "ClusterContainsServicesException"),
        (errors.ClusterHasTasks("x"), "ClientException", "ClusterContainsTasksException"),
        (errors.ClusterHasNodes("x"), "ClientException", "ClusterContainsContainerInstancesException"),
        (errors.ServiceNotActive("x"), "ServiceNotFoundException", "ServiceNotActiveException"),
        (errors.FailedPrecondition("x"), "ClientException", "ClientException"),
        (errors.PermissionDenied("x"), "ClientException", "AccessDeniedException"),
        (errors.ResourceExhausted("x"), "ClientException", "LimitExceededException"),
    ],
)
def test_berth_errors_become_ecs_error_types(
    error: errors.BerthError, not_found: str, error_type: str
) -> None:
    assert translate(error, not_found).error_type == error_type


def test_every_served_parameter_is_one_ecs_knows_and_register_takes_them_all() -> None:
    from controlplane.ecs.protocol import service_model
    from controlplane.ecs.server import OPERATIONS

    for name, served in OPERATIONS.items():
        members = set(service_model().operation_model(name).input_shape.members)
        assert served.supported | served.ignored <= members, name
        assert not served.supported & served.ignored, name
    # The task definition parser judges every field of ECS's register request itself.
    register = OPERATIONS["RegisterTaskDefinition"]
    assert register.supported == set(
        service_model().operation_model("RegisterTaskDefinition").input_shape.members
    )


def test_pages_descending_continue_after_their_token_when_items_come_and_go() -> None:
    items = [f"web:{r}" for r in range(1, 8)]

    def position(item: str) -> str:
        return f"{int(item.split(':')[1]):010d}"

    first = page({"maxResults": 3}, items, "arns", sort_key=position, reverse=True)
    assert first["arns"] == ["web:7", "web:6", "web:5"]
    # web:6 goes and web:9 comes between pages: the next page starts right after web:5.
    changed = [i for i in items if i != "web:6"] + ["web:9"]
    second = page(
        {"maxResults": 3, "nextToken": first["nextToken"]}, changed, "arns", sort_key=position, reverse=True
    )
    assert second["arns"] == ["web:4", "web:3", "web:2"]
