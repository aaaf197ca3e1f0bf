"""The quick start on this one host, as a newcomer runs it, then README's commands, then `down`.

`deploy/quickstart.sh` runs for real (its daemons, its service network on
this host's own address, port 53 and 127.0.0.1:7400, the address README's
commands use), with BERTH_HOME in a temporary directory and BERTH_SKIP_INSTALL
(the suite's machine is installed already). README.md's ```sh blocks then run
in order, as written, except a block right after `<!-- not run: REASON -->`.
`quickstart.sh down` ends the module, even after a failure, and must leave
no Berth chain and no route of the service CIDR behind.

Traffic stays on this machine: containers on Docker's default bridge talk to
the host's own address and to VIPs routed locally.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from berth import pki
from berth.testing.cli import Berth, exit_code_of
from berth.testing.daemons import REPO
from berth.testing.waiting import wait_until

SERVER = "127.0.0.1:7400"
SERVICE_CIDR = "10.96.0.0/16"
README = REPO / "README.md"
NOT_RUN = re.compile(r"^<!-- not run: (.+) -->$")


@dataclass(frozen=True)
class Block:
    line: int
    text: str
    not_run: str | None


def readme_blocks(text: str) -> list[Block]:
    """README's ```sh blocks, each with the reason it is not run (None: it runs)."""
    blocks: list[Block] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        if lines[index].strip() == "```sh":
            start = index
            body: list[str] = []
            index += 1
            while index < len(lines) and lines[index].strip() != "```":
                body.append(lines[index])
                index += 1
            before = next((lines[i].strip() for i in range(start - 1, -1, -1) if lines[i].strip()), "")
            marker = NOT_RUN.match(before)
            blocks.append(Block(start + 1, "\n".join(body), marker.group(1) if marker else None))
        index += 1
    return blocks


def berth_rules() -> list[str]:
    """Berth's iptables lines and its nftables table (the agent picks a backend: --netfilter)."""
    saved = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    found = [line for line in saved.splitlines() if "BERTH-" in line]
    if shutil.which("nft"):
        table = subprocess.run(["nft", "list", "table", "ip", "berth"], capture_output=True, text=True)
        if table.returncode == 0:
            found.append("table ip berth")
    return found


def service_cidr_routes() -> str:
    return subprocess.run(
        ["ip", "route", "show", "table", "local", SERVICE_CIDR], capture_output=True, text=True, check=True
    ).stdout.strip()


