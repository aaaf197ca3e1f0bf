"""Prometheus metrics of the agent (served with --metrics-listen)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TASKS_STARTED = Counter("berth_agent_tasks_started_total", "Tasks this agent started")
TASK_START_FAILURES = Counter("berth_agent_task_start_failures_total", "Tasks that failed to start")
TASKS_OBSERVED = Gauge("berth_agent_tasks", "Tasks with a container on this host")
RULES_APPLY_SECONDS = Histogram(
    "berth_agent_rules_apply_seconds",
    "Time to apply service rules",
    ["kind"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 30),
)
