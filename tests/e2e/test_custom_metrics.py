"""Custom metrics end to end: `berth metric put` and `list` against a real control plane, bad
input refused in one line with nothing stored, and a container on a real agent pushing a value
to the agent's endpoint (on Docker's bridge gateway) that shows up attributed to its task."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from berth.testing.cli import Berth, id_of
from berth.testing.daemons import AgentProcess, ControlPlaneProcess, JoinFlags, free_port
from berth.testing.waiting import wait_until


def _bridge_gateway() -> str:
    client = docker.DockerClient(base_url="unix:///var/run/docker.sock")
    try:
        config = client.api.inspect_network("bridge")["IPAM"]["Config"]
    finally:
        client.close()
    return str(next(c["Gateway"] for c in config if c.get("Gateway")))


@pytest.fixture(scope="module")
def push_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def pushing_agent(
    tmp_path_factory: pytest.TempPathFactory,
    controlplane: ControlPlaneProcess,
    test_image: str,
    push_port: int,
) -> Iterator[AgentProcess]:
    process = AgentProcess(
        tmp_path_factory.mktemp("agent") / "data",
        controlplane.address,
        ["--no-service-network", "--metrics-push-listen", f"bridge:{push_port}"],
        join=JoinFlags.of(controlplane),
    )
    process.start()
    process.wait_registered()
    yield process
    process.stop()
    process.remove_containers()


def _service(berth: Berth, name: str, command: str) -> dict[str, Any]:
    """A service of one task running `command`; its RUNNING task."""
    container = {
        "name": name,
        "image": "berth-busybox:2",
        "memory": 32,
        "essential": True,
        "entryPoint": ["sh", "-c"],
        "command": [f"trap 'exit 0' TERM; {command}"],
        "stopTimeout": 2,
    }
    berth.ok("taskdef", "register", "--family", name, "--container-definitions", json.dumps([container]))
    berth.ok("service", "create", "--name", name, "--task-definition", name, "--desired-count", "1")
    running, _ = wait_until(lambda: berth.running_exactly("default", 1, name), 60, f"{name} RUNNING")
    return running[0]


def _delete(berth: Berth, name: str) -> None:
    berth.ok("service", "delete", name)
    wait_until(lambda: berth.running_exactly("default", 0, name), 60, f"{name} stopped")


def _metrics(berth: Berth, service: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = berth.ok("metric", "list", service, "-o", "json").json()["metrics"]
    return found


def test_put_then_list(berth: Berth, pushing_agent: AgentProcess) -> None:
    task = _service(berth, "metered", "while true; do sleep 1; done")
    try:
        berth.ok("metric", "put", "metered", "queue_depth", "42")
        berth.ok("metric", "put", "metered", "rps", "7.5", "--task", id_of(task))
        listed = {(m["name"], m.get("taskId", "")): m for m in _metrics(berth, "metered")}
        assert listed[("queue_depth", "")]["value"] == 42
        assert listed[("rps", id_of(task))]["value"] == 7.5
        assert all(m.get("ageSeconds", 0) < 60 for m in listed.values())
        table = berth.ok("metric", "list", "metered").stdout
        assert "queue_depth" in table and "service" in table and f"task {id_of(task)}" in table
    finally:
        _delete(berth, "metered")


@pytest.fixture(scope="module")
def quiet(berth: Berth) -> Iterator[str]:
    """A service with no tasks, for refused puts."""
    idle = {"name": "idle", "image": "berth-busybox:2", "memory": 16, "essential": True}
    berth.ok("taskdef", "register", "--family", "quiet", "--container-definitions", json.dumps([idle]))
    berth.ok("service", "create", "--name", "quiet", "--task-definition", "quiet", "--desired-count", "0")
    yield "quiet"
    berth.ok("service", "delete", "quiet")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("no-such-service", "queue_depth", "1"), "does not exist"),
        (("quiet", "Queue-Depth", "1"), "metric name 'Queue-Depth' is invalid"),
        (("quiet", "queue_depth", "nan"), "not a finite number"),
        (("quiet", "queue_depth", "inf"), "not a finite number"),
        (("quiet", "queue_depth", "1e13"), "out of range"),
        (("quiet", "queue_depth", "1e400"), "not a finite number"),
        (("quiet", "queue_depth", "twelve"), "is not a number"),
        (("quiet", "queue_depth", "1", "--task", "f" * 32), "is not a task of service"),
        (("quiet", "queue_depth", "1", "--task", "nope"), "task id 'nope' is invalid"),
    ],
)
def test_bad_input_is_refused_in_one_line_and_stores_nothing(
    berth: Berth, quiet: str, args: tuple[str, ...], message: str
) -> None:
    berth("metric", "put", *args).assert_refused(message)
    assert _metrics(berth, "quiet") == []
    berth("metric", "list", "no-such-service").assert_refused("does not exist")


def test_a_container_pushes_to_its_agent(berth: Berth, pushing_agent: AgentProcess, push_port: int) -> None:
    url = f"http://{_bridge_gateway()}:{push_port}/v1/metrics/queue_depth"
    # Bounded: at most 120 pushes, one a second.
    task = _service(
        berth,
        "pusher",
        f"for i in $(seq 120); do wget -q -O- --post-data 17 {url}; sleep 1; done; sleep 3600",
    )
    try:
        found, _ = wait_until(
            lambda: [m for m in _metrics(berth, "pusher") if m.get("taskId") == id_of(task)] or None,
            60,
            "the pushed value listed under the task",
        )
        assert found[0]["name"] == "queue_depth"
        assert found[0]["value"] == 17
    finally:
        _delete(berth, "pusher")


def test_a_caller_that_is_no_task_is_refused(pushing_agent: AgentProcess, push_port: int) -> None:
    # This test's own process is not a container of the node: 403, nothing relayed.
    request = urllib.request.Request(
        f"http://{_bridge_gateway()}:{push_port}/v1/metrics/queue_depth", data=b"5", method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 403


def test_the_endpoint_is_not_on_every_address(pushing_agent: AgentProcess, push_port: int) -> None:
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", push_port), timeout=5):
        pass
    assert Path(pushing_agent.log_path).read_text().count("event=metric_endpoint_listening") == 1


def test_a_viewer_lists_a_deployer_puts_and_only_refusals_are_audited(
    berth: Berth, controlplane: ControlPlaneProcess, quiet: str, tmp_path: Path
) -> None:
    berth.ok("user", "create", "mira", "--role", "viewer", "--out", str(tmp_path / "mira"))
    berth.ok("user", "create", "dora", "--role", "deployer", "--out", str(tmp_path / "dora"))
    viewer = Berth(controlplane.address, tmp_path / "mira")
    deployer = Berth(controlplane.address, tmp_path / "dora")
    viewer("metric", "put", quiet, "queue_depth", "1").assert_refused("user mira (viewer) may not PutMetric")
    assert _metrics(viewer, quiet) == []
    deployer.ok("metric", "put", quiet, "queue_depth", "3")
    assert [m["value"] for m in _metrics(viewer, quiet)] == [3]
    audit = [json.loads(line) for line in (controlplane.data_dir / "audit.log").read_text().splitlines()]
    puts = [(e["user"], e["result"][:6]) for e in audit if e["call"] == "PutMetric"]
    assert ("mira", "denied") in puts
    assert not any(user == "dora" for user, _ in puts), "a successful put was audited"
