"""dependsOn, startTimeout and restartPolicy: parsed as ECS writes them, checked at every
registration (the gRPC API too), shown again by describe unchanged."""

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
from berth.taskdef_lifecycle import dependency_order
from berth.v1 import resources_pb2 as pb

HEALTH = {"command": ["CMD-SHELL", "true"], "interval": 5, "timeout": 2, "retries": 1}


def container(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "image": "busybox", "memory": 16, **fields}


def init_sidecar_app(**app: Any) -> list[dict[str, Any]]:
    return [
        container("init", essential=False),
        container("sidecar", healthCheck=HEALTH),
        container(
            "app",
            dependsOn=[
                {"containerName": "init", "condition": "COMPLETE"},
                {"containerName": "sidecar", "condition": "HEALTHY"},
            ],
            **app,
        ),
    ]


def test_an_init_container_and_a_healthy_sidecar_register() -> None:
    init, _sidecar, app = parse_container_definitions(
        init_sidecar_app(
            startTimeout="60",
            restartPolicy={"enabled": True, "ignoredExitCodes": [0, 143], "restartAttemptPeriod": 90},
        )
    )
    assert [(d.container_name, d.condition) for d in app.depends_on] == [
        ("init", pb.ContainerDependency.COMPLETE),
        ("sidecar", pb.ContainerDependency.HEALTHY),
    ]
    assert app.start_timeout == 60
    assert app.restart_policy.enabled and list(app.restart_policy.ignored_exit_codes) == [0, 143]
    assert app.restart_policy.restart_attempt_period == 90
    assert not init.depends_on and not init.HasField("restart_policy")


