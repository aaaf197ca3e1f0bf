"""The agent's usage sampling (agent.usage): cgroup v1/v2 layouts, CPU deltas, the engine fallback."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from agent.main import parse_args
from agent.runtime.driver import ContainerPhase, ObservedContainer, ObservedTask
from agent.usage import (
    CgroupFiles,
    Reading,
    UsageSampler,
    cpu_units,
    locate,
    parse_proc_cgroup,
    read_cgroup,
    reading_from_stats,
    running_containers,
)

CID = "9ab2b7205dd17e1d5073c73418784c29aa660a7356a07ce8a390ba2e654403fb"
V1_PROC = (
    f"9:name=systemd:/docker/{CID}\n4:memory:/docker/{CID}\n2:cpuacct:/docker/{CID}\n"
    f"1:cpu:/docker/{CID}\n0::/docker/{CID}\n"
)
V1_COMBINED = f"5:cpu,cpuacct:/docker/{CID}\n4:memory:/docker/{CID}\n"
V2_PROC = f"0::/system.slice/docker-{CID}.scope\n"


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def v1_tree(root: Path, cpu_mount: str = "cpuacct", cpu_ns: int = 5_000_000_000) -> None:
    write(root / cpu_mount / "docker" / CID / "cpuacct.usage", f"{cpu_ns}\n")
    write(root / "memory" / "docker" / CID / "memory.usage_in_bytes", "104857600\n")
    write(
        root / "memory" / "docker" / CID / "memory.stat",
        "cache 41943040\ninactive_file 1\ntotal_cache 41943040\ntotal_inactive_file 20971520\n",
    )


def v2_tree(root: Path, usage_usec: int = 2_500_000) -> Path:
    directory = root / "system.slice" / f"docker-{CID}.scope"
    write(directory / "cpu.stat", f"usage_usec {usage_usec}\nuser_usec 1\nsystem_usec 2\n")
    write(directory / "memory.current", "52428800\n")
    write(directory / "memory.stat", "anon 1\nfile 2\ninactive_file 10485760\nactive_file 3\n")
    return directory


def test_proc_cgroup_parsing_v1_and_v2() -> None:
    paths = parse_proc_cgroup(V1_PROC)
    assert paths["cpuacct"] == f"/docker/{CID}"
    assert paths["memory"] == f"/docker/{CID}"
    assert paths[""] == f"/docker/{CID}"
    assert parse_proc_cgroup(V1_COMBINED)["cpuacct"] == f"/docker/{CID}"
    assert parse_proc_cgroup(V2_PROC) == {"": f"/system.slice/docker-{CID}.scope"}
    assert parse_proc_cgroup("garbage\n\n") == {}


def test_v1_reading_leaves_out_inactive_file(tmp_path: Path) -> None:
    v1_tree(tmp_path)
    files = locate(parse_proc_cgroup(V1_PROC), tmp_path)
    assert files is not None and files.cpuacct is not None and files.unified is None
    reading = read_cgroup(files, at=10.0)
    assert reading == Reading(10.0, 5_000_000_000, 104857600 - 20971520)


def test_v1_combined_cpu_mount(tmp_path: Path) -> None:
    v1_tree(tmp_path, cpu_mount="cpu,cpuacct")
    files = locate(parse_proc_cgroup(V1_COMBINED), tmp_path)
    assert files is not None and files.cpuacct == tmp_path / "cpu,cpuacct" / "docker" / CID


def test_v2_reading(tmp_path: Path) -> None:
    directory = v2_tree(tmp_path)
    files = locate(parse_proc_cgroup(V2_PROC), tmp_path)
    assert files == CgroupFiles(unified=directory)
    assert read_cgroup(files, at=1.0) == Reading(1.0, 2_500_000_000, 52428800 - 10485760)


def test_hybrid_host_without_v2_memory_reads_v1(tmp_path: Path) -> None:
    # A hybrid host's unified/ tree has cpu.stat but no memory controller: v1 it is.
    write(tmp_path / "unified" / "docker" / CID / "cpu.stat", "usage_usec 1\n")
    v1_tree(tmp_path)
    files = locate(parse_proc_cgroup(V1_PROC), tmp_path)
    assert files is not None and files.unified is None and files.memory is not None


def test_paths_leaving_the_root_are_refused(tmp_path: Path) -> None:
    v1_tree(tmp_path / "inner")
    hostile = "4:memory:/../../inner/memory/docker/x\n2:cpuacct:/../../etc\n0::/../..\n"
    assert locate(parse_proc_cgroup(hostile), tmp_path / "root") is None


def test_missing_files_locate_nothing(tmp_path: Path) -> None:
    assert locate(parse_proc_cgroup(V2_PROC), tmp_path) is None


@pytest.mark.parametrize(
    ("previous", "current", "expected"),
    [
        (Reading(0.0, 0, 0), Reading(1.0, 1_000_000_000, 0), 1024.0),  # one core for a second
        (Reading(0.0, 0, 0), Reading(2.0, 1_000_000_000, 0), 512.0),  # half a core
        (Reading(0.0, 5, 0), Reading(5.0, 5, 0), 0.0),  # idle
        (Reading(0.0, 10, 0), Reading(1.0, 5, 0), None),  # counter went back: restarted
        (Reading(1.0, 0, 0), Reading(1.0, 10, 0), None),  # no time passed
    ],
)
def test_cpu_units_from_two_readings(previous: Reading, current: Reading, expected: float | None) -> None:
    assert cpu_units(previous, current) == expected


def test_reading_from_engine_stats() -> None:
    stats = {
        "cpu_stats": {"cpu_usage": {"total_usage": 7}},
        "memory_stats": {"usage": 1000, "stats": {"inactive_file": 300}},
    }
    assert reading_from_stats(stats, 3.0) == Reading(3.0, 7, 700)
    v1 = {"cpu_stats": {"cpu_usage": {"total_usage": 7}}, "memory_stats": {"usage": 1000, "stats": {}}}
    assert reading_from_stats(v1, 3.0).memory_bytes == 1000


class FakeEngine:
    def __init__(self, pid: int = 0) -> None:
        self._pid = pid
        self.cpu_ns = 0
        self.stats_calls = 0
        self.pid_calls = 0

    def pid(self, runtime_id: str) -> int:
        self.pid_calls += 1
        return self._pid

    def stats(self, runtime_id: str) -> Mapping[str, Any]:
        self.stats_calls += 1
        return {"cpu_stats": {"cpu_usage": {"total_usage": self.cpu_ns}}, "memory_stats": {"usage": 4096}}


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_sampler_uses_cgroups_found_once_from_the_pid(tmp_path: Path) -> None:
    cgroups, proc = tmp_path / "cg", tmp_path / "proc"
    directory = v2_tree(cgroups, usage_usec=0)
    write(proc / "42" / "cgroup", V2_PROC)
    engine, clock = FakeEngine(pid=42), Clock()
    sampler = UsageSampler(engine, cgroups, proc, clock)
    running = {"t1": [("web", CID)]}
    assert sampler.sample(running) == []  # the first reading has nothing to compare with
    clock.t += 2.0
    write(directory / "cpu.stat", "usage_usec 1000000\n")  # half a core over two seconds
    [task] = sampler.sample(running)
    assert task.task_id == "t1"
    assert [(c.name, c.cpu_units, c.memory_bytes) for c in task.containers] == [("web", 512.0, 41943040)]
    assert engine.pid_calls == 1 and engine.stats_calls == 0


def test_sampler_falls_back_to_engine_stats(tmp_path: Path) -> None:
    engine, clock = FakeEngine(pid=0), Clock()
    sampler = UsageSampler(engine, tmp_path, tmp_path, clock)
    sampler.sample({"t1": [("web", "abc")]})
    clock.t += 1.0
    engine.cpu_ns = 2_000_000_000
    [task] = sampler.sample({"t1": [("web", "abc")]})
    assert task.containers[0].cpu_units == 2048.0
    assert task.containers[0].memory_bytes == 4096
    assert engine.stats_calls == 2


def test_sampler_forgets_containers_that_stopped(tmp_path: Path) -> None:
    engine, clock = FakeEngine(), Clock()
    sampler = UsageSampler(engine, tmp_path, tmp_path, clock)
    sampler.sample({"t1": [("web", "abc")]})
    sampler.sample({})
    clock.t += 1.0
    assert sampler.sample({"t1": [("web", "abc")]}) == []  # starts over: no stale delta


def test_running_containers_only() -> None:
    observed = {
        "t1": ObservedTask(
            "t1",
            (
                ObservedContainer("web", "r1", ContainerPhase.RUNNING, True),
                ObservedContainer("init", "r2", ContainerPhase.EXITED, False),
            ),
        ),
        "t2": ObservedTask("t2", (ObservedContainer("web", "r3", ContainerPhase.EXITED, True),)),
    }
    assert running_containers(observed) == {"t1": [("web", "r1")]}


SETTINGS = ["--server", "127.0.0.1:7400", "--data-dir", "/tmp/x", "--name", "n1", "--address", "10.0.0.1"]
SIZES = ["--cpu-units", "1024", "--memory-mib", "512"]


@pytest.mark.parametrize(("extra", "expected"), [([], 5.0), (["--usage-interval", "1"], 1.0)])
def test_usage_interval(extra: list[str], expected: float) -> None:
    settings, _ = parse_args([*SETTINGS, *SIZES, *extra])
    assert settings.usage_interval == expected


@pytest.mark.parametrize("bad", ["0.5", "61", "nan", "inf", "-1"])
def test_usage_interval_out_of_bounds_is_refused(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args([*SETTINGS, *SIZES, "--usage-interval", bad])
    assert "give 1 to 60 seconds" in capsys.readouterr().err
