"""Names, task-definition references, task definitions and CLI port specs at the boundary.

Per name kind, the values that used to pass (a trailing newline with
`re.match` + `$`, a trailing space, look-alike letters, over-long names) are
refused; and Hypothesis properties say what anything accepted looks like, and
that anything else is an `InvalidArgument` with one line, never another exception.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st

from berth.cli.services import _service_port
from berth.errors import InvalidArgument
from berth.names import MAX_REVISION, check_dns_label, check_family, parse_task_definition_ref
from berth.taskdef import (
    MAX_CONTAINERS,
    MAX_CPU_UNITS,
    MAX_MEMORY_MIB,
    parse_register_document,
    validate_task_definition,
)
from berth.v1 import resources_pb2 as pb

DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
FAMILY = re.compile(r"[A-Za-z0-9_-]{1,255}")
CONTAINER = FAMILY


def _container_name(name: str) -> str:
    td = pb.TaskDefinition(
        family="web",
        container_definitions=[pb.ContainerDefinition(name=name, image="busybox", memory=64, essential=True)],
    )
    validate_task_definition(td)
    return name


CHECKS: dict[str, tuple[Callable[[str], str], re.Pattern[str]]] = {
    "service": (lambda n: check_dns_label("service", n), DNS_LABEL),
    "cluster": (lambda n: check_dns_label("cluster", n), DNS_LABEL),
    "node": (lambda n: check_dns_label("node", n), DNS_LABEL),
    "family": (check_family, FAMILY),
    "container": (_container_name, CONTAINER),
}
BAD_NAMES = [
    "web\n",
    "web ",
    " web",
    "web\t",
    "w\u0435b",
    "\uff57\uff45\uff42",
    "web\x00",
    "web\u200b",
    "",
    "a" * 256,
]


@pytest.mark.parametrize("kind", sorted(CHECKS))
@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_each_name_kind_refuses_newlines_spaces_look_alikes_and_long_names(kind: str, name: str) -> None:
    check, _ = CHECKS[kind]
    with pytest.raises(InvalidArgument) as refused:
        check(name)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("kind", ["service", "cluster", "node"])
def test_dns_names_longer_than_63_are_refused(kind: str) -> None:
    check, _ = CHECKS[kind]
    assert check("a" * 63) == "a" * 63
    with pytest.raises(InvalidArgument):
        check("a" * 64)


_NAME_TEXT = st.one_of(
    st.text(max_size=300),
    st.from_regex(DNS_LABEL, fullmatch=True).flatmap(
        lambda n: st.sampled_from([n, n + "\n", n + " ", "-" + n, n.upper(), n + "é"])
    ),
)


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(sorted(CHECKS)), _NAME_TEXT)
def test_any_accepted_name_fullmatches_its_pattern_and_has_no_space_or_control(kind: str, name: str) -> None:
    check, pattern = CHECKS[kind]
    try:
        accepted = check(name)
    except InvalidArgument as error:
        assert "\n" not in str(error)
        return
    assert pattern.fullmatch(accepted)
    assert accepted.isprintable() and not any(c.isspace() for c in accepted)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=300), st.from_regex(r"[a-z]{1,8}:[0-9²³¹٣]{0,12}", fullmatch=True)))
def test_task_definition_references_parse_or_are_refused_in_one_line(ref: str) -> None:
    try:
        family, revision = parse_task_definition_ref(ref)
    except InvalidArgument as error:
        assert "\n" not in str(error) and len(str(error)) < 300
        return
    assert FAMILY.fullmatch(family)
    assert revision is None or 1 <= revision <= MAX_REVISION
    # Leading zeros are allowed ("web:01" is revision 1); nothing else is.
    assert ref == family if revision is None else ref.partition(":")[0] == family


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(st.text(max_size=30), st.from_regex(r"[0-9²]{1,7}(:([0-9²]{1,7}|[a-z_-]{1,8}))?(/udp|/tcp)?"))
)
def test_cli_port_specs_parse_into_valid_ports_or_one_line(text: str) -> None:
    try:
        port = _service_port(text)
    except typer.Exit as exit_:
        assert exit_.exit_code == 1
        return
    assert 1 <= port.port <= 65535
    assert (1 <= port.container_port <= 65535) != bool(port.name)


_SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(["256", "²", "٣", " 64 ", "tcp", "udp", "web", "busybox"]),
)
_JSON = st.recursive(
    _SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
_NUMBER = st.one_of(
    st.integers(min_value=-1, max_value=2**33),
    st.sampled_from([0, 6, MAX_CPU_UNITS, MAX_CPU_UNITS + 1, MAX_MEMORY_MIB, 2**32 - 1, 2**32]),
    st.sampled_from(["256", "²", "1e3"]),
)
_CONTAINER = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["web", "web\n", "side-car", "a" * 256]),
        "image": st.sampled_from(["busybox", "b b"]),
    },
    optional={
        "cpu": _NUMBER,
        "memory": _NUMBER,
        "memoryReservation": _NUMBER,
        "stopTimeout": _NUMBER,
        "essential": st.booleans(),
        "portMappings": st.lists(
            st.fixed_dictionaries(
                {"containerPort": _NUMBER},
                optional={"hostPort": _NUMBER, "protocol": st.sampled_from(["tcp", "udp", "sctp"])},
            ),
            max_size=3,
        ),
        "environment": st.lists(
            st.fixed_dictionaries({"name": st.text(max_size=5), "value": st.text(max_size=5)}), max_size=3
        ),
        "command": st.lists(st.text(max_size=5), max_size=3),
        "extra": _JSON,
    },
)
_DOCUMENT = st.fixed_dictionaries(
    {
        "family": st.sampled_from(["web", "web\n", "w" * 256]),
        "containerDefinitions": st.lists(_CONTAINER, max_size=12),
    },
    optional={"cpu": _NUMBER, "memory": _NUMBER, "networkMode": st.sampled_from(["bridge", "host"])},
)


@settings(max_examples=800, deadline=None)
@given(st.one_of(_JSON, _DOCUMENT, st.lists(_CONTAINER, max_size=3)))
def test_any_json_is_a_valid_bounded_task_definition_or_one_invalid_argument(data: Any) -> None:
    try:
        td, _ = parse_register_document(data)
    except InvalidArgument as error:
        assert "\n" not in str(error) and len(str(error)) < 400
        return
    validate_task_definition(td)  # what the control plane runs again on registration
    assert 1 <= len(td.container_definitions) <= MAX_CONTAINERS
    assert td.cpu <= MAX_CPU_UNITS and td.memory <= MAX_MEMORY_MIB
    assert sum(c.cpu for c in td.container_definitions) <= MAX_CPU_UNITS
    assert sum(c.memory_reservation or c.memory for c in td.container_definitions) <= MAX_MEMORY_MIB
    for c in td.container_definitions:
        assert CONTAINER.fullmatch(c.name)
        assert all(1 <= p.container_port <= 65535 and p.host_port <= 65535 for p in c.port_mappings)
