"""Target tracking: the pure decision of how many tasks a scaled service should run.

`decide(policy, state, current, observation, now)` is the whole rule; the
autoscaler controller (`controllers/autoscaler.py`) only observes, calls it
and writes what it returns. No I/O here, so a table of cases pins it down.

The rule, in the order it is applied:

1. **min and max always hold**: a desired count outside [min, max] (set by an
   operator, or a policy just tightened) is clamped at once.
2. **An operator's count is the new start**: a desired count other than the
   one the autoscaler last left starts the windows again from it (that pass
   does nothing else), so a manual `--desired-count` is not undone on the
   next pass: scale-in waits a full scale-in window (as ECS continues from it).
3. **Observe**: the Observation already leaves out tasks younger than the
   warm-up and tasks without a recent sample. Nothing counted: hold (all
   warming, or the metric missing: said in an event once it lasts
   `MISSING_GRACE` seconds; no running task: nothing to measure).
4. **Recommend** (as Kubernetes' HPA does), with the ratio r = observed/target:
   - |r - 1| <= tolerance: the current count.
   - r > 1 + tolerance (out): ceil(counted x observed / target), the tasks
     needed to carry the measured load at the target. Tasks warming up,
     without samples, or still PENDING count as carrying nothing, so a
     start-up never feeds a runaway scale-out. With every task counted this
     is exactly ceil(current x observed / target).
   - r < 1 - tolerance (in): ceil(current x r'), where tasks without samples
     count as exactly at target (r' >= r), so a gap never causes a scale-in.
   A recommendation never goes against the direction of r.
5. **Stabilize**: scale out to the LOWEST recommendation of the last
   `scale_out_window` seconds (default 0: at once), scale in to the HIGHEST of
   the last `scale_in_window` (default 300 s): out fast, in slow, no flapping.
6. **Step limits**: out by at most `max_step_out` tasks (default max(4,
   current): at most doubling, at least +4); in by at most half the current
   count (at least 1) per decision. The next pass takes the next step.
7. **Deployments**: while a rollout is in progress scale-out goes on and
   scale-in waits (ECS does the same), so a rollout's old and new tasks are
   never mistaken for spare capacity.
8. Clamp to [min, max]; a decision the limits stopped is said ("cpu 85% >
   target 60% but the service is at its maximum 10").

Every action is an event; a hold is an event only when its kind changes
(`state.last_hold`), so a lasting condition is said once, not every pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from berth.v1 import resources_pb2 as pb

DEFAULT_TOLERANCE = 0.1
DEFAULT_SCALE_OUT_WINDOW = 0.0
DEFAULT_SCALE_IN_WINDOW = 300.0
DEFAULT_WARMUP = 60.0
# The metric missing this long (seconds) is said in an event.
MISSING_GRACE = 30.0
# Bound on the stored recommendation change points (the oldest go first).
MAX_RECOMMENDATIONS = 100
# Holds that end when samples are back (the next such hold is news again).
_GONE_WITH_SAMPLES = ("warming", "missing", "no-tasks")
# Floating point slack, so 66 / 60 is exactly the +10 % edge and 4 x 1.5 is 6.
_EPSILON = 1e-9


@dataclass(frozen=True)
class Observation:
    """A service's metric as the MetricSource saw it (controlplane/usage.py)."""

    value: float  # the average: percent of reservation for cpu/memory; per-task for custom
    counted: int  # tasks in the average
    warming: int  # RUNNING tasks left out: younger than the warm-up period
    missing: int  # RUNNING tasks without a recent sample


class MetricSource(Protocol):
    def observe(
        self, cluster: str, service: str, metric: str, tasks: Sequence[pb.Task], now: float, warmup: float
    ) -> Observation | None:
        """The service's metric over its RUNNING `tasks`; None when nothing is known.

        PENDING and stopping tasks are never counted (nor warming, nor missing).
        """


class NoMetrics:
    """A MetricSource that never has a sample: every policy holds (and says so)."""

    def observe(
        self, cluster: str, service: str, metric: str, tasks: Sequence[pb.Task], now: float, warmup: float
    ) -> Observation | None:
        return None


@dataclass(frozen=True)
class Decision:
    """What to do: `count` the new desired count (None: leave it), `message` the
    one-line reason, `event` whether the message is news, `state` what to keep."""

    count: int | None
    message: str
    event: bool
    state: pb.ScalingState


def describe_value(metric: str, value: float) -> str:
    if metric in ("cpu", "memory"):
        return f"{metric} {value:.0f}%"
    return f"{metric.removeprefix('custom:')} {value:.4g}"


def max_step_out(policy: pb.ScalingPolicy, current: int) -> int:
    return policy.max_step_out or max(4, current)


