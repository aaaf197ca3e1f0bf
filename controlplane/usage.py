"""Tasks' CPU and memory as agents report them: a short window in memory, and utilization.

Agents send a UsageReport every few seconds (agent/usage.py). `UsageWindow`
keeps, per task and per container, the samples of the last WINDOW_SECONDS
(at most MAX_SAMPLES each), in this replica's memory only: never in etcd,
lost on restart, and filled again within two intervals. A report is checked
at the boundary (sizes, names, finite numbers; a malformed one is refused
whole) and only tasks assigned to the reporting node, not stopped, are kept:
one node cannot speak for another's tasks. A task absent from its node's
next report has stopped there and is forgotten, and so is one whose node
fell silent for a whole window.

Utilization is what ECS measures: a task's CPU against its CPU reservation
(task.cpu units), its memory against its memory reservation (task.memory
MiB). A task that reserves none of a resource has no utilization of it
(None): it is neither 0 % nor 100 %, and averaging it in would only mislead.
A service's utilization is the average over its RUNNING tasks with a recent
sample, leaving out tasks younger than the warm-up (start-up spikes).

Times are wall-clock seconds (time.time()), the clock of tasks' started_at.
"""

from __future__ import annotations

import logging
import math
import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from berth import usagelimits
from berth.errors import InvalidArgument
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb
from controlplane.metrics import AGENT_MESSAGES_REJECTED

log = logging.getLogger(__name__)

METRICS = ("cpu", "memory")
WINDOW_SECONDS = 600.0
MAX_SAMPLES = 600
# A task's latest sample is recent while younger than this many of its reporting intervals.
STALE_INTERVALS = 3
MIB = 1024 * 1024

_TASK_ID = re.compile(r"[0-9a-f]{32}")
_CONTAINER_NAME = re.compile(r"[A-Za-z0-9_-]{1,255}")
_MIN_SECONDS, _MAX_SECONDS = 0, 253_402_300_799


@dataclass(frozen=True)
class ContainerSample:
    name: str
    at: float
    cpu_units: float
    memory_bytes: int


@dataclass(frozen=True)
class TaskSample:
    """One report's figures for one task: its containers' and their sums."""

    task_id: str
    node_id: str
    at: float
    containers: tuple[ContainerSample, ...]

    @property
    def cpu_units(self) -> float:
        return sum(c.cpu_units for c in self.containers)

    @property
    def memory_bytes(self) -> int:
        return sum(c.memory_bytes for c in self.containers)


@dataclass(frozen=True)
class Observation:
    """A service's utilization (percent) and how many of its RUNNING tasks made it."""

    value: float
    counted: int
    warming: int
    missing: int


@dataclass
class _TaskWindow:
    node_id: str
    cluster: str
    service: str
    samples: deque[TaskSample] = field(default_factory=lambda: deque(maxlen=MAX_SAMPLES))


def check_report(report: agent_pb.UsageReport) -> None:
    """Shape and bounds of a usage report; InvalidArgument names the first fault."""
    if len(report.tasks) > usagelimits.MAX_TASKS:
        raise InvalidArgument(
            f"a usage report holds {len(report.tasks)} tasks: at most {usagelimits.MAX_TASKS}"
        )
    stamp = report.sampled_at
    if not (_MIN_SECONDS <= stamp.seconds <= _MAX_SECONDS and 0 <= stamp.nanos <= 999_999_999):
        raise InvalidArgument("usage sampled_at is not a valid time")
    seen: set[str] = set()
    for task in report.tasks:
        if not _TASK_ID.fullmatch(task.task_id):
            raise InvalidArgument(f"usage task_id {task.task_id[:40]!r} is not a task id (32 hex digits)")
        if task.task_id in seen:
            raise InvalidArgument(f"usage names task {task.task_id} twice")
        seen.add(task.task_id)
        if len(task.containers) > usagelimits.MAX_CONTAINERS:
            raise InvalidArgument(
                f"usage of task {task.task_id} holds {len(task.containers)} containers: "
                f"at most {usagelimits.MAX_CONTAINERS}"
            )
        names: set[str] = set()
        for container in task.containers:
            if not _CONTAINER_NAME.fullmatch(container.name) or container.name in names:
                raise InvalidArgument(f"usage of task {task.task_id}: bad or repeated container name")
            names.add(container.name)
            units = container.cpu_units
            if not (math.isfinite(units) and 0.0 <= units <= usagelimits.MAX_CPU_UNITS):
                raise InvalidArgument(
                    f"usage of task {task.task_id}: cpu_units {units!r} is out of range "
                    f"(0-{usagelimits.MAX_CPU_UNITS})"
                )
            if container.memory_bytes > usagelimits.MAX_MEMORY_BYTES:
                raise InvalidArgument(f"usage of task {task.task_id}: memory_bytes is out of range")


def _reporting(task: pb.Task | None, node_id: str) -> bool:
    return task is not None and task.node_id == node_id and task.last_status != pb.STOPPED


