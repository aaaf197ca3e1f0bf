"""The highly available control plane on the lab: 3 etcd members, 3 control-plane replicas.

Killing (-9) the leader replica in the middle of a rolling deployment: another
replica takes the leader key within the leader lease's TTL and a few
seconds (measured and printed), the rollout completes, and no task runs
twice on the hosts' engines. Killing (-9) an etcd member: every CLI command
issued meanwhile succeeds (the replicas' stores fail over; the CLI retries
a call at most once), and the cluster keeps converging.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from berth.testing.cli import Berth, definition_of
from berth.testing.lab import Lab
from berth.testing.waiting import wait_until
from tests.lab.conftest import CPU_UNITS, GRACE, MEMORY_MIB, delete_services
from tests.lab.test_service_network import IMAGE

LEADER_TTL = 5
DESIRED = 4


@pytest.fixture(scope="module")
def ha_lab(test_image: str) -> Iterator[Lab]:
    lab = Lab(
        2,
        controlplane_args=("--node-grace", str(GRACE), "--leader-ttl", str(LEADER_TTL)),
        agent_args=("--cpu-units", str(CPU_UNITS), "--memory-mib", str(MEMORY_MIB)),
        replicas=3,
        etcd_members=3,
    )
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


@pytest.fixture(scope="module")
def admin(ha_lab: Lab) -> Berth:
    """The administrator, with every replica's address (as BERTH_SERVER=A,B,C)."""
    return Berth(ha_lab.server, ha_lab.controlplane.admin_config)


def _revision(version: str) -> list[dict[str, Any]]:
    return [
        {
            "name": "web",
            "image": IMAGE,
            "cpu": 32,
            "memory": 32,
            "stopTimeout": 2,
            "entryPoint": ["sh", "-c"],
            "command": [f"echo {version}; trap 'exit 0' TERM; sleep 3600 & wait"],
        }
    ]


def _containers_per_task(lab: Lab, service: str) -> Counter[str]:
    """Running containers of the service on the hosts' engines, by task id (ground truth)."""
    counts: Counter[str] = Counter()
    for host in lab.hosts:
        engine = docker.DockerClient(base_url=host.docker_url)
        try:
            for container in engine.api.containers(
                filters={"label": f"berth.service={service}", "status": "running"}
            ):
                counts[container["Labels"]["berth.task-id"]] += 1
        finally:
            engine.close()
    return counts


def _wait_running(admin: Berth, service: str, count: int, definition: str, timeout: float = 120) -> None:
    def done() -> bool | None:
        running = admin.running("default", service)
        ok = len(running) == count and {definition_of(t) for t in running} == {definition}
        return True if ok else None

    wait_until(done, timeout, f"{service}: {count} tasks of {definition} running")


def test_every_replica_serves_the_operator_api(ha_lab: Lab) -> None:
    for replica in ha_lab.replicas:
        Berth(replica.address, ha_lab.controlplane.admin_config).ok("cluster", "list")
    assert ha_lab.leader() in ha_lab.replicas


def test_a_new_leader_finishes_a_rollout_after_kill_9_of_the_leader(
    ha_lab: Lab, admin: Berth, tmp_path: Path
) -> None:
    name = "ha-roll"
    admin.register(name, _revision("v1"), tmp_path)
    admin.ok(
        "service", "create", "--name", name, "--task-definition", f"{name}:1", "--desired-count", str(DESIRED)
    )
    try:
        _wait_running(admin, name, DESIRED, f"{name}:1")
        admin.register(name, _revision("v2"), tmp_path)
        admin.ok("service", "update", name, "--task-definition", f"{name}:2")

        def under_way() -> bool | None:
            return (
                True if any(definition_of(t) == f"{name}:2" for t in admin.running("default", name)) else None
            )

        wait_until(under_way, 60, "the rollout under way")
        leader = ha_lab.leader()
        leader.kill9()
        killed = time.monotonic()
        try:
            successor = ha_lab.leader(timeout=LEADER_TTL + GRACE + 10)
            failover = time.monotonic() - killed
            print(
                f"leader failover: {failover:.1f} s from kill -9 to a new leader "
                f"(leader TTL {LEADER_TTL} s, node grace {GRACE} s; measured on a busy machine)",
                file=sys.stderr,
            )
            assert successor is not leader
            assert failover <= LEADER_TTL + GRACE + 3
            waited = admin("service", "wait", name, "--timeout", "180")
            assert waited.exit_code == 0, waited.stdout + waited.stderr
            _wait_running(admin, name, DESIRED, f"{name}:2")
            described = admin.ok("service", "describe", name, "-o", "json").json()
            assert [d["id"] for d in described["deployments"]] == ["ecs-svc/2"]

            def no_leftovers() -> Counter[str] | None:
                counts = _containers_per_task(ha_lab, name)
                return counts if sum(counts.values()) == DESIRED else None

            counts, _ = wait_until(no_leftovers, 30, "old containers gone")
            assert max(counts.values()) == 1, f"a task runs twice: {counts}"
        finally:
            leader.restart()
        # The restarted replica serves again (a follower now).
        Berth(leader.address, ha_lab.controlplane.admin_config).ok("service", "describe", name)
    finally:
        delete_services(admin, [name])


def test_cli_commands_succeed_while_an_etcd_member_is_dead(ha_lab: Lab, admin: Berth, tmp_path: Path) -> None:
    assert ha_lab.etcd is not None
    name = "ha-etcd"
    admin.register(name, _revision("v1"), tmp_path)
    admin.ok("service", "create", "--name", name, "--task-definition", f"{name}:1", "--desired-count", "2")
    try:
        _wait_running(admin, name, 2, f"{name}:1")
        # Every replica's store starts on the first member: the one the leader talks to.
        victim = ha_lab.etcd.members[0]
        raft_leader = ha_lab.etcd.leader()
        victim.kill9()
        try:
            commands = 0
            started = time.monotonic()
            desired = 2
            while time.monotonic() - started < 15:
                admin.ok("service", "list")
                admin.ok("task", "list", "--cluster", "default")
                desired = 3 if desired == 2 else 2
                admin.ok("service", "update", name, "--desired-count", str(desired))
                admin.ok("service", "describe", name)
                commands += 4
            print(
                f"{commands} CLI commands while etcd member {victim.name} was dead "
                f"(it was {'' if raft_leader is victim else 'not '}etcd's raft leader): all succeeded",
                file=sys.stderr,
            )
            admin.ok("service", "update", name, "--desired-count", "3")
            _wait_running(admin, name, 3, f"{name}:1", timeout=60)
            counts = _containers_per_task(ha_lab, name)
            wait_until(
                lambda: sum(_containers_per_task(ha_lab, name).values()) == 3 or None, 30, "3 containers"
            )
            assert max(counts.values()) == 1, f"a task runs twice: {counts}"
        finally:
            victim.start()
            ha_lab.etcd.wait_healthy(members=[victim])
        admin.ok("service", "update", name, "--desired-count", "1")
        _wait_running(admin, name, 1, f"{name}:1", timeout=60)
    finally:
        delete_services(admin, [name])
