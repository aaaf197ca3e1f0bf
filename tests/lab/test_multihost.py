"""Many hosts: placement strategies, host failure, drain, control-plane restarts.

Runs on the lab: three network namespaces, each with its own dockerd and
berth-agent (zones a, b, c), and a control plane with its embedded etcd.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from berth.testing.cli import Berth, id_of
from berth.testing.lab import Lab
from berth.testing.waiting import wait_until
from tests.lab.conftest import CPU_UNITS, GRACE, MEMORY_MIB, delete_services
from tests.lab.traffic import TaskSampler, VipClient, running_by_host

SERVE_ROOT = "trap 'exit 0' TERM; httpd -f -p 8080 -h / & wait"
# Answers its hostname at GET /, for a client on the VIP.
SERVE_NAME = (
    "mkdir -p /www && hostname > /www/index.html && trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait"
)


def _taskdef(berth: Berth, tmp_path: Path, family: str, cpu: int = 64, command: str = SERVE_ROOT) -> None:
    definitions = [
        {
            "name": "app",
            "image": "berth-busybox:2",
            "cpu": cpu,
            "memory": 32,
            "stopTimeout": 2,
            "portMappings": [{"containerPort": 8080}],
            "entryPoint": ["sh", "-c"],
            "command": [command],
        }
    ]
    path = tmp_path / f"{family}.json"
    path.write_text(json.dumps(definitions))
    berth.ok("taskdef", "register", "--family", family, "--container-definitions", f"file://{path}")


@pytest.fixture()
def service(berth: Berth, lab: Lab) -> Iterator[list[str]]:
    """Names of services the test creates; deleted (and their containers gone) afterwards."""
    created: list[str] = []
    yield created
    delete_services(berth, created)
    for host in lab.hosts:
        lab.host(host.name).reconnect()
    wait_until(
        lambda: all(not lab.agents[h.name].containers(all=True) for h in lab.hosts), 30, "containers removed"
    )


def test_spread_puts_two_on_each_host(berth: Berth, service: list[str], tmp_path: Path) -> None:
    _taskdef(berth, tmp_path, "spread")
    service.append("spread")
    berth.ok(
        "service",
        "create",
        "--name",
        "spread",
        "--task-definition",
        "spread",
        "--desired-count",
        "6",
        "--placement-strategy",
        "type=spread,field=attribute:zone",
    )
    wait_until(lambda: len(berth.running("default", "spread")) == 6, 20, "6 RUNNING")
    assert running_by_host(berth, "spread") == {"h1": 2, "h2": 2, "h3": 2}


def test_binpack_fills_one_host_before_the_next(berth: Berth, service: list[str], tmp_path: Path) -> None:
    # Each lab host has 2048 CPU units (--cpu-units): four 512-unit tasks fill one.
    _taskdef(berth, tmp_path, "packed", cpu=512)
    service.append("packed")
    berth.ok(
        "service",
        "create",
        "--name",
        "packed",
        "--task-definition",
        "packed",
        "--desired-count",
        "5",
        "--placement-strategy",
        "type=binpack,field=cpu",
    )
    wait_until(lambda: len(berth.running("default", "packed")) == 5, 20, "5 RUNNING")
    assert sorted(running_by_host(berth, "packed").values()) == [1, 4]


def test_distinct_instance_places_three_and_says_why_not_four(
    berth: Berth, service: list[str], tmp_path: Path
) -> None:
    _taskdef(berth, tmp_path, "distinct")
    service.append("distinct")
    berth.ok(
        "service",
        "create",
        "--name",
        "distinct",
        "--task-definition",
        "distinct",
        "--desired-count",
        "4",
        "--placement-constraints",
        "type=distinctInstance",
    )
    wait_until(lambda: len(berth.running("default", "distinct")) == 3, 20, "3 RUNNING")
    assert running_by_host(berth, "distinct") == {"h1": 1, "h2": 1, "h3": 1}
    expected = "no node has room under distinctInstance (3 nodes: already runs a task of this service)"

    def explained() -> str | None:
        out = berth.ok("service", "describe", "distinct").stdout
        return out if expected in out else None

    wait_until(explained, 10, "the reason in the service's events")
    pending = [t for t in berth.tasks("default", "distinct") if t["lastStatus"] == "PENDING"]
    assert len(pending) == 1 and pending[0]["berth"]["pendingReason"] == expected


def test_member_of_keeps_tasks_in_one_zone(berth: Berth, service: list[str], tmp_path: Path) -> None:
    _taskdef(berth, tmp_path, "zoned")
    service.append("zoned")
    berth.ok(
        "service",
        "create",
        "--name",
        "zoned",
        "--task-definition",
        "zoned",
        "--desired-count",
        "3",
        "--placement-constraints",
        "type=memberOf,expression=attribute:zone in [b, c]",
    )
    wait_until(lambda: len(berth.running("default", "zoned")) == 3, 20, "3 RUNNING")
    assert set(running_by_host(berth, "zoned")) <= {"h2", "h3"}


def _cut_and_heal(
    berth: Berth, lab: Lab, service: list[str], tmp_path: Path, restart_controlplane: bool
) -> None:
    _taskdef(berth, tmp_path, "healing", command=SERVE_NAME)
    service.append("healing")
    berth.ok(
        "service", "create", "--name", "healing", "--task-definition", "healing", "--desired-count", "6",
        "--port", "80:8080",
    )  # fmt: skip
    wait_until(lambda: len(berth.running("default", "healing")) == 6, 20, "6 RUNNING")
    vip = str(berth.ok("service", "describe", "healing", "-o", "json").json()["berth"]["vip"])
    victim = lab.host("h1")
    old_on_victim = {c.labels["berth.task-id"] for c in lab.agents["h1"].containers()}
    assert len(old_on_victim) == 2

    cut_at = time.monotonic()
    victim.cut()
    if restart_controlplane:
        lab.controlplane.kill9()
        lab.controlplane.restart()

    def replaced() -> bool:
        by_host = running_by_host(berth, "healing")
        return by_host.get("h1", 0) == 0 and sum(by_host.values()) == 6

    wait_until(
        replaced,
        5 + GRACE + (5 + GRACE if restart_controlplane else 0),
        "the cut host's tasks RUNNING elsewhere",
        interval=0.2,
    )
    print(f"host cut -> its tasks RUNNING elsewhere after {time.monotonic() - cut_at:.2f}s (grace {GRACE}s)")
    lost = [t for t in berth.tasks("default", "healing") if id_of(t) in old_on_victim]
    assert {id_of(t) for t in lost} == old_on_victim, "every task of the cut host is recorded"
    assert all(
        t["lastStatus"] == "STOPPED"
        and t["stopCode"] == "InfrastructureHealth"
        and t["berth"]["stopCode"] == "NodeLost"
        for t in lost
    )
    (down,) = [n for n in berth.instances() if n["ec2InstanceId"] == "h1"]
    # ECS shows a node whose agent stopped answering as ACTIVE and disconnected; Berth's word is DOWN.
    assert (down["berth"]["status"], down["status"], down["agentConnected"]) == ("DOWN", "ACTIVE", False)

    # The host comes back: its agent stops the copies that were replaced, and the
    # service rebalances onto it, never below its desired count (minimumHealthyPercent 100).
    # A client on the VIP (from h2, which stayed) from the moment h1 is back until 2/2/2: the
    # rebalance fails no request. Requests while h1 was cut are not its business.
    sampler = TaskSampler(lab.controlplane, "healing").start()
    victim.reconnect()
    client = VipClient(lab, vip, 80, host="h2")
    try:
        wait_until(
            lambda: not {c.labels["berth.task-id"] for c in lab.agents["h1"].containers()} & old_on_victim,
            30,
            "the superseded containers stopped on h1",
        )
        wait_until(
            lambda: all(n["berth"]["status"] == "READY" for n in berth.instances()),
            30,
            "h1 READY again",
        )
        _, took = wait_until(
            lambda: running_by_host(berth, "healing") == {"h1": 2, "h2": 2, "h3": 2} or None,
            90,
            "the service rebalanced to 2/2/2",
            interval=0.5,
        )
        requests, failed = client.finish()
    finally:
        client.close()
    print(
        f"host back -> service rebalanced to 2/2/2 after {took:.1f}s; "
        f"client requests {requests}, failed {failed}"
    )
    assert requests > 0, "the client made no request"
    assert failed == 0, f"{failed} of {requests} requests through the VIP failed while rebalancing"
    wait_until(
        lambda: sum(len(lab.agents[h.name].containers()) for h in lab.hosts) == 6 or None,
        30,
        "exactly the desired count of containers",
    )
    sampler.stop()
    assert sampler.lowest_healthy >= 6, (
        f"the service fell to {sampler.lowest_healthy} tasks while rebalancing"
    )
    events = berth.ok("service", "events", "healing").stdout
    assert "rebalancing: task" in events


def test_a_cut_host_is_replaced_and_cleaned_up_when_back(
    berth: Berth, lab: Lab, service: list[str], tmp_path: Path
) -> None:
    _cut_and_heal(berth, lab, service, tmp_path, restart_controlplane=False)


def test_control_plane_restart_during_host_failure_changes_nothing(
    berth: Berth, lab: Lab, service: list[str], tmp_path: Path
) -> None:
    _cut_and_heal(berth, lab, service, tmp_path, restart_controlplane=True)


def test_drain_moves_tasks_without_dipping_below_desired(
    berth: Berth, lab: Lab, service: list[str], tmp_path: Path
) -> None:
    _taskdef(berth, tmp_path, "drained")
    service.append("drained")
    berth.ok("service", "create", "--name", "drained", "--task-definition", "drained", "--desired-count", "6")
    wait_until(lambda: len(berth.running("default", "drained")) == 6, 20, "6 RUNNING")

    lowest = [6]
    samples = [0]
    failures: list[BaseException] = []
    stop = threading.Event()
    engines = [docker.DockerClient(base_url=h.docker_url) for h in lab.hosts]

    def watch() -> None:
        # Ground truth from the engines themselves, so the control plane's
        # restart in the middle does not blind the check.
        try:
            deadline = time.monotonic() + 120
            while not stop.is_set() and time.monotonic() < deadline:
                running = sum(
                    len(
                        engine.api.containers(filters={"label": "berth.service=drained", "status": "running"})
                    )
                    for engine in engines
                )
                lowest[0] = min(lowest[0], running)
                samples[0] += 1
                time.sleep(0.05)
        except BaseException as error:  # handed to the test below: a dead watcher must fail it
            failures.append(error)

    observer = threading.Thread(target=watch, daemon=True)
    observer.start()
    try:
        berth.ok("node", "drain", "h2")
        # Restarting the control plane in the middle of the drain changes nothing.
        time.sleep(0.5)
        lab.controlplane.kill9()
        lab.controlplane.restart()
        wait_until(
            lambda: (
                running_by_host(berth, "drained").get("h2", 0) == 0
                and len(berth.running("default", "drained")) == 6
            ),
            60,
            "tasks moved off h2",
        )
    finally:
        stop.set()
        observer.join(10)
        for engine in engines:
            engine.close()
    assert not observer.is_alive(), "the watcher did not stop"
    if failures:
        raise AssertionError("the drain watcher failed") from failures[0]
    assert samples[0] > 10, f"the drain watcher took only {samples[0]} samples"
    assert lowest[0] >= 6, f"running count fell to {lowest[0]} during the drain"
    wait_until(lambda: not lab.agents["h2"].containers(), 20, "h2 empty")
    nodes = {n["ec2InstanceId"]: n for n in berth.instances()}
    assert (nodes["h2"]["status"], nodes["h2"]["berth"]["status"]) == ("DRAINING", "DRAINING")
    berth.ok("node", "activate", "h2")


def test_node_list_shows_resources(berth: Berth) -> None:
    nodes = berth.instances()
    assert {n["ec2InstanceId"] for n in nodes} == {"h1", "h2", "h3"}
    assert {a["value"] for n in nodes for a in n["attributes"] if a["name"] == "zone"} == {"a", "b", "c"}
    table = berth.ok("node", "list").stdout
    assert "MEM MiB USED/FREE" in table and "READY" in table


def test_random_strategy_places_every_task(berth: Berth, service: list[str], tmp_path: Path) -> None:
    _taskdef(berth, tmp_path, "shuffled")
    service.append("shuffled")
    berth.ok(
        "service",
        "create",
        "--name",
        "shuffled",
        "--task-definition",
        "shuffled",
        "--desired-count",
        "9",
        "--placement-strategy",
        "type=random",
    )
    wait_until(lambda: len(berth.running("default", "shuffled")) == 9, 20, "9 RUNNING")
    # All nine on one host would happen once in 6,561 runs of a fair random choice.
    assert len(running_by_host(berth, "shuffled")) >= 2


@pytest.mark.parametrize(
    ("strategies", "expected"),
    [
        # binpack decides, spread only breaks its ties: one host filled first.
        (["type=binpack,field=cpu", "type=spread,field=attribute:zone"], [1, 4]),
        # spread decides, binpack only breaks its ties: zones evened out.
        (["type=spread,field=attribute:zone", "type=binpack,field=cpu"], [1, 2, 2]),
    ],
)
def test_several_strategies_apply_in_order(
    berth: Berth, service: list[str], tmp_path: Path, strategies: list[str], expected: list[int]
) -> None:
    _taskdef(berth, tmp_path, "ordered", cpu=512)
    service.append("ordered")
    options = [arg for strategy in strategies for arg in ("--placement-strategy", strategy)]
    berth.ok(
        "service",
        "create",
        "--name",
        "ordered",
        "--task-definition",
        "ordered",
        "--desired-count",
        "5",
        *options,
    )
    wait_until(lambda: len(berth.running("default", "ordered")) == 5, 20, "5 RUNNING")
    assert sorted(running_by_host(berth, "ordered").values()) == expected


def test_lab_agents_report_the_capacity_they_were_given(berth: Berth) -> None:
    nodes = berth.instances()
    registered = [{r["name"]: r["integerValue"] for r in n["registeredResources"]} for n in nodes]
    assert {r["CPU"] for r in registered} == {CPU_UNITS}
    assert {r["MEMORY"] for r in registered} == {MEMORY_MIB}
