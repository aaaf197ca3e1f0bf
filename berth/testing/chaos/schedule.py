"""The chaos schedule: which victim falls in each round, for how long, and the calm after.

Pure and seeded: the same seed and the same victims give the same schedule, so a failed run can be
replayed (`BERTH_CHAOS_SEED`). Victims are drawn kind first (a control plane, an agent, a crashed
host, a cut host ...) and then one of that kind, so the many agents do not crowd out the one
control plane.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Round:
    index: int
    victim: str
    # Seconds the victim stays dead (or cut off) before it is restarted.
    down: float
    # Seconds of calm (the workload still running) after the restart, before the next round.
    calm: float


def kind_of(victim: str) -> str:
    """A victim's kind: its name up to the first '-' ("agent-h2" -> "agent")."""
    return victim.split("-", 1)[0]


def schedule(
    seed: int, victims: Sequence[str], rounds: int, *, longest_down: float, longest_calm: float
) -> list[Round]:
    """`rounds` rounds over `victims`; downtimes are spread over [0.5, longest_down] so that some
    outlast the node grace (pass longest_down above it) and some do not."""
    if not victims:
        raise ValueError("no victims to schedule")
    if longest_down < 0.5 or longest_calm < 1.0:
        raise ValueError("longest_down must be at least 0.5 s and longest_calm at least 1 s")
    rng = random.Random(seed)
    kinds: dict[str, list[str]] = {}
    for victim in sorted(victims):
        kinds.setdefault(kind_of(victim), []).append(victim)
    ordered = sorted(kinds)
    plan = []
    for index in range(1, rounds + 1):
        victim = rng.choice(kinds[rng.choice(ordered)])
        down = round(rng.uniform(0.5, longest_down), 1)
        calm = round(rng.uniform(1.0, longest_calm), 1)
        plan.append(Round(index, victim, down, calm))
    return plan
