"""How long a service goes without a replacement after one of its tasks fails.

The leader's service controller shows `RecoveryClock` each service's tasks on
every pass it looks at them. The clock remembers, in memory, the service's
newest failure (a task stopped with a failure, `backoff.is_failure`, at its
stopped_at) and whether it was replaced yet; the first task of the service
that started RUNNING at or after that failure is its replacement, and
started_at - stopped_at is observed once into berth_task_recovery_seconds.

A service seen for the first time (a new leader, a restart) only learns its
newest failure: history it did not watch is not measured.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp

from berth.v1 import resources_pb2 as pb
from controlplane.backoff import is_failure
from controlplane.metrics import TASK_RECOVERY_SECONDS

Key = tuple[str, str]


@dataclass
class _Failure:
    at: float
    replaced: bool


def _seconds(stamp: Timestamp) -> float:
    return stamp.ToNanoseconds() / 1e9


class RecoveryClock:
    def __init__(self, observe: Callable[[float], None] = TASK_RECOVERY_SECONDS.observe) -> None:
        self._observe = observe
        self._failures: dict[Key, _Failure] = {}

    def look(self, key: Key, tasks: Iterable[pb.Task]) -> float | None:
        """Note the service's tasks; returns the recovery time observed now, if any."""
        tasks = list(tasks)
        failed = [_seconds(t.stopped_at) for t in tasks if is_failure(t) and t.HasField("stopped_at")]
        newest = max(failed, default=0.0)
        known = self._failures.get(key)
        if known is None:
            self._failures[key] = _Failure(newest, replaced=True)
            return None
        if newest > known.at:
            known.at, known.replaced = newest, False
        if known.replaced:
            return None
        started = [
            _seconds(t.started_at)
            for t in tasks
            if t.last_status == pb.RUNNING and t.HasField("started_at") and _seconds(t.started_at) >= known.at
        ]
        if not started:
            return None
        known.replaced = True
        seconds = min(started) - known.at
        self._observe(seconds)
        return seconds

    def forget(self, keep: Iterable[Key]) -> None:
        """Drop the services not in `keep` (deleted)."""
        kept = set(keep)
        for key in [k for k in self._failures if k not in kept]:
            del self._failures[key]
