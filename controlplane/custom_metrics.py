"""Custom metrics: values applications push for their service, kept in memory for auto-scaling.

Values arrive through the operator API (`berth metric put`) and from containers through their
agent's HTTP endpoint (agent/metric_endpoint.py, then the agent stream). They are never written
to etcd: a value is worth something for a minute or two, and a replica that restarts simply
waits for the next push (applications push every few seconds).

Per (cluster, service, metric name) this keeps only the newest value of each source: the
service itself (no task id) and each task that pushed its own. Two kinds of metric:

- a service-level value (no task id, e.g. a queue's depth) is a total for the service; its
  per-task average is the newest value divided by the service's RUNNING tasks, as ECS target
  tracking does with a custom metric divided by the running task count;
- per-task values (a task id, e.g. that task's requests per second) are averaged over the
  newest value of each task that pushed within `max_age`; RUNNING tasks without a recent value
  are reported as `missing`. A stopped task stops pushing, so its value ages out.

When a name has both, the per-task values win (they say more); push one kind per name.

Everything is bounded (services, names per service, tasks per name) and values older than
RETENTION are dropped. Used on the event loop only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from berth.errors import ResourceExhausted
from berth.metric_values import check_name, check_value

# Values older than this are forgotten (auto-scaling looks at a minute at most).
RETENTION = 300.0
MAX_SERVICES = 10_000
MAX_NAMES_PER_SERVICE = 20
# Per name: sources with a value (the service and its tasks): more tasks than one service runs.
MAX_TASKS_PER_NAME = 1_000
# Values kept in all (one per source): the bound on memory whatever the services do.
MAX_SAMPLES = 200_000
# Every so often a put forgets old values of every service, not only its own.
FULL_PRUNE_EVERY = 60.0


@dataclass(frozen=True)
class Observation:
    value: float  # per-task average of the metric
    counted: int  # tasks in the average (here: RUNNING tasks of the service)
    warming: int  # 0 for custom metrics unless per-task values from young tasks are left out
    missing: int  # 0 unless per-task values are expected


@dataclass(frozen=True)
class Sample:
    """The newest value of one metric from one source ("" task id: the service)."""

    name: str
    task_id: str
    value: float
    at: float


@dataclass
class _Series:
    service_value: tuple[float, float] | None = None  # (value, time)
    task_values: dict[str, tuple[float, float]] = field(default_factory=dict)

    def prune(self, oldest: float) -> int:
        """Forget values older than `oldest`; how many were forgotten."""
        forgotten = 0
        if self.service_value is not None and self.service_value[1] < oldest:
            self.service_value = None
            forgotten += 1
        stale = [task for task, (_, at) in self.task_values.items() if at < oldest]
        for task in stale:
            del self.task_values[task]
        return forgotten + len(stale)

    @property
    def size(self) -> int:
        return (self.service_value is not None) + len(self.task_values)

    @property
    def empty(self) -> bool:
        return self.service_value is None and not self.task_values


class CustomMetrics:
    """The newest custom-metric values per service, bounded and expiring (see the module doc)."""

    def __init__(self, retention: float = RETENTION) -> None:
        self._retention = retention
        self._services: dict[tuple[str, str], dict[str, _Series]] = {}
        self._samples = 0
        self._pruned_at = float("-inf")

    def put(self, cluster: str, service: str, name: str, value: float, now: float, task_id: str = "") -> None:
        """Record a value; raises InvalidArgument for a bad name or value and ResourceExhausted
        past a bound (then nothing is recorded)."""
        check_name(name)
        value = check_value(value)
        if now - self._pruned_at >= FULL_PRUNE_EVERY:
            self.prune(now)
        key = (cluster, service)
        names = self._services.get(key)
        if names is None:
            if len(self._services) >= MAX_SERVICES:
                self.prune(now)
                if len(self._services) >= MAX_SERVICES:
                    raise ResourceExhausted(f"custom metrics are kept for at most {MAX_SERVICES} services")
            names = self._services[key] = {}
        else:
            self._prune_service(key, now)
            names = self._services.setdefault(key, names)
        series = names.get(name)
        if series is None:
            if len(names) >= MAX_NAMES_PER_SERVICE:
                raise ResourceExhausted(
                    f"service {service} already has {MAX_NAMES_PER_SERVICE} custom metrics, the limit "
                    f"(names expire {self._retention:.0f} s after their last value)"
                )
            series = names[name] = _Series()
        new_source = series.service_value is None if not task_id else task_id not in series.task_values
        if new_source:
            if task_id and len(series.task_values) >= MAX_TASKS_PER_NAME:
                self._drop_if_empty(key, name)
                raise ResourceExhausted(f"metric {name} already has values from {MAX_TASKS_PER_NAME} tasks")
            if self._samples >= MAX_SAMPLES:
                self._drop_if_empty(key, name)
                raise ResourceExhausted(f"the control plane already keeps {MAX_SAMPLES} custom metric values")
            self._samples += 1
        if task_id:
            series.task_values[task_id] = (value, now)
        else:
            series.service_value = (value, now)

    def _drop_if_empty(self, key: tuple[str, str], name: str) -> None:
        """A refused put leaves no empty series (nor service) behind."""
        names = self._services.get(key, {})
        if name in names and names[name].empty:
            del names[name]
        if not names:
            self._services.pop(key, None)

    def observe(
        self, cluster: str, service: str, name: str, running_tasks: int, now: float, max_age: float = 60.0
    ) -> Observation | None:
        """The metric's per-task average over values pushed within max_age; None when there is
        none, or when the service runs no task."""
        if running_tasks <= 0:
            return None
        series = self._services.get((cluster, service), {}).get(name)
        if series is None:
            return None
        oldest = now - max_age
        recent = [value for value, at in series.task_values.values() if at >= oldest]
        if recent:
            # More recent reporters than RUNNING tasks happens right after a scale-in (the
            # stopped tasks' values have not aged out yet): the average is still theirs.
            return Observation(
                value=sum(recent) / len(recent),
                counted=len(recent),
                warming=0,
                missing=max(0, running_tasks - len(recent)),
            )
        if series.service_value is not None and series.service_value[1] >= oldest:
            return Observation(
                value=series.service_value[0] / running_tasks, counted=running_tasks, warming=0, missing=0
            )
        return None

    def latest(self, cluster: str, service: str, now: float) -> list[Sample]:
        """Every value still kept for the service, by name then source (the service first)."""
        self._prune_service((cluster, service), now)
        samples = []
        for name, series in sorted(self._services.get((cluster, service), {}).items()):
            if series.service_value is not None:
                samples.append(Sample(name, "", *series.service_value))
            for task_id, (value, at) in sorted(series.task_values.items()):
                samples.append(Sample(name, task_id, value, at))
        return samples

    def prune(self, now: float) -> None:
        """Forget every value older than the retention."""
        self._pruned_at = now
        for key in list(self._services):
            self._prune_service(key, now)

    @property
    def samples(self) -> int:
        """Values kept (one per source and name)."""
        return self._samples

    def _prune_service(self, key: tuple[str, str], now: float) -> None:
        names = self._services.get(key)
        if names is None:
            return
        oldest = now - self._retention
        for name in list(names):
            self._samples -= names[name].prune(oldest)
            if names[name].empty:
                del names[name]
        if not names:
            del self._services[key]