def max_step_in(current: int) -> int:
    return max(1, current // 2)


def recommend(policy: pb.ScalingPolicy, current: int, observation: Observation) -> int:
    """The count the metric asks for right now, before windows, steps and limits."""
    value, target = observation.value, policy.target
    ratio = value / target
    if abs(ratio - 1) <= policy.tolerance + _EPSILON:
        return current
    if ratio > 1:
        needed = math.ceil(observation.counted * value / target - _EPSILON)
        return max(current, needed)
    # Tasks without samples are taken as exactly at target.
    measured = observation.counted + observation.missing
    adjusted = (value * observation.counted + target * observation.missing) / measured
    if abs(adjusted / target - 1) <= policy.tolerance + _EPSILON:
        return current
    return min(current, math.ceil(current * adjusted / target - _EPSILON))


def _window(state: pb.ScalingState, now: float, seconds: float) -> list[int]:
    """The recommendations in force at some time in [now - seconds, now]."""
    start = now - seconds
    found: list[int] = []
    entries = list(state.recommendations)
    for index, entry in enumerate(entries):
        ends = entries[index + 1].at if index + 1 < len(entries) else math.inf
        if ends > start or entry.at >= start:
            found.append(entry.count)
    return found


def _remember(state: pb.ScalingState, policy: pb.ScalingPolicy, now: float, count: int) -> None:
    """Add a change point; forget those no window can reach any more."""
    if state.recommendations and state.recommendations[-1].at >= now:
        state.recommendations[-1].count = count  # the same moment: this one replaces it
    elif not state.recommendations or state.recommendations[-1].count != count:
        state.recommendations.append(pb.ScalingRecommendation(at=now, count=count))
    horizon = now - max(policy.scale_out_window, policy.scale_in_window)
    entries = list(state.recommendations)
    # Keep the last point before the horizon: it was in force at the horizon.
    first = 0
    for index in range(1, len(entries)):
        if entries[index].at <= horizon:
            first = index
    kept = entries[first:][-MAX_RECOMMENDATIONS:]
    if len(kept) != len(entries):
        del state.recommendations[:]
        state.recommendations.extend(kept)


def _restart(state: pb.ScalingState, now: float, count: int) -> None:
    del state.recommendations[:]
    state.recommendations.append(pb.ScalingRecommendation(at=now, count=count))
    state.count = count


def _hold(state: pb.ScalingState, kind: str, message: str) -> Decision:
    news = kind != state.last_hold
    state.last_hold = kind
    if news:
        state.last_message = message
    return Decision(None, message, news, state)


def _act(state: pb.ScalingState, now: float, count: int, message: str) -> Decision:
    state.last_hold = ""
    state.last_message = message
    state.last_action_at = now
    # The recommendations stay: a step-limited change takes its next step on
    # the next pass, and a scale-out's high recommendations keep holding
    # scale-in off for the scale-in window.
    state.count = count
    return Decision(count, message, True, state)


def decide(
    policy: pb.ScalingPolicy,
    state: pb.ScalingState,
    current: int,
    observation: Observation | None,
    now: float,
    deploying: bool = False,
) -> Decision:
    """The next step for one service; `state` is not changed (the Decision has a copy)."""
    kept = pb.ScalingState()
    kept.CopyFrom(state)
    low, high = policy.min_count, policy.max_count
    if current < low or current > high:
        clamped = min(max(current, low), high)
        _restart(kept, now, clamped)
        where = f"below the minimum {low}" if current < low else f"above the maximum {high}"
        return _act(kept, now, clamped, f"desired count {current} is {where}: scaling to {clamped}")
    if kept.count != current or not kept.recommendations:
        # An operator set the count (or the policy is new): the windows start
        # from it, and this pass records only that.
        _restart(kept, now, current)
        return Decision(None, "", False, kept)
    metric = policy.metric
    tasks = "task" if current == 1 else "tasks"
    if observation is not None and not (math.isfinite(observation.value) and observation.value >= 0):
        observation = None  # a source's bug must never scale anything
    if observation is None or observation.counted == 0:
        if observation is not None and observation.warming > 0 and observation.missing == 0:
            kept.missing_since = 0
            return _hold(
                kept,
                "warming",
                f"all {observation.warming} running {'task is' if observation.warming == 1 else 'tasks are'} "
                f"warming up ({policy.warmup:g}s): holding at {current}",
            )
        if observation is None and current == 0:
            return _hold(kept, "no-tasks", f"no running task to measure {metric} on: holding at 0")
        if not kept.missing_since:
            kept.missing_since = now
        if now - kept.missing_since >= MISSING_GRACE:
            return _hold(
                kept,
                "missing",
                f"no {metric} samples for {MISSING_GRACE:g}s or more: holding at {current} {tasks}",
            )
        return Decision(None, "", False, kept)
    kept.missing_since = 0
    if kept.last_hold in _GONE_WITH_SAMPLES:
        kept.last_hold = ""
    observed = describe_value(metric, observation.value)
    target = f"target {policy.target:.4g}{'%' if metric in ('cpu', 'memory') else ''}"
    wanted = recommend(policy, current, observation)
    _remember(kept, policy, now, wanted)
    out = min(_window(kept, now, policy.scale_out_window))
    inward = max(_window(kept, now, policy.scale_in_window))
    if wanted > current:
        if current >= high:
            return _hold(
                kept, f"max:{high}", f"{observed} > {target} but the service is at its maximum {high}"
            )
        if out > current:
            new = min(high, out, current + max_step_out(policy, current))
            return _act(kept, now, new, f"{observed} > {target}: scaling out from {current} to {new}")
        return _hold(
            kept,
            "out-window",
            f"{observed} > {target}: scaling out after the {policy.scale_out_window:g}s scale-out window",
        )
    if wanted < current:
        if current <= low:
            return _hold(kept, f"min:{low}", f"{observed} < {target} but the service is at its minimum {low}")
        if deploying:
            return _hold(
                kept, "deploying", f"{observed} < {target}: scale-in waits for the deployment to complete"
            )
        if inward < current:
            new = max(low, inward, current - max_step_in(current))
            return _act(kept, now, new, f"{observed} < {target}: scaling in from {current} to {new}")
        # Waiting out the scale-in window is the normal course: not an event.
        return Decision(None, "", False, kept)
    return Decision(None, "", False, kept)
