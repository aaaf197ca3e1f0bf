"""Per-task CPU and memory of this host's containers, sampled every --usage-interval seconds.

Each running container is found once: the engine's inspect gives its main
process, whose /proc/PID/cgroup names its cgroup; from then on a sample is a
few small file reads (cgroup v2: cpu.stat usage_usec, memory.current; v1:
cpuacct.usage, memory.usage_in_bytes). Memory leaves out reclaimable page
cache (inactive_file), as `docker stats` does. Where the cgroup files cannot
be read (another mount namespace, an unknown layout) the engine's one-shot
stats API is asked instead. All of it runs in one worker thread per round,
never on the event loop.

CPU is reported in CPU units (1024 = one core) from the difference between
two samples of the container's cumulative CPU time, so a container appears
in the second report after it starts. A counter that went backwards (the
container restarted) restarts the difference.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agent.runtime.driver import ContainerPhase, ObservedTask
from berth import usagelimits
from berth.clock import now
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC = Path("/proc")


@dataclass(frozen=True)
class Reading:
    """A container's cumulative CPU time and its current memory, at one instant (monotonic seconds)."""

    at: float
    cpu_ns: int
    memory_bytes: int


@dataclass(frozen=True)
class CgroupFiles:
    """Where one container's counters are: a v2 directory, or v1 cpuacct and memory directories."""

    unified: Path | None = None
    cpuacct: Path | None = None
    memory: Path | None = None


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """/proc/PID/cgroup as {controller: path}; the v2 hierarchy's controller is ""."""
    paths: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if not controllers:
            paths[""] = path
        for controller in controllers.split(","):
            if controller:
                paths[controller] = path
    return paths


def _inside(root: Path, relative: str) -> Path | None:
    """root/relative, refused when it would leave root (a path in /proc is not trusted blindly)."""
    candidate = (root / relative.lstrip("/")).resolve()
    return candidate if candidate.is_relative_to(root.resolve()) else None


def locate(paths: Mapping[str, str], root: Path = CGROUP_ROOT) -> CgroupFiles | None:
    """The counters' directories for a process's cgroups (v2 first, then v1), or None."""
    if "" in paths:
        # Pure v2 is mounted at the root; a hybrid host mounts it at unified/.
        for base in (root, root / "unified"):
            directory = _inside(base, paths[""])
            if directory and (directory / "cpu.stat").is_file() and (directory / "memory.current").is_file():
                return CgroupFiles(unified=directory)
    cpuacct = memory = None
    if "cpuacct" in paths:
        for mount in ("cpuacct", "cpu,cpuacct", "cpuacct,cpu"):
            directory = _inside(root / mount, paths["cpuacct"])
            if directory and (directory / "cpuacct.usage").is_file():
                cpuacct = directory
                break
    if "memory" in paths:
        directory = _inside(root / "memory", paths["memory"])
        if directory and (directory / "memory.usage_in_bytes").is_file():
            memory = directory
    if cpuacct is None or memory is None:
        return None
    return CgroupFiles(cpuacct=cpuacct, memory=memory)


def _stat_value(text: str, key: str) -> int:
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return 0


def read_cgroup(files: CgroupFiles, at: float) -> Reading:
    """The counters now; OSError or ValueError when they cannot be read (the container went away)."""
    if files.unified is not None:
        cpu_ns = _stat_value((files.unified / "cpu.stat").read_text(), "usage_usec") * 1000
        current = int((files.unified / "memory.current").read_text())
        inactive = _stat_value((files.unified / "memory.stat").read_text(), "inactive_file")
        return Reading(at, cpu_ns, max(0, current - inactive))
    assert files.cpuacct is not None and files.memory is not None
    cpu_ns = int((files.cpuacct / "cpuacct.usage").read_text())
    usage = int((files.memory / "memory.usage_in_bytes").read_text())
    inactive = _stat_value((files.memory / "memory.stat").read_text(), "total_inactive_file")
    return Reading(at, cpu_ns, max(0, usage - inactive))


def cpu_units(previous: Reading, current: Reading) -> float | None:
    """CPU units used between two readings (1024 = one core busy); None when there is no interval
    or the counter went backwards (the container restarted)."""
    elapsed = current.at - previous.at
    used = current.cpu_ns - previous.cpu_ns
    if elapsed <= 0 or used < 0:
        return None
    return min(used / (elapsed * 1e9) * 1024, float(usagelimits.MAX_CPU_UNITS))


def reading_from_stats(stats: Mapping[str, Any], at: float) -> Reading:
    """A Reading from the engine's stats API document (KeyError/TypeError/ValueError when malformed)."""
    cpu_ns = int(stats["cpu_stats"]["cpu_usage"]["total_usage"])
    memory = stats.get("memory_stats") or {}
    usage = int(memory.get("usage", 0))
    detail = memory.get("stats") or {}
    inactive = int(detail.get("inactive_file", detail.get("total_inactive_file", 0)))
    return Reading(at, cpu_ns, max(0, usage - inactive))


