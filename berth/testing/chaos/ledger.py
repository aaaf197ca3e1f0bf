"""Acknowledged writes, and what the final state may therefore be.

Every write the workload makes through the CLI is recorded under a key ("web/count",
"web/taskdef", "tmp-3/exists") with whether the CLI acknowledged it (exit code 0). An
acknowledged write must not be lost; a write that failed may or may not have happened (the control
plane may have committed it and died before answering). So the final value of a key must be the
last acknowledged one, or the value of a write attempted after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

V = TypeVar("V")


@dataclass(frozen=True)
class Write(Generic[V]):
    value: V
    acknowledged: bool


@dataclass
class Ledger:
    writes: dict[str, list[Write[object]]] = field(default_factory=dict)

    def record(self, key: str, value: object, acknowledged: bool) -> None:
        self.writes.setdefault(key, []).append(Write(value, acknowledged))

    def allowed(self, key: str) -> set[object]:
        """The values the key may hold now: the last acknowledged write's, and those of every write
        after it (their outcome is unknown). Empty when the key was never written."""
        history = self.writes.get(key, [])
        last = max((i for i, w in enumerate(history) if w.acknowledged), default=-1)
        if last < 0:
            # Never acknowledged: unwritten, or any attempted value.
            return {w.value for w in history}
        return {w.value for w in history[last:]}

    def acknowledged(self, key: str) -> bool:
        """At least one write of the key was acknowledged."""
        return any(w.acknowledged for w in self.writes.get(key, []))

    def keys(self, suffix: str) -> list[str]:
        """Keys ending in /suffix, in the order first written."""
        return [k for k in self.writes if k.endswith(f"/{suffix}")]
