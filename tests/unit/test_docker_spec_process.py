"""ECS's process and security settings become the Docker create arguments we mean (a table)."""

from __future__ import annotations

from typing import Any

import pytest

from agent.runtime.docker_spec import container_specs
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb

BERTH_LABELS = {
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
    "labels": BERTH_LABELS,
    "environment": {},
    "ports": {},
    "cpu_shares": 2,
    "detach": True,
    "security_opt": ["no-new-privileges:true"],
    "pids_limit": 4096,
}


def _kwargs(definition: pb.ContainerDefinition, dns: tuple[str, ...] = ()) -> dict[str, Any]:
    assignment = agent_pb.TaskAssignment(
        task_id="t1",
        cluster="default",
        service="web",
        task_definition=pb.TaskDefinition(family="web", revision=3, container_definitions=[definition]),
    )
    (spec,) = container_specs(assignment, "node-1", dns)
    return spec.create_kwargs()


def web(**fields: Any) -> pb.ContainerDefinition:
    return pb.ContainerDefinition(name="web", image="web:1", essential=True, **fields)


def linux(**fields: Any) -> pb.ContainerDefinition:
    return web(linux_parameters=pb.LinuxParameters(**fields))


CASES: list[tuple[str, pb.ContainerDefinition, tuple[str, ...], dict[str, Any]]] = [
    ("user", web(user="1000:1000"), (), {"user": "1000:1000"}),
    ("workingDirectory", web(working_directory="/srv"), (), {"working_dir": "/srv"}),
    ("hostname", web(hostname="app-1"), (), {"hostname": "app-1"}),
    ("readonlyRootFilesystem", web(readonly_root_filesystem=True), (), {"read_only": True}),
    (
        "ulimits, -1 unlimited",
        web(
            ulimits=[
                pb.Ulimit(name="nofile", soft_limit=1024, hard_limit=4096),
                pb.Ulimit(name="memlock", soft_limit=-1, hard_limit=-1),
            ]
        ),
        (),
        {
            "ulimits": [
                {"name": "nofile", "soft": 1024, "hard": 4096},
                {"name": "memlock", "soft": -1, "hard": -1},
            ]
        },
    ),
    (
        "dockerLabels join Berth's own",
        web(docker_labels={"com.example.team": "payments"}),
        (),
        {"labels": {"com.example.team": "payments", **BERTH_LABELS}},
    ),
    (
        "a berth.* dockerLabel (refused at registration) never overrides Berth's own",
        web(docker_labels={"berth.managed": "false", "berth.task-id": "other"}),
        (),
        {},
    ),
    (
        "extraHosts, IPv4 and IPv6",
        web(
            extra_hosts=[
                pb.HostEntry(hostname="db.local", ip_address="10.0.0.5"),
                pb.HostEntry(hostname="v6.local", ip_address="2001:db8::1"),
            ]
        ),
        (),
        {"extra_hosts": ["db.local:10.0.0.5", "v6.local:2001:db8::1"]},
    ),
    (
        "dnsServers replace the node's Berth DNS",
        web(dns_servers=["1.1.1.1"]),
        ("10.0.0.5",),
        {"dns": ["1.1.1.1"]},
    ),
    ("dnsSearchDomains", web(dns_search_domains=["corp.example"]), (), {"dns_search": ["corp.example"]}),
    (
        "systemControls",
        web(system_controls=[pb.SystemControl(namespace="net.core.somaxconn", value="1024")]),
        (),
        {"sysctls": {"net.core.somaxconn": "1024"}},
    ),
    (
        "capabilities add and drop",
        linux(capabilities_add=["NET_ADMIN"], capabilities_drop=["ALL"]),
        (),
        {"cap_add": ["NET_ADMIN"], "cap_drop": ["ALL"]},
    ),
    ("initProcessEnabled", linux(init_process_enabled=True), (), {"init": True}),
    ("sharedMemorySize in MiB", linux(shared_memory_size=128), (), {"shm_size": "128m"}),
    (
        "tmpfs: size in MiB, then the mount options",
        linux(tmpfs=[pb.TmpfsMount(container_path="/tmp", size=64, mount_options=["noexec", "mode=1777"])]),
        (),
        {"tmpfs": {"/tmp": "size=64m,noexec,mode=1777"}},
    ),
    (
        "devices: no permissions means rwm; containerPath defaults to hostPath",
        linux(
            devices=[
                pb.DeviceMapping(host_path="/dev/fuse"),
                pb.DeviceMapping(host_path="/dev/snd", container_path="/dev/audio", permissions=["read"]),
            ]
        ),
        (),
        {"devices": ["/dev/fuse:/dev/fuse:rwm", "/dev/snd:/dev/audio:r"]},
    ),
    ("privileged", web(privileged=True), (), {"privileged": True}),
    (
        "dockerSecurityOptions add to Berth's no-new-privileges",
        web(docker_security_options=["apparmor:docker-default"]),
        (),
        {"security_opt": ["no-new-privileges:true", "apparmor:docker-default"]},
    ),
    ("an empty linuxParameters changes nothing", web(linux_parameters=pb.LinuxParameters()), (), {}),
]


@pytest.mark.parametrize(("definition", "dns", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_process_settings_become_create_kwargs(
    definition: pb.ContainerDefinition, dns: tuple[str, ...], expected: dict[str, Any]
) -> None:
    base = {**BASE, "dns": list(dns)} if dns else BASE
    assert _kwargs(definition, dns) == {**base, **expected}
