"""Liveness that restarts and mass silences cannot fake, against real daemons.

An agent restarted with SIGTERM and away longer than the grace keeps every task
(same task ids, same containers, no restart). Most hosts falling silent at once
(their agents paused) get no task declared lost, and the operator sees why; one
host killed outright is still DOWN and its tasks replaced within its grace and a
few seconds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from berth.testing.cli import Berth, id_of, node_of
from berth.testing.daemons import (
    REPO,
    AgentProcess,
    ControlPlaneProcess,
    HollowAgentsProcess,
    JoinFlags,
    free_port,
)
from berth.testing.waiting import wait_until
from controlplane.controllers.nodes import settle_seconds

GRACE = 3.0
# Seconds a dead host may take beyond its grace: the settling (a heartbeat interval and a
# margin), etcd's lease expiry check, the monitor's pace, the replacement starting.
DETECTION_SLACK = settle_seconds(GRACE) + 3.5


def _log_since(path: Path, offset: int) -> str:
    with path.open("rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _live(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [t for t in tasks if t["lastStatus"] != "STOPPED"]


def _node_lost(tasks: list[dict[str, Any]]) -> list[str]:
    return [id_of(t) for t in tasks if t["berth"].get("stopCode") == "NodeLost"]


# -- an agent restart longer than the grace (real Docker) ---------------------------


@pytest.fixture()
def restartable(tmp_path: Path, test_image: str) -> Iterator[tuple[ControlPlaneProcess, AgentProcess]]:
    plane = ControlPlaneProcess(tmp_path / "cp", ["--node-grace", str(GRACE)])
    plane.start()
    agent = AgentProcess(
        tmp_path / "agent", plane.address, ["--no-service-network"], join=JoinFlags.of(plane)
    )
    agent.start()
    agent.wait_registered()
    try:
        yield plane, agent
    finally:
        agent.stop()
        agent.remove_containers()
        plane.stop()


def _containers(agent: AgentProcess) -> dict[str, tuple[str, str]]:
    """task id -> (container id, started at); fails on a task with two containers."""
    per_task: dict[str, list[tuple[str, str]]] = {}
    for container in agent.containers(all=True):
        per_task.setdefault(container.labels["berth.task-id"], []).append(
            (container.id, container.started_at)
        )
    assert all(len(found) == 1 for found in per_task.values()), per_task
    return {task: found[0] for task, found in per_task.items()}


def _restarts(task: dict[str, Any]) -> int:
    return sum(int(c.get("berth", {}).get("restartCount", 0)) for c in task.get("containers", []))


def test_an_agent_restart_longer_than_the_grace_keeps_every_task(
    restartable: tuple[ControlPlaneProcess, AgentProcess], tmp_path: Path
) -> None:
    plane, agent = restartable
    berth = Berth.of(plane)
    berth.ok(
        "taskdef",
        "register",
        "--family",
        "web",
        "--container-definitions",
        f"file://{REPO}/examples/web.json",
    )
    berth.ok("service", "create", "--name", "web", "--task-definition", "web", "--desired-count", "3")
    running, _ = wait_until(lambda: berth.running_exactly("default", 3), 30, "3 RUNNING")
    before = _containers(agent)
    assert len(before) == 3

    log_offset = _size(plane.log_path)
    assert agent.stop(timeout=15) == 0  # SIGTERM: an upgrade
    assert "event=goodbye_sent" in agent.log_tail(20), agent.log_tail(20)
    # Away for well over the grace and the settling.
    time.sleep(GRACE + settle_seconds(GRACE) + 4)
    node = berth.instances()[0]
    assert node["berth"]["status"] == "READY", node
    agent.start()
    agent.wait_registered()
    time.sleep(3)  # time for the controllers and the agent to do anything wrong

    tasks = berth.tasks("default")
    assert sorted(id_of(t) for t in tasks) == sorted(id_of(t) for t in running), "tasks were replaced"
    assert all(t["lastStatus"] == "RUNNING" for t in tasks), tasks
    assert _node_lost(tasks) == []
    assert all(_restarts(t) == 0 for t in tasks), tasks
    assert _containers(agent) == before, "containers were restarted or duplicated"
    log = _log_since(plane.log_path, log_offset)
    assert "event=agent_restarting" in log and "event=node_back" in log
    assert "event=node_down" not in log


# -- most hosts silent at once, and one host dead (hollow agents) ---------------------


# The control plane, the victim's process, the paused processes, the metrics port.
Fleet = tuple[ControlPlaneProcess, HollowAgentsProcess, list[HollowAgentsProcess], int]


@pytest.fixture()
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """A control plane (grace 3 s, metrics on), one hollow host alone in its process (the
    victim) and three processes of four hosts each (the ones paused)."""
    metrics_port = free_port()
    plane = ControlPlaneProcess(
        tmp_path / "cp", ["--node-grace", str(GRACE), "--metrics-listen", f"127.0.0.1:{metrics_port}"]
    )
    plane.start()
    join = JoinFlags.of(plane)
    victim = HollowAgentsProcess(
        tmp_path / "victim.log", plane.address, 1, ["--name-prefix", "victim"], join=join
    )
    groups = [
        HollowAgentsProcess(
            tmp_path / f"group{i}.log", plane.address, 4, ["--name-prefix", f"group{i}"], join=join
        )
        for i in range(3)
    ]
    for process in (victim, *groups):
        process.start()
    try:
        yield plane, victim, groups, metrics_port
    finally:
        for process in (victim, *groups):
            if process.process is not None and process.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.process.pid, signal.SIGCONT)
            process.stop(timeout=15)
        plane.stop()


def _gauge(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


def test_most_hosts_silent_at_once_lose_no_task_while_one_dead_host_is_still_replaced(
    fleet: Fleet, tmp_path: Path
) -> None:
    plane, victim, groups, metrics_port = fleet
    berth = Berth.of(plane)
    wait_until(lambda: berth.nodes_exactly(13), 30, "13 hollow nodes")
    berth.register("web", [{"name": "web", "image": "anything:1", "memory": 16}], tmp_path)
    berth.ok("service", "create", "--name", "web", "--task-definition", "web", "--desired-count", "26")
    running, _ = wait_until(lambda: berth.running_exactly("default", 26), 30, "26 RUNNING")
    names = {n["berth"]["nodeId"]: n["ec2InstanceId"] for n in berth.instances()}
    assert {names[node_of(t)] for t in running} == set(names.values()), "spread over every node"

    # Phase 1: twelve hosts of thirteen fall silent at once.
    log_offset = _size(plane.log_path)
    for group in groups:
        assert group.process is not None
        os.kill(group.process.pid, signal.SIGSTOP)
    try:
        wait_until(
            lambda: "event=mass_failure_suspected" in _log_since(plane.log_path, log_offset),
            GRACE + DETECTION_SLACK + 5,
            "the mass failure to be suspected",
        )
        listed = berth("node", "list")
        assert listed.exit_code == 0
        assert "warning: mass failure suspected" in listed.stderr, listed.stderr
        assert "12 of 13 nodes stopped heartbeating" in listed.stderr, listed.stderr
        assert _gauge(metrics_port, "berth_mass_failure") == 1.0
        time.sleep(2 * GRACE)  # silent for three graces and more in all
        tasks = berth.tasks("default")
        assert _node_lost(tasks) == [], "tasks declared lost en masse"
        assert sorted(id_of(t) for t in tasks) == sorted(id_of(t) for t in running)
        assert {n["berth"]["status"] for n in berth.instances()} == {"READY"}
    finally:
        for group in groups:
            assert group.process is not None
            os.kill(group.process.pid, signal.SIGCONT)
    wait_until(
        lambda: "event=mass_failure_over" in _log_since(plane.log_path, log_offset),
        15,
        "the mass failure to end",
    )
    wait_until(lambda: "warning" not in berth("node", "list").stderr or None, 10, "the warning to go")
    assert _gauge(metrics_port, "berth_mass_failure") == 0.0
    time.sleep(GRACE)
    tasks = berth.tasks("default")
    assert _node_lost(tasks) == [] and len(berth.running("default")) == 26
    assert sorted(id_of(t) for t in tasks) == sorted(id_of(t) for t in running), "nothing was replaced"
    assert "event=node_down" not in _log_since(plane.log_path, log_offset)

    # Phase 2: one host dies (kill -9: no goodbye) while the others beat.
    victim_id = next(node for node, name in names.items() if name == "victim-0")
    on_victim = {id_of(t) for t in running if node_of(t) == victim_id}
    assert len(on_victim) == 2
    victim.kill9()
    killed_at = time.monotonic()

    def replaced() -> list[dict[str, Any]] | None:
        now_running = berth.running("default")
        if len(now_running) != 26 or on_victim & {id_of(t) for t in now_running}:
            return None
        return now_running

    _, seconds = wait_until(replaced, GRACE + DETECTION_SLACK, "the dead host's tasks to run elsewhere")
    print(
        f"dead host -> its tasks RUNNING elsewhere after {time.monotonic() - killed_at:.2f}s (grace {GRACE}s)"
    )
    for task_id in on_victim:
        task = berth.ok("task", "describe", task_id, "-o", "json").json()
        assert (task["lastStatus"], task["berth"].get("stopCode")) == ("STOPPED", "NodeLost"), task
    down = [n for n in berth.instances() if n["berth"]["status"] == "DOWN"]
    assert [n["ec2InstanceId"] for n in down] == ["victim-0"]
    assert seconds <= GRACE + DETECTION_SLACK


# -- a blip longer than the grace, with nowhere to run replacements (hollow agent) ----


def test_tasks_of_a_node_back_before_their_replacements_run_are_kept(tmp_path: Path) -> None:
    """The one-host quick start: its agent silent past the grace (paused, no goodbye) makes the
    node DOWN and its replacements wait for a node; when it comes back its tasks go on."""
    plane = ControlPlaneProcess(tmp_path / "cp", ["--node-grace", str(GRACE)])
    plane.start()
    host = HollowAgentsProcess(tmp_path / "host.log", plane.address, 1, join=JoinFlags.of(plane))
    host.start()
    try:
        berth = Berth.of(plane)
        wait_until(lambda: berth.nodes_exactly(1), 30, "1 hollow node")
        berth.register("web", [{"name": "web", "image": "anything:1", "memory": 16}], tmp_path)
        berth.ok("service", "create", "--name", "web", "--task-definition", "web", "--desired-count", "3")
        running, _ = wait_until(lambda: berth.running_exactly("default", 3), 30, "3 RUNNING")
        log_offset = _size(plane.log_path)
        assert host.process is not None
        os.kill(host.process.pid, signal.SIGSTOP)
        try:
            wait_until(
                lambda: "event=node_down" in _log_since(plane.log_path, log_offset),
                GRACE + DETECTION_SLACK + 5,
                "the silent node to be DOWN",
            )

            def replacements_waiting() -> list[dict[str, Any]] | None:
                tasks = _live(berth.tasks("default"))
                return tasks if len(tasks) == 6 else None

            wait_until(replacements_waiting, 10, "three replacements waiting for a node")
        finally:
            os.kill(host.process.pid, signal.SIGCONT)

        def only_the_originals() -> list[dict[str, Any]] | None:
            tasks = _live(berth.tasks("default"))
            return tasks if len(tasks) == 3 else None

        wait_until(only_the_originals, 15, "the surplus replacements to go")
        time.sleep(2)  # time for anything wrong to happen
        tasks = berth.tasks("default")
        live = _live(tasks)
        assert sorted(id_of(t) for t in live) == sorted(id_of(t) for t in running), "originals kept"
        assert all(t["lastStatus"] == "RUNNING" for t in live), live
        gone = [t for t in tasks if t not in live]
        assert all(t["berth"].get("stopCode") != "NodeLost" for t in gone), "replacements went, not lost"
        assert [n["berth"]["status"] for n in berth.instances()] == ["READY"]
        assert "event=node_back" in _log_since(plane.log_path, log_offset)
    finally:
        if host.process is not None and host.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(host.process.pid, signal.SIGCONT)
        host.stop(timeout=15)
        plane.stop()
