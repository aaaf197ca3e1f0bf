"""The chaos test's pure parts: the seeded schedule, the ledger of acknowledged writes, and the
invariants over an observation (berth/testing/chaos)."""

from __future__ import annotations

import random
import signal
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest

from berth.testing.chaos.invariants import ContainerState, Observation, ServiceState, TaskState, violations
from berth.testing.chaos.ledger import Ledger
from berth.testing.chaos.probe import ProbeCount, parse
from berth.testing.chaos.schedule import kind_of, schedule
from berth.testing.chaos.victims import kill_containers, victims_of
from berth.testing.lab import LabHost

VICTIMS = ["controlplane", "agent-h1", "agent-h2", "agent-h3", "crash-h2", "crash-h3", "cut-h2", "cut-h3"]


def test_the_same_seed_gives_the_same_schedule_and_another_seed_another() -> None:
    first = schedule(7, VICTIMS, 20, longest_down=8, longest_calm=5)
    assert first == schedule(7, list(reversed(VICTIMS)), 20, longest_down=8, longest_calm=5)
    assert first != schedule(8, VICTIMS, 20, longest_down=8, longest_calm=5)
    assert [r.index for r in first] == list(range(1, 21))


def test_victims_are_drawn_kind_first_and_downtimes_straddle_the_grace() -> None:
    plan = schedule(1, VICTIMS, 400, longest_down=8, longest_calm=5)
    kinds = [kind_of(r.victim) for r in plan]
    # Four kinds, each about a quarter, although agents are three of the eight victims.
    assert {kinds.count(k) for k in ("controlplane", "agent", "crash", "cut")} <= set(range(70, 131))
    assert all(0.5 <= r.down <= 8 and 1 <= r.calm <= 5 for r in plan)
    assert any(r.down < 3 for r in plan) and any(r.down > 3 for r in plan)


@pytest.mark.parametrize(
    ("history", "allowed"),
    [
        ([(3, True)], {3}),
        ([(3, True), (5, True)], {5}),
        # A failed write may have happened or not.
        ([(3, True), (5, False)], {3, 5}),
        ([(3, True), (5, False), (4, False)], {3, 4, 5}),
        # ... but an acknowledged one after it settles the question.
        ([(3, True), (5, False), (4, True)], {4}),
        ([(5, False)], {5}),
        ([], set()),
    ],
)
def test_the_final_value_is_the_last_acknowledged_or_a_later_attempt(
    history: list[tuple[int, bool]], allowed: set[int]
) -> None:
    ledger = Ledger()
    for value, acknowledged in history:
        ledger.record("web/count", value, acknowledged)
    assert ledger.allowed("web/count") == allowed


def _ledger(count: int = 2, definition: str = "web:2") -> Ledger:
    ledger = Ledger()
    ledger.record("web/exists", True, True)
    ledger.record("web/count", count, True)
    ledger.record("web/taskdef", definition, True)
    return ledger


def _converged(**changes: object) -> Observation:
    """web, 2 tasks on web:2, one per host, every node READY; `changes` replace fields."""
    fields: dict[str, object] = {
        "services": {"web": ServiceState("web", "ACTIVE", 2, "web:2", ((2, "web:2", "COMPLETED"),))},
        "tasks": (
            TaskState("t1", "web", "web:2", "RUNNING", "RUNNING", "h1"),
            TaskState("t2", "web", "web:2", "RUNNING", "RUNNING", "h2"),
        ),
        "containers": (ContainerState("h1", "t1", "web"), ContainerState("h2", "t2", "web")),
        "nodes": {"h1": "READY", "h2": "READY"},
    }
    fields.update(changes)
    return Observation(**fields)  # type: ignore[arg-type]


def test_a_converged_cluster_breaks_nothing() -> None:
    assert violations(_converged(), _ledger()) == []


@pytest.mark.parametrize(
    ("observed", "ledger", "broken"),
    [
        (_converged(), _ledger(count=3), "service web: desired count 2, acknowledged 3 last"),
        (_converged(), _ledger(definition="web:3"), "service web: task definition web:2, acknowledged"),
        (
            _converged(containers=(ContainerState("h1", "t1", "web"), ContainerState("h3", "t1", "web"))),
            _ledger(),
            "task t1 runs 2 times (on h1, h3)",
        ),
        (
            _converged(containers=(ContainerState("h1", "t1", "web"),)),
            _ledger(),
            "service web: 1 containers running on the engines, desired 2 (h1: 1)",
        ),
        (
            _converged(
                tasks=(
                    TaskState("t1", "web", "web:2", "RUNNING", "RUNNING", "h1"),
                    TaskState("t2", "web", "web:2", "RUNNING", "RUNNING", "h2"),
                    TaskState("t3", "web", "web:2", "PENDING", "RUNNING", ""),
                )
            ),
            _ledger(),
            "task t3 of web stuck PENDING",
        ),
        (
            _converged(
                tasks=(
                    TaskState("t1", "web", "web:2", "RUNNING", "RUNNING", "h1"),
                    TaskState("t2", "web", "web:2", "RUNNING", "STOPPED", "h2"),
                )
            ),
            _ledger(),
            "task t2 of web told to stop, still RUNNING",
        ),
        (
            _converged(services={"web": ServiceState("web", "DRAINING", 2, "web:2", ())}),
            _ledger(),
            "service web: still DRAINING",
        ),
        (
            _converged(
                services={
                    "web": ServiceState(
                        "web", "ACTIVE", 2, "web:2", ((3, "web:3", "IN_PROGRESS"), (2, "web:2", "COMPLETED"))
                    )
                }
            ),
            _ledger(),
            "service web: deployments not settled",
        ),
        (_converged(services={}), _ledger(), "service web: gone, but its create was acknowledged"),
        (_converged(nodes={"h1": "READY", "h2": "DOWN"}), _ledger(), "node h2 is DOWN"),
        (
            _converged(containers=(*_converged().containers, ContainerState("h3", "t9", "tmp-1"))),
            _ledger(),
            "container of task t9 (service tmp-1) still running on h3",
        ),
    ],
)
def test_each_broken_invariant_is_named(observed: Observation, ledger: Ledger, broken: str) -> None:
    assert any(line.startswith(broken) for line in violations(observed, ledger)), violations(observed, ledger)


