"""What a container's settings need of its namespaces (berth.taskdef_namespaces): what the engine
would refuse at start, or silently ignore, is refused at registration naming the field and the
reason, on every client's path; what works is accepted; host mode keeps the task's resolvers."""

from __future__ import annotations

from typing import Any

import pytest

from agent.runtime.docker_spec import container_specs
from berth.errors import InvalidArgument
from berth.taskdef import NETWORK_MODES, parse_register_document, validate_task_definition
from berth.v1 import agent_pb2 as agent_pb


def web(name: str = "web", **fields: Any) -> dict[str, Any]:
    return {"name": name, "image": "web:1", "memory": 64} | fields


def doc(*containers: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"family": "app", "containerDefinitions": list(containers) or [web()]} | fields


def sysctl(name: str, value: str = "1") -> dict[str, Any]:
    return {"systemControls": [{"namespace": name, "value": value}]}


SHM: dict[str, Any] = {"linuxParameters": {"sharedMemorySize": 128}}
PORTS: dict[str, Any] = {"portMappings": [{"containerPort": 80}]}
DNS: dict[str, Any] = {"dnsServers": ["10.0.0.2"]}
SEARCH: dict[str, Any] = {"dnsSearchDomains": ["example.internal"]}
HOSTS: dict[str, Any] = {"extraHosts": [{"hostname": "db.local", "ipAddress": "10.0.0.5"}]}
INIT = web("init", essential=False)
NONE = "networkMode none has no network to"
OFF = "the container has disableNetworking: no network to"

REFUSED = [
    # The task's PID/IPC namespace is the first container's: it must live as long as the task.
    (doc(INIT, web(), pidMode="task"), "pidMode task needs containerDefinitions[0] (init) to be essential"),
    (doc(INIT, web(), ipcMode="task"), "ipcMode task needs containerDefinitions[0] (init) to be essential"),
    # No network: nothing to map, resolve or reach.
    (doc(web(**PORTS), networkMode="none"), f"[0].portMappings: {NONE} map ports on"),
    (doc(web(**DNS), networkMode="none"), f"[0].dnsServers: {NONE} resolve on"),
    (doc(web(**SEARCH), networkMode="none"), f"[0].dnsSearchDomains: {NONE} resolve on"),
    (doc(web(**HOSTS), networkMode="none"), f"[0].extraHosts: {NONE} reach hosts on"),
    (doc(web(disableNetworking=True, **PORTS)), f"[0].portMappings: {OFF} map ports on"),
    (doc(web(disableNetworking=True, **DNS)), f"[0].dnsServers: {OFF} resolve on"),
    (doc(web(disableNetworking=True, **SEARCH)), f"[0].dnsSearchDomains: {OFF} resolve on"),
    (doc(web(disableNetworking=True, **HOSTS)), f"[0].extraHosts: {OFF} reach hosts on"),
    # The host's network namespace: runc refuses net.* sysctls there.
    (doc(web(**sysctl("net.core.somaxconn")), networkMode="host"),
     "[0].systemControls: net.core.somaxconn cannot be set with networkMode host"),
    # The host's IPC namespace: runc refuses IPC sysctls; /dev/shm is the node's.
    (doc(web(**sysctl("kernel.shmmax")), ipcMode="host"),
     "[0].systemControls: kernel.shmmax cannot be set with ipcMode host"),
    (doc(web(**sysctl("kernel.msgmax")), ipcMode="host"), "kernel.msgmax cannot be set with ipcMode host"),
    (doc(web(**sysctl("kernel.sem", "250 32000 32 128")), ipcMode="host"),
     "kernel.sem cannot be set with ipcMode host"),
    (doc(web(**SHM), ipcMode="host"), "[0].linuxParameters.sharedMemorySize cannot be set with ipcMode host"),
    (doc(web(**SHM), ipcMode="none"), "[0].linuxParameters.sharedMemorySize cannot be set with ipcMode none"),
    # The task's IPC namespace is the first container's: the others would change it in its place.
    (doc(web("db"), web(**sysctl("kernel.shmmax")), ipcMode="task"),
     "[1].systemControls: kernel.shmmax cannot be set here with ipcMode task: the task's IPC namespace and "
     "its /dev/shm are containerDefinitions[0]'s (db); set it there"),
    (doc(web("db"), web(**SHM), ipcMode="task"),
     "[1].linuxParameters.sharedMemorySize cannot be set here with ipcMode task"),
]  # fmt: skip


