"""interactive, pseudoTerminal, disableNetworking, links, pidMode and ipcMode: parsed, checked on
every registration (a gRPC client may skip the CLI), refused by policy where they reach the host,
shown by describe, and turned into the Docker create arguments we mean (tables)."""

from __future__ import annotations

from typing import Any

import pytest

from agent.runtime.docker_spec import container_specs
from berth.errors import InvalidArgument
from berth.taskdef import parse_register_document, to_ecs_document, validate_task_definition
from berth.taskdef_process import privilege_refusal
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb
from controlplane.validation.privileges import PrivilegePolicy


def web(name: str = "web", **fields: Any) -> dict[str, Any]:
    return {"name": name, "image": "web:1", "memory": 64} | fields


def doc(*containers: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"family": "app", "containerDefinitions": list(containers) or [web()]} | fields


STORED = [
    (doc(web(interactive=True)), lambda td: td.container_definitions[0].interactive),
    (doc(web(pseudoTerminal=True)), lambda td: td.container_definitions[0].pseudo_terminal),
    (doc(web(disableNetworking=True)), lambda td: td.container_definitions[0].disable_networking),
    (doc(web("db"), web(links=["db"])), lambda td: td.container_definitions[1].links == ["db"]),
    (doc(web("db"), web(links=["db:data"])), lambda td: td.container_definitions[1].links == ["db:data"]),
    (doc(pidMode="task"), lambda td: td.pid_mode == "task"),
    (doc(pidMode="host"), lambda td: td.pid_mode == "host"),
    (doc(ipcMode="none"), lambda td: td.ipc_mode == "none"),
    (doc(ipcMode="task"), lambda td: td.ipc_mode == "task"),
]  # fmt: skip


@pytest.mark.parametrize(("document", "stored"), STORED)
def test_the_options_are_stored_and_round_trip_through_describe(
    document: dict[str, Any], stored: Any
) -> None:
    td, notes = parse_register_document(document)
    assert stored(td) and notes == []
    shown = to_ecs_document(td)
    assert parse_register_document(shown)[0] == td
    for field in ("pidMode", "ipcMode"):
        assert shown.get(field) == document.get(field)
    for described, written in zip(
        shown["containerDefinitions"], document["containerDefinitions"], strict=True
    ):
        for field in ("interactive", "pseudoTerminal", "disableNetworking", "links"):
            assert described.get(field) == written.get(field)


REFUSED = [
    (doc(web(interactive="perhaps")), "containerDefinitions[0].interactive"),
    (doc(web(interactive="yes")), "containerDefinitions[0].interactive: Input should be a valid boolean"),
    (doc(web(pseudoTerminal="on")), "[0].pseudoTerminal: Input should be a valid boolean"),
    (doc(web(disableNetworking="true")), "[0].disableNetworking: Input should be a valid boolean"),
    (doc(web(disableNetworking=1)), "[0].disableNetworking: Input should be a valid boolean"),
    (doc(web("db"), web(links=["db:" + "x" * 600])), "containerDefinitions[1].links[0]"),
    (doc(pidMode="container"), "taskDefinition.pidMode"),
    (doc(ipcMode="shareable"), "taskDefinition.ipcMode"),
    (doc(web(links=["db"])), "containerDefinitions[0].links: 'db' is not another container of this task"),
    (doc(web(links=["web"])), "containerDefinitions[0].links: 'web' is not another container"),
    (doc(web(links=["db"]), web("db")), "links: db is listed after web: Berth starts containers"),
    (doc(web("db"), web(links=["db:a b"])), "containerDefinitions[1].links: 'db:a b' is invalid"),
    (doc(web("db"), web(links=["db:x", "db:x"])), "links: the alias x is used twice"),
    (doc(web("db"), web(links=["db"]), networkMode="host"), "[1].links: links need the bridge network"),
    (doc(web("db", disableNetworking=True), web(links=["db"])), "[1].links: db has disableNetworking"),
    (doc(web("db"), web(links=["db"], disableNetworking=True)), "[1].links: a container with disableNetw"),
    (
        doc(web(disableNetworking=True, portMappings=[{"containerPort": 80}])),
        "containerDefinitions[0].portMappings: the container has disableNetworking",
    ),
    (doc(web(disableNetworking=True, dnsServers=["10.0.0.2"])), "[0].dnsServers: the container has"),
]  # fmt: skip


@pytest.mark.parametrize(("document", "message"), REFUSED)
def test_bad_options_are_refused_naming_the_field(document: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        parse_register_document(document)
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)


def _pid(td: pb.TaskDefinition) -> None:
    td.pid_mode = "container:x"


