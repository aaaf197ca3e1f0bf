"""The control plane's usage window and utilization arithmetic (controlplane.usage)."""

from __future__ import annotations

import math

import pytest

from berth.errors import InvalidArgument
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb
from controlplane import usage as u

T1, T2, T3 = "a" * 32, "b" * 32, "c" * 32
MIB = 1024 * 1024


def task(
    task_id: str,
    node: str = "n1",
    status: pb.TaskStatus.ValueType = pb.RUNNING,
    cpu: int = 512,
    memory: int = 256,
    started: float | None = 0.0,
    containers: tuple[str, ...] = ("web",),
) -> pb.Task:
    t = pb.Task(
        id=task_id,
        cluster="default",
        service="web",
        node_id=node,
        last_status=status,
        cpu=cpu,
        memory=memory,
        containers=[pb.ContainerState(name=n) for n in containers],
    )
    if started is not None:
        t.started_at.FromNanoseconds(int(started * 1e9))
    return t


def report(*tasks: tuple[str, list[tuple[str, float, int]]]) -> agent_pb.UsageReport:
    message = agent_pb.UsageReport(
        tasks=[
            agent_pb.TaskUsage(
                task_id=task_id,
                containers=[pb.ContainerUsage(name=n, cpu_units=c, memory_bytes=m) for n, c, m in containers],
            )
            for task_id, containers in tasks
        ]
    )
    message.sampled_at.FromSeconds(1_700_000_000)
    return message


def window(*tasks: pb.Task) -> u.UsageWindow:
    by_id = {t.id: t for t in tasks}
    return u.UsageWindow(by_id.get)


def test_record_and_latest() -> None:
    w = window(task(T1, containers=("web", "sidecar")))
    w.record("n1", report((T1, [("web", 256.0, 100 * MIB), ("sidecar", 256.0, 28 * MIB)])), now=1000.0)
    sample = w.task_latest(T1)
    assert sample is not None and sample.cpu_units == 512.0 and sample.memory_bytes == 128 * MIB
    assert [c.cpu_units for c in w.container_samples(T1, "web")] == [256.0]


def test_other_nodes_tasks_are_refused() -> None:
    w = window(task(T1, node="n1"), task(T2, node="n2"), task(T3, node="n1", status=pb.STOPPED))
    w.record("n1", report((T1, [("web", 1.0, 1)]), (T2, [("web", 1.0, 1)]), (T3, [("web", 1.0, 1)])), 1.0)
    assert w.task_latest(T1) is not None
    assert w.task_latest(T2) is None  # n2's task: n1 cannot speak for it
    assert w.task_latest(T3) is None  # stopped
    assert w.task_latest("d" * 32) is None


def test_unknown_containers_are_left_out() -> None:
    w = window(task(T1, containers=("web",)))
    w.record("n1", report((T1, [("web", 1.0, 1), ("other", 9.0, 9)])), 1.0)
    sample = w.task_latest(T1)
    assert sample is not None and [c.name for c in sample.containers] == ["web"]


@pytest.mark.parametrize(
    "bad",
    [
        report(("not-a-task-id", [("web", 1.0, 1)])),
        report((T1, [("web", math.nan, 1)])),
        report((T1, [("web", math.inf, 1)])),
        report((T1, [("web", -1.0, 1)])),
        report((T1, [("web", 1e12, 1)])),
        report((T1, [("we b", 1.0, 1)])),
        report((T1, [("web", 1.0, 1), ("web", 1.0, 1)])),
        report((T1, [("web", 1.0, 1)]), (T1, [("web", 1.0, 1)])),
        report((T1, [(f"c{i}", 1.0, 1) for i in range(11)])),
        report(*[(f"{i:032x}", []) for i in range(1001)]),
        report((T1, [("web", 1.0, (64 << 40) + 1)])),
    ],
)
def test_malformed_reports_are_refused_whole(bad: agent_pb.UsageReport) -> None:
    w = window(task(T1))
    w.record("n1", report((T1, [("web", 5.0, 5)])), 1.0)
    with pytest.raises(InvalidArgument):
        w.record("n1", bad, 2.0)
    sample = w.task_latest(T1)
    assert sample is not None and sample.at == 1.0  # nothing changed


def test_a_task_missing_from_its_nodes_next_report_is_forgotten() -> None:
    w = window(task(T1), task(T2))
    w.record("n1", report((T1, [("web", 1.0, 1)]), (T2, [("web", 1.0, 1)])), 1.0)
    w.record("n1", report((T2, [("web", 1.0, 1)])), 2.0)
    assert w.task_latest(T1) is None and w.task_latest(T2) is not None
    w.record("n1", report(), 3.0)
    assert w.task_ids() == []