@pytest.mark.parametrize(
    ("definitions", "message"),
    [
        (
            [container("a", dependsOn=[{"containerName": "a", "condition": "START"}])],
            "containerDefinitions[0].dependsOn[0].containerName: a container cannot depend on itself",
        ),
        (
            [container("a", dependsOn=[{"containerName": "db", "condition": "START"}])],
            "containerDefinitions[0].dependsOn[0].containerName: no container of the task is named 'db'",
        ),
        (
            [
                container("a", dependsOn=[{"containerName": "b", "condition": "START"}]),
                container("b", dependsOn=[{"containerName": "c", "condition": "START"}]),
                container("c", dependsOn=[{"containerName": "a", "condition": "START"}]),
            ],
            "dependsOn has a cycle among containers a, b, c",
        ),
        (
            [container("a", dependsOn=[{"containerName": "b", "condition": "HEALTHY"}]), container("b")],
            "containerDefinitions[0].dependsOn[0]: condition HEALTHY needs a healthCheck on container b",
        ),
        (
            [container("a", dependsOn=[{"containerName": "b", "condition": "SUCCESS"}]), container("b")],
            "containerDefinitions[0].dependsOn[0]: condition SUCCESS cannot target essential container b "
            '(its exit would stop the task): mark it "essential": false',
        ),
        (
            [
                container(
                    "a",
                    dependsOn=[
                        {"containerName": "b", "condition": "START"},
                        {"containerName": "b", "condition": "COMPLETE"},
                    ],
                ),
                container("b", essential=False),
            ],
            "containerDefinitions[0].dependsOn[1].containerName: b is listed twice",
        ),
        (
            [container("a", dependsOn=[{"containerName": "b", "condition": "RUNNING"}]), container("b")],
            "containerDefinitions[0].dependsOn[0].condition: Input should be 'START', 'COMPLETE', "
            "'SUCCESS' or 'HEALTHY'",
        ),
        (
            [container("a", dependsOn=[{"containerName": "b"}]), container("b")],
            "containerDefinitions[0].dependsOn[0].condition: required field is missing",
        ),
        (
            [container("a", startTimeout=1)],
            "containerDefinitions[0].startTimeout: Input should be greater than or equal to 2",
        ),
        (
            [container("a", startTimeout=0)],  # ECS refuses it; stored, 0 would read as unset
            "containerDefinitions[0].startTimeout: Input should be greater than or equal to 2",
        ),
        (
            [container("a", startTimeout="0")],
            "containerDefinitions[0].startTimeout: Input should be greater than or equal to 2",
        ),
        (
            [container("a", startTimeout=3601)],
            "containerDefinitions[0].startTimeout 3601 is out of range: use 2-3600 seconds",
        ),
        (
            [container("a", restartPolicy={"enabled": True, "restartAttemptPeriod": 59})],
            "containerDefinitions[0].restartPolicy.restartAttemptPeriod: Input should be greater "
            "than or equal to 60",
        ),
        (
            [container("a", restartPolicy={"enabled": True, "restartAttemptPeriod": 0})],
            "containerDefinitions[0].restartPolicy.restartAttemptPeriod: Input should be greater "
            "than or equal to 60",
        ),
        (
            [container("a", restartPolicy={"enabled": True, "restartAttemptPeriod": 1801})],
            "containerDefinitions[0].restartPolicy.restartAttemptPeriod 1801 is out of range: "
            "use 60-1800 seconds, as in ECS",
        ),
        (
            [container("a", restartPolicy={"enabled": True, "ignoredExitCodes": [256]})],
            "containerDefinitions[0].restartPolicy.ignoredExitCodes: 256 is not an exit code (0-255)",
        ),
        (
            [container("a", restartPolicy={"enabled": True, "ignoredExitCodes": list(range(51))})],
            "containerDefinitions[0].restartPolicy.ignoredExitCodes: List should have at most 50 items "
            "after validation, not 51",
        ),
        (
            [container("a", restartPolicy={"enabled": True, "ignoredExitCodes": [2**40]})],
            "containerDefinitions[0].restartPolicy.ignoredExitCodes[0]: Input should be less than or "
            "equal to 2147483647",
        ),
        (
            [container("a", restartPolicy={"ignoredExitCodes": [1]})],
            "containerDefinitions[0].restartPolicy.enabled: required field is missing",
        ),
        (
            [container("a", restartPolicy={"enabled": True, "maximumRetryCount": 3})],
            "containerDefinitions[0].restartPolicy.maximumRetryCount: unknown field 'maximumRetryCount'",
        ),
        (
            [container("a", essential=False), container("b", essential=False)],
            "at least one container definition must be essential",
        ),
    ],
)
def test_refused_with_one_line_naming_the_field(definitions: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        parse_container_definitions(definitions)
    assert str(refused.value) == message


def test_too_many_dependencies_are_refused_by_the_schema() -> None:
    many = [{"containerName": f"c{i}", "condition": "START"} for i in range(11)]
    with pytest.raises(InvalidArgument, match=r"dependsOn: List should have at most 10 items"):
        parse_container_definitions([container("a", dependsOn=many)])


def test_the_control_plane_checks_what_a_grpc_client_sends() -> None:
    """A message built by hand (no JSON parser) meets the same checks."""

    def definition(*containers: pb.ContainerDefinition) -> pb.TaskDefinition:
        return pb.TaskDefinition(family="f", container_definitions=containers)

    a = pb.ContainerDefinition(name="a", image="busybox", memory=16, essential=True)
    b = pb.ContainerDefinition(name="b", image="busybox", memory=16, essential=True)
    a.depends_on.add(container_name="b", condition=pb.ContainerDependency.COMPLETE)
    with pytest.raises(InvalidArgument, match="cannot target essential container b"):
        validate_task_definition(definition(a, b))
    a.depends_on[0].condition = 9  # type: ignore[assignment]
    with pytest.raises(InvalidArgument, match=r"condition must be START, COMPLETE, SUCCESS or HEALTHY"):
        validate_task_definition(definition(a, b))
    a.depends_on[0].condition = pb.ContainerDependency.START
    b.depends_on.add(container_name="a", condition=pb.ContainerDependency.START)
    with pytest.raises(InvalidArgument, match="dependsOn has a cycle among containers a, b"):
        validate_task_definition(definition(a, b))
    del b.depends_on[:]
    validate_task_definition(definition(a, b))
    for _ in range(11):
        a.depends_on.add(container_name="b", condition=pb.ContainerDependency.START)
    with pytest.raises(InvalidArgument, match="dependsOn has 12 entries: the limit is 10"):
        validate_task_definition(definition(a, b))
    del a.depends_on[:]
    a.restart_policy.enabled = True
    a.restart_policy.ignored_exit_codes.append(-1)
    with pytest.raises(InvalidArgument, match=r"ignoredExitCodes: -1 is not an exit code"):
        validate_task_definition(definition(a, b))
    a.restart_policy.ignored_exit_codes[0] = 1
    a.restart_policy.ignored_exit_codes.append(1)
    with pytest.raises(InvalidArgument, match="ignoredExitCodes lists a code twice"):
        validate_task_definition(definition(a, b))


@pytest.mark.parametrize(
    ("depends", "order"),
    [
        ({}, ["a", "b", "c"]),
        ({"a": ["c"]}, ["b", "c", "a"]),
        ({"a": ["b"], "b": ["c"]}, ["c", "b", "a"]),
        ({"c": ["a"], "b": ["a"]}, ["a", "b", "c"]),
        ({"a": ["b", "c"]}, ["b", "c", "a"]),
    ],
)
def test_containers_start_after_what_they_depend_on_otherwise_in_definition_order(
    depends: dict[str, list[str]], order: list[str]
) -> None:
    containers = [
        pb.ContainerDefinition(
            name=name,
            depends_on=[pb.ContainerDependency(container_name=n) for n in depends.get(name, [])],
        )
        for name in ("a", "b", "c")
    ]
    assert [containers[i].name for i in dependency_order(containers)] == order


def test_describe_shows_the_fields_and_registers_again_unchanged() -> None:
    document = {
        "family": "ordered",
        "containerDefinitions": init_sidecar_app(
            startTimeout=30,
            restartPolicy={"enabled": True, "ignoredExitCodes": [0], "restartAttemptPeriod": 60},
        ),
    }
    first, notes = parse_register_document(document)
    assert notes == []
    described = to_ecs_document(first)
    app = described["containerDefinitions"][2]
    assert app["dependsOn"] == [
        {"containerName": "init", "condition": "COMPLETE"},
        {"containerName": "sidecar", "condition": "HEALTHY"},
    ]
    assert app["startTimeout"] == 30
    assert app["restartPolicy"] == {"enabled": True, "ignoredExitCodes": [0], "restartAttemptPeriod": 60}
    again, _ = parse_register_document(described)
    assert again == first


def test_a_disabled_policy_and_nulls_read_as_ecs_reads_them() -> None:
    (c,) = parse_container_definitions(
        [container("a", dependsOn=None, startTimeout=None, restartPolicy={"enabled": False})]
    )
    assert not c.depends_on and c.start_timeout == 0
    assert c.HasField("restart_policy") and not c.restart_policy.enabled
    assert to_ecs_document(pb.TaskDefinition(family="f", container_definitions=[c]))["containerDefinitions"][
        0
    ]["restartPolicy"] == {"enabled": False}
