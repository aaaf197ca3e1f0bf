"""What a container's settings need of its namespaces, on real Docker (berth.taskdef_namespaces):
in host network mode the task's own dnsServers, dnsSearchDomains and extraHosts reach the
container; with ipcMode task, /dev/shm's size and IPC sysctls set on the first container reach
every container of the task; what the engine would refuse or ignore is refused at registration,
naming the reason, and nothing is written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import docker
import pytest

from berth.testing.cli import Berth
from berth.testing.daemons import AgentProcess, ControlPlaneProcess
from berth.testing.waiting import wait_until

SLEEP = "trap 'exit 0' TERM; sleep 3600 & wait"


def _container(name: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "image": "berth-busybox:2",
        "memory": 32,
        "entryPoint": ["sh", "-c"],
        "command": [SLEEP],
        "stopTimeout": 1,
    } | fields


def _run(berth: Berth, tmp_path: Path, document: dict[str, Any]) -> None:
    family = document["family"]
    path = tmp_path / f"{family}.json"
    path.write_text(json.dumps(document))
    berth.ok("cluster", "create", family)
    berth.ok("taskdef", "register", "--cli-input-json", f"file://{path}")
    berth.ok(
        "service", "create", "--cluster", family, "--name", "app", "--task-definition", family,
        "--desired-count", "1",
    )  # fmt: skip
    wait_until(lambda: berth.running_exactly(family, 1, "app"), 60, f"{family}: 1 RUNNING task")


def _exec(agent: AgentProcess, cluster: str, container: str, command: str) -> str:
    (found,) = [
        c
        for c in agent.containers()
        if c.labels.get("berth.cluster") == cluster and c.labels.get("berth.container-name") == container
    ]
    client = docker.DockerClient(base_url=agent.docker_url)
    try:
        code, output = client.containers.get(found.id).exec_run(["sh", "-c", command])
    finally:
        client.close()
    assert code == 0, output
    return str(output.decode())


def test_host_mode_gives_the_container_the_tasks_own_resolvers_and_hosts(
    berth: Berth, agent: AgentProcess, tmp_path: Path
) -> None:
    # Documentation addresses (TEST-NET-1): written into files, never sent a packet.
    document = {
        "family": "hostdns",
        "networkMode": "host",
        "containerDefinitions": [
            _container(
                "app",
                dnsServers=["192.0.2.53"],
                dnsSearchDomains=["corp.example"],
                extraHosts=[{"hostname": "db.example", "ipAddress": "192.0.2.10"}],
            )
        ],
    }
    _run(berth, tmp_path, document)
    try:
        resolv = _exec(agent, "hostdns", "app", "cat /etc/resolv.conf").splitlines()
        assert "nameserver 192.0.2.53" in resolv
        assert "search corp.example" in resolv
        hosts = [line.split() for line in _exec(agent, "hostdns", "app", "cat /etc/hosts").splitlines()]
        assert ["192.0.2.10", "db.example"] in hosts
    finally:
        berth.ok("service", "delete", "app", "--cluster", "hostdns")


def test_ipc_settings_on_the_first_container_reach_every_container_of_the_task(
    berth: Berth, agent: AgentProcess, tmp_path: Path
) -> None:
    document = {
        "family": "ipcshare",
        "ipcMode": "task",
        "containerDefinitions": [
            _container(
                "holder",
                linuxParameters={"sharedMemorySize": 96},
                systemControls=[{"namespace": "kernel.shmmni", "value": "2048"}],
            ),
            _container("app", essential=False),
        ],
    }
    _run(berth, tmp_path, document)
    try:
        for name in ("holder", "app"):
            shm = _exec(agent, "ipcshare", name, "df -m /dev/shm").splitlines()[-1].split()
            assert shm[1] == "96", (name, shm)
            assert _exec(agent, "ipcshare", name, "cat /proc/sys/kernel/shmmni").strip() == "2048"
    finally:
        berth.ok("service", "delete", "app", "--cluster", "ipcshare")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            {
                "pidMode": "task",
                "containerDefinitions": [_container("init", essential=False), _container("app")],
            },
            "pidMode task needs containerDefinitions[0] (init) to be essential: the task's namespace "
            "is the first container's",
        ),
        (
            {
                "ipcMode": "task",
                "containerDefinitions": [
                    _container("holder"),
                    _container("app", linuxParameters={"sharedMemorySize": 96}),
                ],
            },
            "containerDefinitions[1].linuxParameters.sharedMemorySize cannot be set here with ipcMode "
            "task: the task's IPC namespace and its /dev/shm are containerDefinitions[0]'s (holder)",
        ),
        (
            {
                "networkMode": "host",
                "containerDefinitions": [
                    _container("app", systemControls=[{"namespace": "net.core.somaxconn", "value": "512"}])
                ],
            },
            "containerDefinitions[0].systemControls: net.core.somaxconn cannot be set with networkMode host",
        ),
        (
            {"networkMode": "none", "containerDefinitions": [_container("app", dnsServers=["192.0.2.53"])]},
            "containerDefinitions[0].dnsServers: networkMode none has no network to resolve on",
        ),
    ],
    ids=["pid-task-first-not-essential", "ipc-task-shm-on-joiner", "net-sysctl-host", "dns-none"],
)
def test_what_the_namespaces_cannot_give_is_refused_and_nothing_is_written(
    controlplane: ControlPlaneProcess, tmp_path: Path, document: dict[str, Any], message: str
) -> None:
    berth = Berth.of(controlplane)
    before = berth.ok("taskdef", "list", "--family", "refused", "-o", "json").json()
    path = tmp_path / "refused.json"
    path.write_text(json.dumps({"family": "refused"} | document))
    berth("taskdef", "register", "--cli-input-json", f"file://{path}").assert_refused(message)
    assert berth.ok("taskdef", "list", "--family", "refused", "-o", "json").json() == before