@dataclass
class QuickStart:
    home: Path
    env: dict[str, str]
    output: str
    down_output: str = ""

    @property
    def node_id(self) -> str:
        """The node the agent's certificate names ("" before it joined)."""
        path = self.home / "agent" / "node.crt"
        return pki.identity(path.read_bytes()).name if path.exists() else ""

    def script(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(REPO / "deploy" / "quickstart.sh"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def down(self) -> str:
        result = self.script("down", timeout=120)
        self.down_output = result.stdout + result.stderr
        assert result.returncode == 0, self.down_output
        return self.down_output


def _port_free(address: str) -> bool:
    host, _, port = address.rpartition(":")
    with socket.socket() as sock:
        # As the control plane binds: a previous run's connections in TIME_WAIT do
        # not make the port busy, a listener does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, int(port)))
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory, test_image: str) -> Iterator[QuickStart]:
    if berth_rules() or service_cidr_routes():
        pytest.fail("this host already has Berth rules or a service CIDR route; run quickstart.sh down first")
    if not _port_free(SERVER):
        pytest.fail(f"{SERVER} is in use; the quick start and README's commands use it")
    home = tmp_path_factory.mktemp("berth-home")
    env = {
        # A newcomer's environment: none of this machine's own AWS settings (an AWS_CA_BUNDLE
        # here would override the profile's CA bundle; README says so).
        **{name: value for name, value in os.environ.items() if not name.startswith("AWS_")},
        "BERTH_HOME": str(home),
        "BERTH_SERVER": SERVER,
        # The administrator's credentials: written by the control plane, found by the CLI.
        "BERTH_CONFIG": str(home / "config"),
        # The AWS profile the first start writes, and where the aws CLI (README's blocks too) reads it.
        "BERTH_AWS_PROFILE_DIR": str(home / "aws"),
        "AWS_CONFIG_FILE": str(home / "aws" / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws" / "credentials"),
        "BERTH_SKIP_INSTALL": "1",
        "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}",
    }
    started = QuickStart(home, env, "")
    try:
        result = started.script()
        started.output = result.stdout + result.stderr
        assert result.returncode == 0, started.output
        yield started
    finally:
        try:
            if not started.down_output:
                started.down()
        finally:
            # Whatever down left behind (a failed run): daemons, containers.
            for name in ("agent", "controlplane"):
                pidfile = home / f"{name}.pid"
                if pidfile.exists():
                    subprocess.run(["kill", "-9", pidfile.read_text().strip()], check=False)
            if started.node_id:
                client = docker.from_env()
                for container in client.containers.list(
                    all=True, filters={"label": f"berth.node-id={started.node_id}"}
                ):
                    container.remove(force=True)
                client.close()
            subprocess.run([str(REPO / ".venv" / "bin" / "berth-agent"), "remove-rules", SERVICE_CIDR])


@pytest.fixture(scope="module")
def berth(quickstart: QuickStart) -> Berth:
    return Berth(SERVER, quickstart.home / "config")


def _probe_container(berth: Berth, tmp_path: Path) -> str:
    """A long-running task Berth starts (so it gets Berth's DNS), for docker exec."""
    definitions = tmp_path / "probe.json"
    definitions.write_text(
        '[{"name": "probe", "image": "berth-busybox:2", "memory": 16, "stopTimeout": 2,'
        ' "command": ["sh", "-c", "trap \'exit 0\' TERM; sleep 600 & wait"]}]'
    )
    berth.ok("taskdef", "register", "--family", "probe", "--container-definitions", f"file://{definitions}")
    task_id = berth.ok("task", "run", "--task-definition", "probe").stdout.strip()
    task, _ = wait_until(
        lambda: (
            t
            if (t := berth.ok("task", "describe", task_id, "-o", "json").json())["lastStatus"] == "RUNNING"
            else None
        ),
        20,
        "the probe task RUNNING",
    )
    container_id: str = task["containers"][0]["runtimeId"]
    return container_id


def test_the_quick_start_ran_and_replaced_the_killed_task(quickstart: QuickStart, berth: Berth) -> None:
    assert "killed container" in quickstart.output
    assert "hello from berth" in quickstart.output
    # The same service, as the real aws CLI sees it through the profile the first start wrote.
    ecs_table = quickstart.output[quickstart.output.index("ECS-compatible API, with the real aws CLI") :]
    assert re.search(r"\|\s*2\s*\|\s*2\s*\|\s*web\s*\|\s*ACTIVE\s*\|", ecs_table), ecs_table
    tasks = berth.tasks("default", "web")
    assert len([t for t in tasks if t["lastStatus"] == "RUNNING"]) == 2
    assert any(t["lastStatus"] == "STOPPED" and exit_code_of(t) == 137 for t in tasks)
    agent_log = (quickstart.home / "agent.log").read_text()
    assert "address=127." not in agent_log and "event=loopback_address" not in agent_log
    assert "event=dns_started" in agent_log


def test_a_container_berth_started_reaches_web_by_vip_and_by_name(
    quickstart: QuickStart, berth: Berth, tmp_path: Path
) -> None:
    service = berth.ok("service", "describe", "web", "-o", "json").json()
    vip = service["berth"]["vip"]
    assert vip.startswith("10.96.")
    container_id = _probe_container(berth, tmp_path)
    client = docker.from_env()
    try:
        container = client.containers.get(container_id)
        resolv = container.exec_run(["cat", "/etc/resolv.conf"]).output.decode()
        assert "nameserver 127." not in resolv, resolv

        def fetch(host: str) -> str | None:
            # busybox's nc speaks the HTTP (its static wget cannot resolve names).
            request = f'printf "GET / HTTP/1.0\\r\\n\\r\\n" | nc -w 2 {host} 80'
            result = container.exec_run(["sh", "-c", request])
            text = result.output.decode()
            return text.splitlines()[-1] if result.exit_code == 0 and "hello from berth" in text else None

        by_vip, seconds = wait_until(lambda: fetch(vip), 10, f"GET http://{vip}/")
        by_name, _ = wait_until(lambda: fetch("web.default.berth"), 10, "GET http://web.default.berth/")
        print(f"VIP answered after {seconds:.2f}s: {by_vip}; by name: {by_name}")
        looked_up = container.exec_run(["nslookup", "web.default.berth"]).output.decode()
        assert vip in looked_up, looked_up
    finally:
        client.close()


def test_readme_commands_run_as_written_in_order(quickstart: QuickStart, berth: Berth) -> None:
    blocks = readme_blocks(README.read_text())
    runnable = [b for b in blocks if b.not_run is None]
    assert runnable, "README has no block to run"
    for block in runnable:
        # Each block in one shell, stopping at its first failing command.
        result = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", block.text],
            cwd=REPO,
            env=quickstart.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, (
            f"README.md block at line {block.line} failed:\n{block.text}\n---\n{result.stdout}{result.stderr}"
        )
    # The blocks left service api running in cluster default (and prod's web may still be stopping).
    wait_until(lambda: berth.running_exactly("default", 3, "api"), 20, "api's 3 tasks RUNNING")


def test_down_stops_the_demo_lists_what_else_runs_and_leaves_no_rules(
    quickstart: QuickStart, berth: Berth
) -> None:
    # Runs last in this module (after the README's commands made service api).
    output = quickstart.down()
    assert "still running" in output and "service api in cluster default" in output, output
    assert "service web in cluster default" not in output, output
    assert not (quickstart.home / "agent.pid").exists()
    assert not (quickstart.home / "controlplane.pid").exists()
    assert berth_rules() == [], "down leaves no Berth chain or jump"
    assert service_cidr_routes() == "", "down leaves no route of the service CIDR"
    # What down listed still runs: it was listed, not stopped behind the user's back.
    client = docker.from_env()
    try:
        left = client.containers.list(filters={"label": "berth.service=api"})
        assert len(left) == 3
        web = client.containers.list(
            all=True, filters={"label": ["berth.service=web", "berth.cluster=default"]}
        )
        assert web == [], "down removed the quick start's own containers"
    finally:
        client.close()