def test_a_deleted_service_must_be_gone_and_an_unacknowledged_delete_may_be_either() -> None:
    ledger = _ledger()
    ledger.record("tmp-1/exists", False, True)
    ledger.record("tmp-1/exists", True, True)
    ledger.record("tmp-1/count", 1, True)
    ledger.record("tmp-1/exists", False, True)
    tmp = ServiceState("tmp-1", "ACTIVE", 1, "tmp:1", ((1, "tmp:1", "COMPLETED"),))
    still = _converged(services={**_converged().services, "tmp-1": tmp})
    assert "service tmp-1: still exists, but its delete was acknowledged" in violations(still, ledger)
    assert violations(_converged(), ledger) == []
    unsure = _ledger()
    unsure.record("tmp-1/exists", False, True)
    unsure.record("tmp-1/exists", True, False)
    assert violations(_converged(), unsure) == []


def test_a_crashed_host_loses_the_processes_of_its_own_containers_only(tmp_path: Path) -> None:
    # cgroup v1: the same container's processes are listed under each controller.
    for controller in ("pids", "memory"):
        container = tmp_path / controller / "berthlab-h2" / "abc123"
        container.mkdir(parents=True)
        (container / "cgroup.procs").write_text("101\n102\n")
        (tmp_path / controller / "berthlab-h2" / "cgroup.procs").write_text("")
        other = tmp_path / controller / "berthlab-h3" / "def456"
        other.mkdir(parents=True)
        (other / "cgroup.procs").write_text("201\n")
    killed: list[tuple[int, int]] = []
    count = kill_containers(LabHost(2, "cp"), lambda pid, sig: killed.append((pid, sig)), tmp_path)
    assert count == 2 and killed == [(101, signal.SIGKILL), (102, signal.SIGKILL)]


@dataclass
class _Member:
    name: str


@dataclass
class _FakeLab:
    hosts: list[LabHost]
    controlplane: object = None
    replicas: list[object] = field(default_factory=list)
    etcd: object = None


def test_the_victims_follow_from_what_the_lab_has() -> None:
    hosts = [LabHost(i, "cp") for i in (1, 2, 3)]
    single = victims_of(_FakeLab(hosts), "h1", random.Random(0))  # type: ignore[arg-type]
    assert [v.name for v in single] == [
        "controlplane", "agent-h1", "agent-h2", "crash-h2", "cut-h2", "agent-h3", "crash-h3", "cut-h3",
    ]  # fmt: skip
    etcd = SimpleNamespace(members=[_Member("e0"), _Member("e1"), _Member("e2")])
    ha = _FakeLab(hosts, replicas=[object(), object(), object()], etcd=etcd)
    names = [v.name for v in victims_of(ha, "h1", random.Random(0))]  # type: ignore[arg-type]
    assert names[:5] == ["leader", "follower", "etcd-e0", "etcd-e1", "etcd-e2"]
    assert "controlplane" not in names and "crash-h1" not in names and "cut-h1" not in names


def test_the_vip_clients_output_is_read_back_as_requests() -> None:
    output = "1.500 ok\n2.000 fail ConnectionRefusedError\n2.5 fail status b'HTTP/1.0 503'\ndone\n3.0 o"
    requests = parse(output)
    assert [(r.at, r.ok, r.why) for r in requests] == [
        (1.5, True, ""),
        (2.0, False, "ConnectionRefusedError"),
        (2.5, False, "status b'HTTP/1.0 503'"),
    ]
    assert ProbeCount.of(requests) == ProbeCount(
        3, 2, ("ConnectionRefusedError", "status b'HTTP/1.0 503'"), longest_outage=0.5
    )


def test_the_longest_outage_is_the_longest_stretch_of_failed_requests() -> None:
    requests = parse("1.0 fail A\n1.5 fail A\n2.0 ok\n3.0 fail B\n4.0 fail B\n5.2 fail B\n6.0 ok\n7.0 fail C")
    assert ProbeCount.of(requests).longest_outage == pytest.approx(2.2)
