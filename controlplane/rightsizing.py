"""Right-sizing: what each container of a service should reserve, from its measured usage.

Pure: a container's definition and its samples from the usage window
(`controlplane.usage`) in, a `Recommendation` out.

- CPU: the 90th percentile of the samples' CPU units, plus 15 % headroom,
  rounded up to a multiple of 8 units, at least 8.
- Memory: the 99th percentile of the samples' memory, plus 20 %, in MiB
  rounded up, at least 6 MiB (the smallest limit Docker and ECS accept).

Percentiles are nearest-rank (always a measured value). There is no
recommendation until there are at least MIN_SAMPLES samples spanning at
least MIN_SPAN_SECONDS: a few seconds of a container say little about it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from berth.v1 import resources_pb2 as pb
from controlplane.usage import ContainerSample

CPU_PERCENTILE = 90.0
CPU_HEADROOM = 0.15
CPU_STEP = 8
MIN_CPU = 8
MEMORY_PERCENTILE = 99.0
MEMORY_HEADROOM = 0.20
MIN_MEMORY_MIB = 6
MIN_SAMPLES = 10
MIN_SPAN_SECONDS = 30.0
MIB = 1024 * 1024


@dataclass(frozen=True)
class Recommendation:
    """One container's reservation now and what it should be (None with a reason when unknown)."""

    container: str
    current_cpu: int
    current_memory_mib: int
    cpu: int | None
    memory_mib: int | None
    samples: int
    window_seconds: float
    reason: str = ""


def percentile(values: Sequence[float], percent: float) -> float:
    """Nearest-rank percentile of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(percent / 100.0 * len(ordered)))
    return ordered[rank - 1]


def cpu_units(p90: float) -> int:
    steps = math.ceil(p90 * (1.0 + CPU_HEADROOM) / CPU_STEP - 1e-9)
    return max(MIN_CPU, steps * CPU_STEP)


def memory_mib(p99_bytes: float) -> int:
    return max(MIN_MEMORY_MIB, math.ceil(p99_bytes * (1.0 + MEMORY_HEADROOM) / MIB - 1e-9))


def current_memory_mib(container: pb.ContainerDefinition) -> int:
    """What the container reserves: its memoryReservation, else its hard memory limit (0: none)."""
    return container.memory_reservation or container.memory


def recommend(container: pb.ContainerDefinition, samples: Sequence[ContainerSample]) -> Recommendation:
    span = max(s.at for s in samples) - min(s.at for s in samples) if samples else 0.0
    enough = len(samples) >= MIN_SAMPLES and span >= MIN_SPAN_SECONDS
    return Recommendation(
        container=container.name,
        current_cpu=container.cpu,
        current_memory_mib=current_memory_mib(container),
        cpu=cpu_units(percentile([s.cpu_units for s in samples], CPU_PERCENTILE)) if enough else None,
        memory_mib=(
            memory_mib(percentile([float(s.memory_bytes) for s in samples], MEMORY_PERCENTILE))
            if enough
            else None
        ),
        samples=len(samples),
        window_seconds=span,
        reason=""
        if enough
        else f"not enough data yet ({len(samples)} samples over {span:.0f} s; "
        f"need {MIN_SAMPLES} over {MIN_SPAN_SECONDS:.0f} s)",
    )
