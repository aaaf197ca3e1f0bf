"""Right-sizing arithmetic (controlplane/rightsizing.py) and the task definition --apply registers."""

from __future__ import annotations

import pytest

from berth.cli.recommend import resized
from berth.v1 import operator_pb2 as api
from berth.v1 import resources_pb2 as pb
from controlplane.rightsizing import cpu_units, memory_mib, percentile, recommend
from controlplane.usage import ContainerSample

MIB = 1024 * 1024


@pytest.mark.parametrize(
    ("values", "percent", "expected"),
    [
        ([5.0], 90, 5.0),
        ([float(v) for v in range(1, 11)], 90, 9.0),
        ([float(v) for v in range(1, 11)], 99, 10.0),
        ([float(v) for v in range(100, 0, -1)], 90, 90.0),
        ([3.0, 1.0, 2.0], 50, 2.0),
    ],
)
def test_percentile_is_nearest_rank(values: list[float], percent: float, expected: float) -> None:
    assert percentile(values, percent) == expected


@pytest.mark.parametrize(
    ("p90", "expected"),
    [
        (0.0, 8),  # idle: the floor
        (6.0, 8),  # 6.9 -> 8
        (7.0, 16),  # 8.05 -> 16
        (100.0, 120),  # 115 -> 120
        (320.0, 368),  # 368 exactly stays
        (1024.0, 1184),  # 1177.6 -> 1184
    ],
)
def test_cpu_is_p90_plus_15_percent_in_steps_of_8(p90: float, expected: int) -> None:
    assert cpu_units(p90) == expected


@pytest.mark.parametrize(
    ("p99_bytes", "expected"),
    [
        (0, 6),  # the floor
        (1 * MIB, 6),  # 1.2 MiB -> floor
        (10 * MIB, 12),  # 12 MiB exactly
        (100 * MIB, 120),
        (100 * MIB + 1, 121),
    ],
)
def test_memory_is_p99_plus_20_percent_in_mib(p99_bytes: int, expected: int) -> None:
    assert memory_mib(p99_bytes) == expected


def _samples(count: int, every: float, cpu: float = 50.0, memory: int = 10 * MIB) -> list[ContainerSample]:
    return [ContainerSample("web", 1000.0 + i * every, cpu, memory) for i in range(count)]


WEB = pb.ContainerDefinition(name="web", cpu=512, memory=512, memory_reservation=256)


@pytest.mark.parametrize(
    ("samples", "reason"),
    [
        ([], "not enough data yet (0 samples over 0 s"),
        (_samples(9, 10.0), "not enough data yet (9 samples over 80 s"),
        (_samples(20, 1.0), "not enough data yet (20 samples over 19 s"),
    ],
)
def test_too_few_samples_recommend_nothing(samples: list[ContainerSample], reason: str) -> None:
    found = recommend(WEB, samples)
    assert found.cpu is None and found.memory_mib is None
    assert found.reason.startswith(reason)
    assert (found.current_cpu, found.current_memory_mib) == (512, 256)


def test_enough_samples_recommend_from_percentiles() -> None:
    samples = _samples(31, 1.0)
    samples[-1] = ContainerSample("web", samples[-1].at, 2000.0, 50 * MIB)  # one spike: above p90, at p99
    found = recommend(WEB, samples)
    assert found.reason == ""
    assert found.cpu == 64  # p90 = 50 -> 57.5 -> 64
    assert found.memory_mib == 60  # p99 of 31 samples is the maximum: 50 MiB -> 60
    assert (found.samples, found.window_seconds) == (31, 30.0)


def test_memory_reservation_else_hard_limit_is_current() -> None:
    assert recommend(pb.ContainerDefinition(name="a", memory=300), []).current_memory_mib == 300
    assert recommend(pb.ContainerDefinition(name="a"), []).current_memory_mib == 0


def _definition(*containers: pb.ContainerDefinition) -> pb.TaskDefinition:
    return pb.TaskDefinition(
        family="web", revision=3, container_definitions=containers, cpu=1024, memory=2048, pid_mode="task"
    )


def _row(name: str, cpu: int | None, memory: int | None, reason: str = "") -> api.ContainerRecommendation:
    row = api.ContainerRecommendation(container=name, reason=reason)
    if cpu is not None:
        row.recommended_cpu = cpu
    if memory is not None:
        row.recommended_memory_mib = memory
    return row


def test_apply_sets_cpu_and_reservation_and_keeps_the_rest() -> None:
    web = pb.ContainerDefinition(name="web", image="nginx", cpu=512, memory=512, memory_reservation=256)
    side = pb.ContainerDefinition(name="side", image="busybox", cpu=0, memory=64)
    request, notes = resized(_definition(web, side), [_row("web", 64, 40), _row("side", 8, 100)])
    assert request.family == "web" and (request.cpu, request.memory, request.pid_mode) == (1024, 2048, "task")
    new_web, new_side = request.container_definitions
    assert (new_web.image, new_web.cpu, new_web.memory_reservation, new_web.memory) == ("nginx", 64, 40, 512)
    # The hard limit (64) is below the new reservation (100): raised to it, with a note.
    assert (new_side.cpu, new_side.memory_reservation, new_side.memory) == (8, 100, 100)
    assert notes == ["container 'side': hard memory limit raised from 64 MiB to the new reservation 100 MiB"]
    assert web.cpu == 512  # the original is untouched


def test_apply_refuses_without_a_recommendation() -> None:
    web = pb.ContainerDefinition(name="web", cpu=512, memory_reservation=256)
    with pytest.raises(ValueError, match="not enough data yet"):
        resized(_definition(web), [_row("web", None, None, "not enough data yet (3 samples over 2 s)")])
    with pytest.raises(ValueError, match="no recommendation"):
        resized(_definition(web), [])
