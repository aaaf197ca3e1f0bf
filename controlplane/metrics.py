"""Prometheus metrics of the control plane (served with --metrics-listen)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PLACEMENTS = Counter("berth_placements_total", "Tasks placed on a node and committed to etcd")
PLACEMENT_FAILURES = Counter(
    "berth_placement_failures_total", "Tasks the scheduler could not place in a pass"
)
PLACEMENT_CONFLICTS = Counter(
    "berth_placement_conflicts_total", "Placement transactions that lost an optimistic-concurrency check"
)
RECONCILE_SECONDS = Histogram(
    "berth_reconcile_seconds",
    "Duration of one controller pass",
    ["controller"],
    buckets=(0.001, 0.01, 0.1, 1, 10),
)
STATUS_REPORTS = Counter("berth_task_status_reports_total", "Task status reports received from agents")
AGENTS_CONNECTED = Gauge("berth_agents_connected", "Agents holding a stream to this replica")
IS_LEADER = Gauge("berth_leader", "1 while this replica runs the controllers")
NODES_DOWN = Counter("berth_nodes_down_total", "Nodes marked DOWN after missing heartbeats")
MASS_FAILURE = Gauge(
    "berth_mass_failure",
    "1 while the leader suspects a mass failure (too many nodes silent at once) and marks none DOWN",
)
NODES_SILENT = Gauge(
    "berth_nodes_silent", "Nodes silent within one grace period, as the leader's node monitor last counted"
)
AGENT_MESSAGES_REJECTED = Counter(
    "berth_agent_messages_rejected_total",
    "Messages from agents dropped at the boundary because a field was invalid",
    ["kind"],
)
CONTROLLER_FAILURES = Counter(
    "berth_controller_failures_total",
    "Controller passes that raised (the loop logged it, backed off and went on)",
    ["controller"],
)
OBJECT_FAILURES = Counter(
    "berth_controller_object_failures_total",
    "Objects (services, tasks, nodes) a controller failed on and skipped in a pass",
    ["controller", "kind"],
)
SCALING_DECISIONS = Counter(
    "berth_scaling_decisions_total",
    "Desired-count changes the autoscaler made, by service and direction (out, in)",
    ["cluster", "service", "direction"],
)
SCALING_OBSERVED = Gauge(
    "berth_scaling_observed",
    "A scaled service's metric as the autoscaler last saw it (percent for cpu/memory)",
    ["cluster", "service", "metric"],
)
SCALING_TARGET = Gauge(
    "berth_scaling_target",
    "A scaled service's target for its metric",
    ["cluster", "service", "metric"],
)
TASK_RECOVERY_SECONDS = Histogram(
    "berth_task_recovery_seconds",
    "Seconds from a service task's failure to its replacement RUNNING (measured by the leader)",
    buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600),
)
AGENT_STREAMS = Gauge(
    "berth_agent_streams",
    "Agent streams open on this replica (a reconnecting node may briefly hold two; "
    "berth_agents_connected counts nodes)",
)
LOOP_LAG = Histogram(
    "berth_event_loop_lag_seconds",
    "How late the event loop ran a timer that was due (what a lease keep-alive or a heartbeat waited)",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
LOOP_LAG_MAX = Gauge(
    "berth_event_loop_lag_max_seconds", "The worst lateness of the event loop since this replica started"
)
DESIRED_MESSAGES = Counter(
    "berth_desired_messages_total",
    "Desired-state messages sent to agents: full snapshots and deltas",
    ["kind"],
)
DESIRED_BYTES = Counter(
    "berth_desired_bytes_total",
    "Encoded bytes (near enough) of the desired-state messages sent to agents",
    ["kind"],
)
DESIRED_RESYNCS = Counter(
    "berth_desired_resyncs_total", "Full snapshots agents asked for after a delta they could not apply"
)