def test_a_task_moved_to_another_node_keeps_its_new_figures() -> None:
    moving = task(T1, node="n1")
    w = u.UsageWindow({T1: moving}.get)
    w.record("n1", report((T1, [("web", 1.0, 1)])), 1.0)
    moving.node_id = "n2"
    w.record("n2", report((T1, [("web", 2.0, 2)])), 2.0)
    w.record("n1", report(), 3.0)  # the old node no longer runs it: that says nothing of n2's copy
    sample = w.task_latest(T1)
    assert sample is not None and sample.node_id == "n2" and len(w.container_samples(T1, "web")) == 1


def test_window_is_bounded_in_count_and_time() -> None:
    w = window(task(T1), task(T2, node="n2"))
    for i in range(u.MAX_SAMPLES + 50):
        w.record("n1", report((T1, [("web", float(i), 1)])), float(i))
    assert len(w.container_samples(T1, "web")) == u.MAX_SAMPLES
    w.record("n2", report((T2, [("web", 1.0, 1)])), 10_000.0)
    w.expire(10_000.0)
    assert w.task_latest(T1) is None  # n1 fell silent for a whole window
    assert w.task_latest(T2) is not None


def test_recent_follows_the_tasks_own_interval() -> None:
    w = window(task(T1))
    w.record("n1", report((T1, [("web", 1.0, 1)])), 100.0)
    assert w.recent(T1, 114.0) is not None  # 3 x the default 5 s
    assert w.recent(T1, 116.0) is None
    w.record("n1", report((T1, [("web", 1.0, 1)])), 120.0)  # the agent reports every 20 s
    assert w.recent(T1, 170.0) is not None
    assert w.recent(T1, 181.0) is None


@pytest.mark.parametrize(
    ("cpu", "memory", "metric", "expected"),
    [
        (512, 256, "cpu", 50.0),  # 256 units used of 512
        (256, 256, "cpu", 100.0),
        (128, 256, "cpu", 200.0),  # over its reservation: more than 100 %
        (0, 256, "cpu", None),  # reserves no CPU: no CPU utilization
        (512, 512, "memory", 25.0),  # 128 MiB of 512
        (512, 0, "memory", None),
    ],
)
def test_task_utilization(cpu: int, memory: int, metric: str, expected: float | None) -> None:
    sample = u.TaskSample(T1, "n1", 1.0, (u.ContainerSample("web", 1.0, 256.0, 128 * MIB),))
    assert u.task_utilization(sample, task(T1, cpu=cpu, memory=memory), metric) == expected


def test_unknown_metric_is_an_error() -> None:
    sample = u.TaskSample(T1, "n1", 1.0, ())
    with pytest.raises(ValueError, match="unknown metric"):
        u.task_utilization(sample, task(T1), "disk")


def test_service_utilization_averages_running_recent_warm_tasks() -> None:
    now = 1000.0
    tasks = [
        task(T1, started=0.0),
        task(T2, started=0.0),
        task(T3, started=990.0),  # 10 s old: warming up
        task("d" * 32, status=pb.PENDING, started=None),
        task("e" * 32, started=0.0),  # running, no sample: missing
        task("f" * 32, started=0.0, cpu=0),  # reserves no CPU: missing for cpu
    ]
    w = window(*tasks)
    w.record(
        "n1",
        report(
            (T1, [("web", 512.0, 1)]),
            (T2, [("web", 256.0, 1)]),
            (T3, [("web", 5000.0, 1)]),
            ("f" * 32, [("web", 100.0, 1)]),
        ),
        now - 1,
    )
    observed = u.service_utilization(w, tasks, "cpu", now, warmup=60.0)
    assert observed == u.Observation(value=75.0, counted=2, warming=1, missing=2)


def test_service_utilization_none_when_nothing_counts() -> None:
    tasks = [task(T1, started=995.0), task(T2, status=pb.PENDING)]
    w = window(*tasks)
    w.record("n1", report((T1, [("web", 512.0, 1)])), 999.0)
    assert u.service_utilization(w, tasks, "cpu", 1000.0, warmup=60.0) is None
    assert u.service_utilization(w, [], "cpu", 1000.0, warmup=0.0) is None


def test_stale_samples_do_not_count() -> None:
    tasks = [task(T1)]
    w = window(*tasks)
    w.record("n1", report((T1, [("web", 512.0, 1)])), 900.0)
    assert u.service_utilization(w, tasks, "cpu", 1000.0, warmup=0.0) is None