class EngineStats(Protocol):
    """The engine calls the sampler needs (blocking; called from its worker thread)."""

    def pid(self, runtime_id: str) -> int:
        """The container's main process id (0 when not running)."""
        ...

    def stats(self, runtime_id: str) -> Mapping[str, Any]:
        """The engine's one-shot stats document."""
        ...


class DockerEngineStats:
    """EngineStats over docker's low-level API client."""

    def __init__(self, api: Any) -> None:
        self._api = api

    def pid(self, runtime_id: str) -> int:
        return int(self._api.inspect_container(runtime_id)["State"]["Pid"] or 0)

    def stats(self, runtime_id: str) -> Mapping[str, Any]:
        result: Mapping[str, Any] = self._api.stats(runtime_id, stream=False, one_shot=True)
        return result


# A container's counters: found in cgroups, or read through the engine.
ENGINE = "engine"


class UsageSampler:
    """Turns running containers into TaskUsage, keeping each container's previous reading.

    Not thread-safe: one round at a time (the loop in `run_usage` awaits each)."""

    def __init__(
        self,
        engine: EngineStats,
        cgroup_root: Path = CGROUP_ROOT,
        proc: Path = PROC,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._cgroup_root = cgroup_root
        self._proc = proc
        self._clock = clock
        self._where: dict[str, CgroupFiles | str] = {}
        self._previous: dict[str, Reading] = {}

    def _find(self, runtime_id: str) -> CgroupFiles | str:
        try:
            pid = self._engine.pid(runtime_id)
            if pid > 0:
                text = (self._proc / str(pid) / "cgroup").read_text()
                files = locate(parse_proc_cgroup(text), self._cgroup_root)
                if files is not None:
                    return files
        except Exception as error:  # an engine or /proc hiccup: the engine's stats still work
            log.debug("event=cgroup_not_found container=%s error=%r", runtime_id[:12], str(error))
        return ENGINE

    def _read(self, runtime_id: str) -> Reading | None:
        where = self._where.get(runtime_id)
        if where is None:
            where = self._where[runtime_id] = self._find(runtime_id)
        try:
            if isinstance(where, CgroupFiles):
                return read_cgroup(where, self._clock())
            return reading_from_stats(self._engine.stats(runtime_id), self._clock())
        except Exception as error:
            # Gone, or restarted with a new process: look it up afresh next round.
            self._where.pop(runtime_id, None)
            log.debug("event=usage_unreadable container=%s error=%r", runtime_id[:12], str(error))
            return None

    def sample(self, running: Mapping[str, Sequence[tuple[str, str]]]) -> list[agent_pb.TaskUsage]:
        """One round over {task_id: [(container name, runtime id)]} (blocking: run it in a thread)."""
        seen: set[str] = set()
        tasks: list[agent_pb.TaskUsage] = []
        for task_id, containers in list(running.items())[: usagelimits.MAX_TASKS]:
            usage = agent_pb.TaskUsage(task_id=task_id)
            for name, runtime_id in containers[: usagelimits.MAX_CONTAINERS]:
                seen.add(runtime_id)
                current = self._read(runtime_id)
                if current is None:
                    self._previous.pop(runtime_id, None)
                    continue
                previous = self._previous.get(runtime_id)
                self._previous[runtime_id] = current
                units = cpu_units(previous, current) if previous is not None else None
                if units is not None:
                    usage.containers.append(
                        pb.ContainerUsage(name=name, cpu_units=units, memory_bytes=current.memory_bytes)
                    )
            if usage.containers:
                tasks.append(usage)
        for gone in set(self._previous) - seen:
            del self._previous[gone]
        for gone in set(self._where) - seen:
            del self._where[gone]
        return tasks


def running_containers(observed: Mapping[str, ObservedTask]) -> dict[str, list[tuple[str, str]]]:
    """{task_id: [(name, runtime id)]} of the containers that run now."""
    running: dict[str, list[tuple[str, str]]] = {}
    for task_id, task in observed.items():
        containers = [
            (c.name, c.runtime_id)
            for c in task.containers
            if c.phase is ContainerPhase.RUNNING and c.runtime_id
        ]
        if containers:
            running[task_id] = containers
    return running


def report(tasks: Iterable[agent_pb.TaskUsage]) -> agent_pb.UsageReport:
    return agent_pb.UsageReport(tasks=tasks, sampled_at=now())


async def run_usage(
    sampler: UsageSampler,
    observed: Callable[[], Mapping[str, ObservedTask]],
    send: Callable[[agent_pb.UsageReport], None],
    interval: float,
) -> None:
    """Sample every `interval` seconds and hand each report to `send` (which drops it while
    disconnected); a failed round is logged and the next one goes on."""
    while True:
        started = time.monotonic()
        try:
            tasks = await asyncio.to_thread(sampler.sample, running_containers(observed()))
            send(report(tasks))
        except Exception as error:
            log.warning("event=usage_sample_failed error=%r", str(error))
        await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))
