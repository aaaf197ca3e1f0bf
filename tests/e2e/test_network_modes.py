"""networkMode on real Docker: host (the host's own port, reported as the task's binding)
and none (no network at all)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import docker

from berth.testing.cli import Berth, bindings
from berth.testing.daemons import AgentProcess
from berth.testing.waiting import wait_until

PORT = 39417  # an unusual port on this machine's loopback, for host mode


def _document(family: str, mode: str, ports: list[dict[str, Any]], command: str) -> dict[str, Any]:
    return {
        "family": family,
        "networkMode": mode,
        "containerDefinitions": [
            {
                "name": "app",
                "image": "berth-busybox:2",
                "memory": 32,
                "portMappings": ports,
                "entryPoint": ["sh", "-c"],
                "command": [command],
                "stopTimeout": 1,
            }
        ],
    }


def _run(berth: Berth, agent: AgentProcess, tmp_path: Path, document: dict[str, Any]) -> dict[str, Any]:
    family = document["family"]
    path = tmp_path / f"{family}.json"
    path.write_text(json.dumps(document))
    berth.ok("cluster", "create", family)
    berth.ok("taskdef", "register", "--cli-input-json", f"file://{path}")
    berth.ok(
        "service", "create", "--cluster", family, "--name", "app", "--task-definition", family,
        "--desired-count", "1",
    )  # fmt: skip
    (task,), _ = wait_until(lambda: berth.running_exactly(family, 1, "app"), 30, f"{family}: 1 RUNNING task")
    return dict(task)


def _network_mode(agent: AgentProcess, cluster: str) -> str:
    (container,) = [c for c in agent.containers() if c.labels.get("berth.cluster") == cluster]
    client = docker.DockerClient(base_url=agent.docker_url)
    try:
        return str(client.api.inspect_container(container.id)["HostConfig"]["NetworkMode"])
    finally:
        client.close()


def _fetch() -> bytes | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/", timeout=2) as response:
            return bytes(response.read())
    except OSError:
        return None


def test_host_mode_serves_on_the_hosts_own_port(berth: Berth, agent: AgentProcess, tmp_path: Path) -> None:
    serve = "mkdir -p /www; echo host-mode > /www/index.html; trap 'exit 0' TERM; "
    serve += f"httpd -f -p {PORT} -h /www & wait"
    task = _run(berth, agent, tmp_path, _document("hostnet", "host", [{"containerPort": PORT}], serve))
    try:
        assert _network_mode(agent, "hostnet") == "host"
        assert [(b["containerPort"], b["hostPort"]) for b in bindings(task)] == [(PORT, PORT)]
        body, _ = wait_until(_fetch, 10, f"an answer on 127.0.0.1:{PORT}")
        assert body == b"host-mode\n"
    finally:
        berth.ok("service", "delete", "app", "--cluster", "hostnet")


def test_none_mode_has_no_network(berth: Berth, agent: AgentProcess, tmp_path: Path) -> None:
    task = _run(
        berth, agent, tmp_path, _document("nonet", "none", [], "trap 'exit 0' TERM; sleep 300 & wait")
    )
    try:
        assert _network_mode(agent, "nonet") == "none"
        assert task.get("networkBindings", []) == []
    finally:
        berth.ok("service", "delete", "app", "--cluster", "nonet")
