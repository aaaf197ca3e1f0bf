"""How a scaling policy reads in one line: the same in its events and in the CLI."""

from __future__ import annotations

from berth.v1 import resources_pb2 as pb


def policy_line(policy: pb.ScalingPolicy) -> str:
    unit = "%" if policy.metric in ("cpu", "memory") else " per task"
    step = policy.max_step_out or "max(4, count)"
    return (
        f"{policy.metric} target {policy.target:.4g}{unit}, {policy.min_count}-{policy.max_count} tasks, "
        f"windows out {policy.scale_out_window:g}s in {policy.scale_in_window:g}s, "
        f"warm-up {policy.warmup:g}s, tolerance {policy.tolerance:.0%}, max step out {step}"
    )
