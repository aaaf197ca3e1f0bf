"""A task assignment becomes the Docker create arguments we mean (pure, a table of cases)."""

from __future__ import annotations

from typing import Any

import pytest

from agent.runtime.docker_spec import container_specs
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb

LABELS = {
    "berth.managed": "true",
    "berth.task-id": "t1",
    "berth.container-name": "web",
    "berth.essential": "true",
    "berth.stop-timeout": "30",
    "berth.cluster": "default",
    "berth.service": "web",
    "berth.task-definition": "web:3",
    "berth.node-id": "node-1",
}

BASE: dict[str, Any] = {
    "name": "berth-t1-web",
    "labels": LABELS,
    "environment": {},
    "ports": {},
    "cpu_shares": 2,
    "detach": True,
    # Every container: no privilege escalation, and a bounded number of processes.
    "security_opt": ["no-new-privileges:true"],
    "pids_limit": 4096,
}


def assignment(*definitions: pb.ContainerDefinition, service: str = "web") -> agent_pb.TaskAssignment:
    return agent_pb.TaskAssignment(
        task_id="t1",
        cluster="default",
        service=service,
        task_definition=pb.TaskDefinition(family="web", revision=3, container_definitions=definitions),
    )


def web(**fields: Any) -> pb.ContainerDefinition:
    return pb.ContainerDefinition(name="web", image="web:1", essential=True, **fields)


CASES: list[tuple[str, pb.ContainerDefinition, tuple[str, ...], dict[str, Any]]] = [
    ("every container gets no-new-privileges and the default pids limit", web(), (), {}),
    ("the least a container needs; cpu 0 gets Docker's floor", web(), (), {}),
    ("cpu units are CPU shares", web(cpu=512), (), {"cpu_shares": 512}),
    ("cpu below the floor is raised to it", web(cpu=1), (), {"cpu_shares": 2}),
    (
        "memory limits in MiB",
        web(memory=256, memory_reservation=128),
        (),
        {"mem_limit": "256m", "mem_reservation": "128m"},
    ),
    (
        "command and entry point are lists, kept in order",
        web(command=["httpd", "-f"], entry_point=["/bin/sh", "-c"]),
        (),
        {"command": ["httpd", "-f"], "entrypoint": ["/bin/sh", "-c"]},
    ),
    (
        "environment",
        web(environment=[pb.KeyValuePair(name="A", value="1"), pb.KeyValuePair(name="B", value="")]),
        (),
        {"environment": {"A": "1", "B": ""}},
    ),
    (
        "ports: a fixed host port, one Docker picks, and UDP",
        web(
            port_mappings=[
                pb.PortMapping(container_port=80, host_port=8080),
                pb.PortMapping(container_port=8443),
                pb.PortMapping(container_port=53, protocol=pb.UDP),
            ]
        ),
        (),
        {"ports": {"80/tcp": 8080, "8443/tcp": None, "53/udp": None}},
    ),
    ("the host's Berth DNS", web(), ("10.0.0.5",), {"dns": ["10.0.0.5"]}),
    (
        "a stop timeout is recorded in a label (0 means the default, 30)",
        web(stop_timeout=5),
        (),
        {"labels": {**LABELS, "berth.stop-timeout": "5"}},
    ),
    (
        "a non-essential container says so in its label",
        pb.ContainerDefinition(name="web", image="web:1", essential=False),
        (),
        {"labels": {**LABELS, "berth.essential": "false"}},
    ),
]


@pytest.mark.parametrize(("definition", "dns", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_create_kwargs(
    definition: pb.ContainerDefinition, dns: tuple[str, ...], expected: dict[str, Any]
) -> None:
    (spec,) = container_specs(assignment(definition), "node-1", dns)
    assert spec.image == "web:1"
    assert spec.create_kwargs() == {**BASE, **expected}


@pytest.mark.parametrize(
    ("pids_limit", "expected"),
    [(4096, 4096), (100, 100), (1, 1), (0, None), (-1, None)],
    ids=["default", "lower", "one", "0 is the engine's default", "-1 is the engine's default"],
)
def test_pids_limit_from_the_agent_setting(pids_limit: int, expected: int | None) -> None:
    (spec,) = container_specs(assignment(web()), "node-1", (), pids_limit)
    kwargs = spec.create_kwargs()
    assert kwargs.get("pids_limit") == expected
    assert kwargs["security_opt"] == ["no-new-privileges:true"]


def test_every_container_of_a_task_gets_its_own_name_and_labels_in_definition_order() -> None:
    specs = container_specs(
        assignment(web(), pb.ContainerDefinition(name="log", image="log:2", stop_timeout=10), service=""),
        "node-1",
    )
    assert [(s.name, s.image, s.definition_name, s.essential, s.stop_timeout) for s in specs] == [
        ("berth-t1-web", "web:1", "web", True, 30),
        ("berth-t1-log", "log:2", "log", False, 10),
    ]
    assert all(s.create_kwargs()["security_opt"] == ["no-new-privileges:true"] for s in specs)
    assert all(s.create_kwargs()["pids_limit"] == 4096 for s in specs)
    log = specs[1].create_kwargs()["labels"]
    assert (log["berth.container-name"], log["berth.service"], log["berth.task-id"]) == ("log", "", "t1")


def test_create_kwargs_are_a_copy_the_caller_may_change() -> None:
    (spec,) = container_specs(assignment(web()), "node-1", ("10.0.0.5",))
    spec.create_kwargs()["labels"]["berth.node-id"] = "elsewhere"
    spec.create_kwargs()["dns"].append("8.8.8.8")
    assert spec.create_kwargs()["labels"]["berth.node-id"] == "node-1"
    assert spec.create_kwargs()["dns"] == ["10.0.0.5"]
