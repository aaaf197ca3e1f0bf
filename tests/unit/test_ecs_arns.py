"""berth.ecs.arns: ECS ARNs formatted and read back; hostile values are one InvalidArgument."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from berth.ecs.arns import Arns
from berth.errors import InvalidArgument

ARNS = Arns("eu-west-1", "123456789012")
NAMES = st.from_regex(r"[A-Za-z0-9_-]{1,255}", fullmatch=True)
IDS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}", fullmatch=True)


def test_formats() -> None:
    prefix = "arn:aws:ecs:eu-west-1:123456789012:"
    assert ARNS.cluster("prod") == prefix + "cluster/prod"
    assert ARNS.task_definition("web", 3) == prefix + "task-definition/web:3"
    assert ARNS.service("prod", "web") == prefix + "service/prod/web"
    assert ARNS.task("prod", "abc123") == prefix + "task/prod/abc123"
    assert ARNS.container_instance("prod", "node-1") == prefix + "container-instance/prod/node-1"
    assert ARNS.container("prod", "abc123", "app") == prefix + "container/prod/abc123/app"
    assert Arns().cluster("x") == "arn:aws:ecs:local:000000000000:cluster/x"


def test_names_and_arns_are_both_accepted() -> None:
    assert ARNS.cluster_name("") == "default"
    assert ARNS.cluster_name("prod") == "prod"
    assert ARNS.cluster_name(ARNS.cluster("prod")) == "prod"
    assert ARNS.service_name("web", "") == ("default", "web")
    assert ARNS.service_name("web", ARNS.cluster("prod")) == ("prod", "web")
    # A new-style ARN's cluster wins; an old-style one takes the cluster given.
    assert ARNS.service_name(ARNS.service("prod", "web"), "other") == ("prod", "web")
    old = "arn:aws:ecs:eu-west-1:123456789012:service/web"
    assert ARNS.service_name(old, "prod") == ("prod", "web")
    assert ARNS.task_id("abc123", "prod") == ("prod", "abc123")
    assert ARNS.task_id(ARNS.task("prod", "abc123"), "") == ("prod", "abc123")
    assert ARNS.task_id("arn:aws:ecs:eu-west-1:123456789012:task/abc123", "") == ("default", "abc123")
    assert ARNS.node_id(ARNS.container_instance("prod", "node-1"), "") == ("prod", "node-1")
    assert ARNS.node_id("node-1", "") == ("default", "node-1")
    assert ARNS.task_definition_ref("web") == "web"
    assert ARNS.task_definition_ref("web:7") == "web:7"
    assert ARNS.task_definition_ref(ARNS.task_definition("web", 7)) == "web:7"


def test_resources_for_tagging() -> None:
    assert ARNS.resource(ARNS.cluster("prod")) == ("cluster", "prod", "prod")
    assert ARNS.resource(ARNS.service("prod", "web")) == ("service", "prod", "web")
    assert ARNS.resource(ARNS.task("prod", "abc")) == ("task", "prod", "abc")
    assert ARNS.resource(ARNS.task_definition("web", 2)) == ("task-definition", "", "web:2")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ARNS.cluster_name("arn:aws:ecs:us-east-1:123456789012:cluster/prod"), "region"),
        (lambda: ARNS.cluster_name("arn:aws:ecs:eu-west-1:999999999999:cluster/prod"), "account"),
        (lambda: ARNS.cluster_name(ARNS.service("prod", "web")), "not a cluster ARN"),
        (lambda: ARNS.cluster_name("arn:aws:s3:::bucket"), "not an ECS ARN"),
        (lambda: ARNS.cluster_name("has space"), "invalid"),
        (lambda: ARNS.cluster_name("x" * 1601), "invalid"),
        (lambda: ARNS.cluster_name("arn:" + "x" * 1600), "longer than 1600"),
        (lambda: ARNS.service_name(ARNS.task("prod", "a"), ""), "not a service ARN"),
        (lambda: ARNS.service_name("arn:aws:ecs:eu-west-1:123456789012:service/a/b/c", ""), "service"),
        (lambda: ARNS.task_id("arn:aws:ecs:eu-west-1:123456789012:task/prod/", ""), "invalid"),
        (lambda: ARNS.task_definition_ref("web:0"), "revision"),
        (lambda: ARNS.task_definition_ref("web:123456789"), "revision"),
        (
            lambda: ARNS.task_definition_ref("arn:aws:ecs:eu-west-1:123456789012:task-definition/web"),
            "FAMILY",
        ),
        (lambda: ARNS.resource(ARNS.container_instance("prod", "n")), "tags go on"),
        (lambda: ARNS.resource("arn:aws:ecs:eu-west-1:123456789012:service/web"), "CLUSTER"),
    ],
)
def test_refused_with_one_line(call: object, message: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        call()  # type: ignore[operator]
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_settings_are_checked() -> None:
    with pytest.raises(InvalidArgument):
        Arns("Bad Region", "123456789012")
    with pytest.raises(InvalidArgument):
        Arns("local", "12345")


@given(NAMES)
def test_cluster_round_trip(name: str) -> None:
    assert ARNS.cluster_name(ARNS.cluster(name)) == name
    assert ARNS.resource(ARNS.cluster(name)) == ("cluster", name, name)


@given(NAMES, NAMES)
def test_service_round_trip(cluster: str, name: str) -> None:
    assert ARNS.service_name(ARNS.service(cluster, name), "elsewhere") == (cluster, name)
    assert ARNS.resource(ARNS.service(cluster, name)) == ("service", cluster, name)


@given(NAMES, IDS)
def test_task_and_node_round_trip(cluster: str, task_id: str) -> None:
    assert ARNS.task_id(ARNS.task(cluster, task_id), "") == (cluster, task_id)
    assert ARNS.node_id(ARNS.container_instance(cluster, task_id), "") == (cluster, task_id)


@given(NAMES, st.integers(min_value=1, max_value=99_999_999))
def test_task_definition_round_trip(family: str, revision: int) -> None:
    assert ARNS.task_definition_ref(ARNS.task_definition(family, revision)) == f"{family}:{revision}"


HOSTILE = st.one_of(
    st.text(max_size=2000),
    st.text(max_size=300).map(lambda s: "arn:aws:ecs:eu-west-1:123456789012:" + s),
    st.text(max_size=300).map(lambda s: "arn:" + s),
    st.text(alphabet=":/arnwsec-0123456789", max_size=200),
)


@given(HOSTILE)
def test_hostile_values_raise_only_invalid_argument(value: str) -> None:
    for call in (
        lambda: ARNS.cluster_name(value),
        lambda: ARNS.service_name(value, ""),
        lambda: ARNS.service_name("web", value),
        lambda: ARNS.task_id(value, ""),
        lambda: ARNS.node_id(value, ""),
        lambda: ARNS.task_definition_ref(value),
        lambda: ARNS.resource(value),
    ):
        try:
            result = call()
        except InvalidArgument as error:
            assert "\n" not in str(error)
        else:
            assert result is not None
