"""ECS's plain Docker options on real Docker: links (a linked container reached by its alias),
pidMode and ipcMode task (one namespace for the task), interactive and pseudoTerminal (a TTY on
stdin), disableNetworking (that container alone has no network); pidMode host refused without
--allow-privileged, nothing written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import docker

from berth.testing.cli import Berth
from berth.testing.daemons import AgentProcess, ControlPlaneProcess
from berth.testing.waiting import wait_until

SLEEP = "trap 'exit 0' TERM; sleep 3600 & wait"


def _container(name: str, command: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "image": "berth-busybox:2",
        "memory": 32,
        "entryPoint": ["sh", "-c"],
        "command": [command],
        "stopTimeout": 1,
    } | fields


DOCUMENT: dict[str, Any] = {
    "family": "opts",
    "networkMode": "bridge",
    "pidMode": "task",
    "ipcMode": "task",
    "containerDefinitions": [
        _container(
            "db",
            "mkdir -p /www && echo linked-ok > /www/index.html && exec httpd -f -p 8080 -h /www",
        ),
        _container(
            "app",
            f"if [ -t 0 ]; then echo terminal; else echo none; fi > /stdin-check; {SLEEP}",
            links=["db:database"],
            interactive=True,
            pseudoTerminal=True,
        ),
        _container("offline", SLEEP, essential=False, disableNetworking=True),
    ],
}


def test_docker_options_reach_the_engine_and_the_containers(
    berth: Berth, agent: AgentProcess, tmp_path: Path
) -> None:
    path = tmp_path / "opts.json"
    path.write_text(json.dumps(DOCUMENT))
    berth.ok("cluster", "create", "opts")
    berth.ok("taskdef", "register", "--cli-input-json", f"file://{path}")
    berth.ok(
        "service", "create", "--cluster", "opts", "--name", "app", "--task-definition", "opts",
        "--desired-count", "1",
    )  # fmt: skip
    try:
        wait_until(lambda: berth.running_exactly("opts", 1, "app"), 60, "1 RUNNING task")
        containers = {
            c.labels["berth.container-name"]: c.id
            for c in agent.containers()
            if c.labels.get("berth.cluster") == "opts"
        }
        assert set(containers) == {"db", "app", "offline"}
        client = docker.DockerClient(base_url=agent.docker_url)
        try:
            inspected = {name: client.api.inspect_container(cid) for name, cid in containers.items()}
            db, app, offline = inspected["db"], inspected["app"], inspected["offline"]
            assert (app["Config"]["Tty"], app["Config"]["OpenStdin"]) == (True, True)
            assert (db["Config"]["Tty"], db["Config"]["OpenStdin"]) == (False, False)
            assert offline["HostConfig"]["NetworkMode"] == "none"
            assert db["HostConfig"]["IpcMode"] == "shareable"
            for other in (app, offline):
                assert other["HostConfig"]["PidMode"] == f"container:{containers['db']}"
                assert other["HostConfig"]["IpcMode"] == f"container:{containers['db']}"

            def run(name: str, command: str) -> tuple[int, str]:
                code, output = client.containers.get(containers[name]).exec_run(["sh", "-c", command])
                return code, output.decode().strip()

            # The link: Docker writes the alias into app's /etc/hosts with db's address on the
            # bridge, and db answers there. (The static busybox cannot resolve names.)
            code, hosts = run("app", "cat /etc/hosts")
            (line,) = [line for line in hosts.splitlines() if "database" in line.split()[1:]]
            address = line.split()[0]
            assert address == db["NetworkSettings"]["IPAddress"]
            request = f'printf "GET / HTTP/1.0\\r\\n\\r\\n" | nc -w 5 {address} 8080'
            code, response = run("app", request)
            assert code == 0 and response.endswith("linked-ok"), response
            # One PID namespace: app sees db's web server.
            code, processes = run("app", "ps")
            assert code == 0 and "httpd -f -p 8080" in processes, processes
            # The container's own process found a terminal on its stdin.
            assert run("app", "cat /stdin-check") == (0, "terminal")
            # offline has a loopback interface only.
            code, interfaces = run("offline", "ls /sys/class/net")
            assert (code, interfaces.split()) == (0, ["lo"])
        finally:
            client.close()
    finally:
        berth.ok("service", "update", "app", "--cluster", "opts", "--desired-count", "0")
        wait_until(lambda: berth.running_exactly("opts", 0, "app") is not None, 60, "no RUNNING task")


def test_the_hosts_pid_namespace_without_the_policy_is_refused_and_nothing_is_written(
    controlplane: ControlPlaneProcess, tmp_path: Path
) -> None:
    berth = Berth.of(controlplane)
    before = berth.ok("taskdef", "list", "--family", "hostpid", "-o", "json").json()
    path = tmp_path / "hostpid.json"
    path.write_text(
        json.dumps(
            {"family": "hostpid", "pidMode": "host", "containerDefinitions": [_container("app", SLEEP)]}
        )
    )
    berth("taskdef", "register", "--cli-input-json", f"file://{path}").assert_refused(
        "pidMode host is refused: the host's namespaces reach every process of the node; "
        "the control plane runs without --allow-privileged"
    )
    assert berth.ok("taskdef", "list", "--family", "hostpid", "-o", "json").json() == before