class UsageWindow:
    """The recent usage of every task whose node reports to this replica.

    task_of looks a task up (the cluster cache); the window trusts it to say
    which node a task is assigned to."""

    def __init__(self, task_of: Callable[[str], pb.Task | None]) -> None:
        self._task_of = task_of
        self._tasks: dict[str, _TaskWindow] = {}
        self._by_node: dict[str, set[str]] = {}
        self._next_expiry = 0.0

    def record(self, node_id: str, report: agent_pb.UsageReport, now: float) -> None:
        """Keep a node's report (InvalidArgument, and nothing kept, when it is malformed)."""
        check_report(report)
        kept: set[str] = set()
        refused = 0
        for usage in report.tasks:
            task = self._task_of(usage.task_id)
            if task is None or not _reporting(task, node_id):
                refused += 1
                continue
            known = {c.name for c in task.containers}
            containers = tuple(
                ContainerSample(c.name, now, c.cpu_units, c.memory_bytes)
                for c in usage.containers
                if not known or c.name in known
            )
            window = self._tasks.get(usage.task_id)
            if window is None or window.node_id != node_id:
                self.forget(usage.task_id)  # placed elsewhere before: its old figures are not this node's
                window = self._tasks[usage.task_id] = _TaskWindow(node_id, task.cluster, task.service)
            window.samples.append(TaskSample(usage.task_id, node_id, now, containers))
            kept.add(usage.task_id)
        if refused:
            AGENT_MESSAGES_REJECTED.labels("usage_task").inc(refused)
            log.warning("event=usage_refused node=%s tasks=%d reason=%r", node_id, refused, "not this node's")
        for gone in self._by_node.get(node_id, set()) - kept:
            window = self._tasks.get(gone)
            if window is not None and window.node_id == node_id:
                self.forget(gone)
        if kept:
            self._by_node[node_id] = kept
        else:
            self._by_node.pop(node_id, None)
        if now >= self._next_expiry:
            self.expire(now)
            self._next_expiry = now + 30.0

    def expire(self, now: float) -> None:
        """Forget tasks with no sample for a whole window (their node went silent), and old samples."""
        for task_id, window in list(self._tasks.items()):
            samples = window.samples
            while samples and samples[0].at < now - WINDOW_SECONDS:
                samples.popleft()
            if not samples:
                self.forget(task_id)

    def forget(self, task_id: str) -> None:
        window = self._tasks.pop(task_id, None)
        if window is not None:
            tasks = self._by_node.get(window.node_id)
            if tasks is not None:
                tasks.discard(task_id)

    def task_latest(self, task_id: str) -> TaskSample | None:
        window = self._tasks.get(task_id)
        return window.samples[-1] if window is not None and window.samples else None

    def recent(self, task_id: str, now: float) -> TaskSample | None:
        """The latest sample while it is recent: younger than STALE_INTERVALS of the task's own
        reporting interval (the gap between its last two samples, 1-60 s; 5 s until known)."""
        window = self._tasks.get(task_id)
        if window is None or not window.samples:
            return None
        latest = window.samples[-1]
        interval = usagelimits.DEFAULT_INTERVAL
        if len(window.samples) > 1:
            gap = latest.at - window.samples[-2].at
            interval = min(max(gap, usagelimits.MIN_INTERVAL), usagelimits.MAX_INTERVAL)
        return latest if now - latest.at <= STALE_INTERVALS * interval else None

    def container_samples(self, task_id: str, container: str) -> list[ContainerSample]:
        """The container's samples in the window, oldest first."""
        window = self._tasks.get(task_id)
        if window is None:
            return []
        return [c for sample in window.samples for c in sample.containers if c.name == container]

    def task_ids(self) -> list[str]:
        return list(self._tasks)

    def labels(self, task_id: str) -> tuple[str, str] | None:
        """(cluster, service) of a task in the window."""
        window = self._tasks.get(task_id)
        return (window.cluster, window.service) if window is not None else None


def task_utilization(sample: TaskSample, task: pb.Task, metric: str) -> float | None:
    """Percent of the task's reservation in use; None when it reserves none of it."""
    if metric == "cpu":
        return 100.0 * sample.cpu_units / task.cpu if task.cpu else None
    if metric == "memory":
        return 100.0 * sample.memory_bytes / (task.memory * MIB) if task.memory else None
    raise ValueError(f"unknown metric {metric!r}: use {' or '.join(METRICS)}")


def service_utilization(
    window: UsageWindow, tasks: Sequence[pb.Task], metric: str, now: float, warmup: float
) -> Observation | None:
    """The average utilization of the RUNNING tasks with a recent sample; tasks started less than
    `warmup` seconds ago are counted as warming, RUNNING ones with no recent figure as missing.
    None when no task counts."""
    values: list[float] = []
    warming = missing = 0
    for task in tasks:
        if task.last_status != pb.RUNNING:
            continue
        if task.HasField("started_at") and now - task.started_at.ToNanoseconds() / 1e9 < warmup:
            warming += 1
            continue
        sample = window.recent(task.id, now)
        value = task_utilization(sample, task, metric) if sample is not None else None
        if value is None:
            missing += 1
        else:
            values.append(value)
    if not values:
        return None
    return Observation(sum(values) / len(values), len(values), warming, missing)