@pytest.mark.parametrize(("document", "message"), REFUSED)
def test_what_the_namespaces_cannot_give_is_refused_naming_the_field(
    document: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        parse_register_document(document)
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(("document", "message"), REFUSED)
def test_the_control_plane_refuses_them_from_a_client_that_skipped_the_cli(
    document: dict[str, Any], message: str
) -> None:
    # A valid message first; then the conflicting fields set as a gRPC client could.
    fine = {k: v for k, v in document.items() if k not in ("networkMode", "pidMode", "ipcMode")}
    fine["containerDefinitions"] = [
        {k: v for k, v in c.items() if k != "disableNetworking"} for c in document["containerDefinitions"]
    ]
    td, _ = parse_register_document(fine)
    td.network_mode = NETWORK_MODES.get(document.get("networkMode", ""), td.network_mode)
    td.pid_mode = document.get("pidMode", "")
    td.ipc_mode = document.get("ipcMode", "")
    for c, written in zip(td.container_definitions, document["containerDefinitions"], strict=True):
        c.disable_networking = written.get("disableNetworking", False)
    with pytest.raises(InvalidArgument) as refused:
        validate_task_definition(td)
    assert message in str(refused.value)


ACCEPTED = [
    doc(web("db"), INIT, pidMode="task", ipcMode="task"),  # the first container is essential
    doc(INIT, web()),  # no task namespace: nothing rides on the first container
    doc(web("db", **SHM, **sysctl("kernel.shmmax")), web(), ipcMode="task"),  # set on the namespace's owner
    doc(web(**sysctl("kernel.shmmax")), ipcMode="none"),  # a private namespace of its own
    doc(web(**SHM, **sysctl("kernel.shmmax"))),  # Docker's default: each container its own
    doc(web(**DNS, **SEARCH, **HOSTS), networkMode="host"),  # the engine writes them in host mode
    doc(web(**sysctl("net.core.somaxconn")), networkMode="none"),  # its own (empty) network namespace
    doc(web(disableNetworking=True, **sysctl("net.core.somaxconn"))),
    doc(web(**sysctl("net.core.somaxconn"), **DNS, **HOSTS, **PORTS), ipcMode="host"),
]


@pytest.mark.parametrize("document", ACCEPTED)
def test_what_the_namespaces_give_is_accepted(document: dict[str, Any]) -> None:
    td, _ = parse_register_document(document)
    validate_task_definition(td)


def _kwargs(document: dict[str, Any]) -> dict[str, Any]:
    td, _ = parse_register_document(document)
    assignment = agent_pb.TaskAssignment(task_id="t1", cluster="default", task_definition=td)
    (spec,) = container_specs(assignment, "node-1", ("10.0.0.53",))
    return spec.create_kwargs()


def test_host_mode_keeps_the_tasks_own_resolvers_but_not_the_nodes_berth_dns() -> None:
    kwargs = _kwargs(doc(web(**DNS, **SEARCH, **HOSTS), networkMode="host"))
    assert kwargs["network_mode"] == "host"
    assert kwargs["dns"] == ["10.0.0.2"]
    assert kwargs["dns_search"] == ["example.internal"]
    assert kwargs["extra_hosts"] == ["db.local:10.0.0.5"]
    assert "dns" not in _kwargs(doc(networkMode="host"))