def _ipc(td: pb.TaskDefinition) -> None:
    td.ipc_mode = "private"


def _link(td: pb.TaskDefinition) -> None:
    td.container_definitions[1].links.append("nope\n")


def _networkless_ports(td: pb.TaskDefinition) -> None:
    td.container_definitions[0].disable_networking = True
    td.container_definitions[0].port_mappings.add(container_port=80)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_pid, "pidMode 'container:x' is not one of host, task"),
        (_ipc, "ipcMode 'private' is not one of host, task, none"),
        (_link, "containerDefinitions[1].links: 'nope\\n' is invalid"),
        (_networkless_ports, "containerDefinitions[0].portMappings: the container has disableNetworking"),
    ],
)
def test_the_control_plane_checks_messages_that_skipped_the_cli(change: Any, message: str) -> None:
    td, _ = parse_register_document(doc(web("db"), web()))
    change(td)
    with pytest.raises(InvalidArgument) as refused:
        validate_task_definition(td)
    assert message in str(refused.value)


@pytest.mark.parametrize(("field", "mode"), [("pid_mode", "host"), ("ipc_mode", "host")])
def test_the_hosts_namespaces_need_allow_privileged(field: str, mode: str) -> None:
    td = pb.TaskDefinition(family="app")
    setattr(td, field, mode)
    reason = privilege_refusal(td, allow_privileged=False, allow_devices=False)
    assert reason is not None and "--allow-privileged" in reason
    with pytest.raises(InvalidArgument, match="--allow-privileged"):
        PrivilegePolicy().check(td)
    assert privilege_refusal(td, allow_privileged=True, allow_devices=False) is None
    PrivilegePolicy(allow_privileged=True).check(td)


@pytest.mark.parametrize("td", [pb.TaskDefinition(pid_mode="task"), pb.TaskDefinition(ipc_mode="none")])
def test_task_namespaces_need_no_policy(td: pb.TaskDefinition) -> None:
    assert privilege_refusal(td, allow_privileged=False, allow_devices=False) is None


def _specs(document: dict[str, Any], dns: tuple[str, ...] = ("10.0.0.53",)) -> list[dict[str, Any]]:
    td, _ = parse_register_document(document)
    assignment = agent_pb.TaskAssignment(task_id="t1", cluster="default", service="", task_definition=td)
    return [spec.create_kwargs() for spec in container_specs(assignment, "node-1", dns)]


def test_interactive_and_pseudo_terminal_are_stdin_open_and_tty() -> None:
    (kwargs,) = _specs(doc(web(interactive=True, pseudoTerminal=True)))
    assert (kwargs["stdin_open"], kwargs["tty"]) == (True, True)
    (plain,) = _specs(doc())
    assert not {"stdin_open", "tty", "links", "pid_mode", "ipc_mode"} & set(plain)


def test_disable_networking_runs_that_container_alone_without_a_network() -> None:
    db, app = _specs(doc(web("db", disableNetworking=True), web(portMappings=[{"containerPort": 80}])))
    assert db["network_mode"] == "none" and db["ports"] == {} and "dns" not in db
    assert "network_mode" not in app and app["ports"] == {"80/tcp": None} and app["dns"] == ["10.0.0.53"]


def test_links_name_the_linked_containers_docker_name_and_alias() -> None:
    _db, _cache, app = _specs(doc(web("db"), web("cache"), web(links=["db", "cache:redis"])))
    assert app["links"] == {"berth-t1-db": "db", "berth-t1-cache": "redis"}


@pytest.mark.parametrize(
    ("fields", "first", "others"),
    [
        ({"pidMode": "host"}, {"pid_mode": "host"}, {"pid_mode": "host"}),
        ({"pidMode": "task"}, {}, {"pid_mode": "container:berth-t1-db"}),
        ({"ipcMode": "host"}, {"ipc_mode": "host"}, {"ipc_mode": "host"}),
        ({"ipcMode": "none"}, {"ipc_mode": "none"}, {"ipc_mode": "none"}),
        ({"ipcMode": "task"}, {"ipc_mode": "shareable"}, {"ipc_mode": "container:berth-t1-db"}),
    ],
)
def test_task_namespaces_are_the_first_containers(
    fields: dict[str, Any], first: dict[str, str], others: dict[str, str]
) -> None:
    db, app, side = _specs(doc(web("db"), web(), web("side"), **fields))
    for kwargs, expected in ((db, first), (app, others), (side, others)):
        assert {k: kwargs[k] for k in ("pid_mode", "ipc_mode") if k in kwargs} == expected
