"""Target tracking's arithmetic (controlplane/autoscaling.py), pinned by tables of cases."""

from __future__ import annotations

import pytest

from berth.v1 import resources_pb2 as pb
from controlplane.autoscaling import MISSING_GRACE, Observation, decide, recommend


def policy(**changes: object) -> pb.ScalingPolicy:
    values: dict[str, object] = {
        "metric": "cpu",
        "target": 60.0,
        "min_count": 1,
        "max_count": 10,
        "scale_out_window": 0.0,
        "scale_in_window": 300.0,
        "warmup": 60.0,
        "tolerance": 0.1,
    }
    values.update(changes)
    return pb.ScalingPolicy(**values)  # type: ignore[arg-type]


def seen(value: float, counted: int, warming: int = 0, missing: int = 0) -> Observation:
    return Observation(value=value, counted=counted, warming=warming, missing=missing)


def steady(count: int, at: float = 0.0) -> pb.ScalingState:
    """The state of a policy that has recommended `count` since `at`."""
    return pb.ScalingState(count=count, recommendations=[pb.ScalingRecommendation(at=at, count=count)])


@pytest.mark.parametrize(
    ("current", "observation", "expected"),
    [
        # Within the tolerance band (edges included): no change.
        (4, seen(60.0, 4), 4),
        (4, seen(66.0, 4), 4),  # exactly +10 %
        (4, seen(54.0, 4), 4),  # exactly -10 %
        (4, seen(66.6, 4), 5),  # just above: ceil(4 x 66.6 / 60) = 5
        (4, seen(53.4, 4), 4),  # just below: ceil(4 x 0.89) = 4
        (4, seen(30.0, 4), 2),  # half the target: half the tasks
        (1, seen(180.0, 1), 3),
        (3, seen(0.0, 3), 0),  # idle (min and max are the decision's, not this)
        # Out: tasks warming, without samples or PENDING carry nothing, so
        # the count is what the measured load needs: ceil(2 x 90 / 60) = 3.
        (4, seen(90.0, 2, warming=2), 4),
        (2, seen(90.0, 2, warming=2), 3),
        (5, seen(90.0, 2), 5),  # 3 PENDING tasks: already enough
        (2, seen(90.0, 1, missing=1), 2),
        # In: tasks without samples count as at target: (20 + 60) / 2 = 40 -> ceil(4 x 40/60) = 3.
        (4, seen(20.0, 1, missing=1), 3),
        # ... and a gap that brings the average back into tolerance holds.
        (4, seen(50.0, 1, missing=3), 4),
    ],
)
def test_recommendation(current: int, observation: Observation, expected: int) -> None:
    assert recommend(policy(), current, observation) == expected


def test_a_custom_metric_is_a_per_task_average() -> None:
    # 3 tasks at 250 queued each, target 100 per task: 8 tasks.
    assert recommend(policy(metric="custom:queue_depth", target=100.0), 3, seen(250.0, 3)) == 8


@pytest.mark.parametrize(
    ("name", "pol", "state", "current", "observation", "now", "count", "message"),
    [
        (
            "scale out at once (scale-out window 0)",
            policy(),
            steady(1),
            1,
            seen(180.0, 1),
            10.0,
            3,
            "cpu 180% > target 60%: scaling out from 1 to 3",
        ),
        (
            "scale out steps by max(4, current) at most",
            policy(max_count=100),
            steady(2),
            2,
            seen(600.0, 2),
            10.0,
            6,
            "cpu 600% > target 60%: scaling out from 2 to 6",
        ),
        (
            "an explicit step",
            policy(max_step_out=1),
            steady(2),
            2,
            seen(600.0, 2),
            10.0,
            3,
            "cpu 600% > target 60%: scaling out from 2 to 3",
        ),
        (
            "scale out stops at max, and says so",
            policy(max_count=10),
            steady(10),
            10,
            seen(85.0, 10),
            10.0,
            None,
            "cpu 85% > target 60% but the service is at its maximum 10",
        ),
        (
            "scale out is capped by max",
            policy(max_count=4),
            steady(3),
            3,
            seen(120.0, 3),
            10.0,
            4,
            "cpu 120% > target 60%: scaling out from 3 to 4",
        ),
        (
            "a desired count above max is clamped at once",
            policy(max_count=5),
            steady(5),
            8,
            seen(60.0, 8),
            10.0,
            5,
            "desired count 8 is above the maximum 5: scaling to 5",
        ),
        (
            "a desired count below min is clamped at once, metric or not",
            policy(min_count=2),
            steady(2),
            0,
            None,
            10.0,
            2,
            "desired count 0 is below the minimum 2: scaling to 2",
        ),
        (
            "scale in waits for the scale-in window",
            policy(),
            steady(4, at=0.0),
            4,
            seen(15.0, 4),
            100.0,
            None,
            "",
        ),
        (
            "scale in once the window holds only low recommendations, by half at most",
            policy(),
            pb.ScalingState(
                count=8,
                recommendations=[
                    pb.ScalingRecommendation(at=0.0, count=8),
                    pb.ScalingRecommendation(at=10.0, count=1),
                ],
            ),
            8,
            seen(5.0, 8),
            320.0,
            4,
            "cpu 5% < target 60%: scaling in from 8 to 4",
        ),
        (
            "scale in to the highest recommendation of the window",
            policy(),
            pb.ScalingState(
                count=8,
                recommendations=[
                    pb.ScalingRecommendation(at=0.0, count=8),
                    pb.ScalingRecommendation(at=10.0, count=6),
                    pb.ScalingRecommendation(at=100.0, count=5),
                ],
            ),
            8,
            seen(30.0, 8),
            320.0,
            6,
            "cpu 30% < target 60%: scaling in from 8 to 6",
        ),
        (
            "scale in stops at min, and says so",
            policy(min_count=2),
            steady(2),
            2,
            seen(5.0, 2),
            400.0,
            None,
            "cpu 5% < target 60% but the service is at its minimum 2",
        ),
        (
            "scale in waits for a deployment",
            policy(),
            pb.ScalingState(
                count=4,
                recommendations=[
                    pb.ScalingRecommendation(at=0.0, count=4),
                    pb.ScalingRecommendation(at=1.0, count=1),
                ],
            ),
            4,
            seen(5.0, 4),
            400.0,
            None,
            "cpu 5% < target 60%: scale-in waits for the deployment to complete",
        ),
        (
            "all tasks warming: hold",
            policy(),
            steady(2),
            2,
            seen(0.0, 0, warming=2),
            10.0,
            None,
            "all 2 running tasks are warming up (60s): holding at 2",
        ),
        (
            "scale-out window: the lowest recommendation of the window",
            policy(scale_out_window=30.0),
            pb.ScalingState(count=2, recommendations=[pb.ScalingRecommendation(at=0.0, count=2)]),
            2,
            seen(150.0, 2),
            10.0,
            None,
            "cpu 150% > target 60%: scaling out after the 30s scale-out window",
        ),
        (
            "a custom metric's message",
            policy(metric="custom:queue_depth", target=100.0),
            steady(2),
            2,
            seen(250.0, 2),
            10.0,
            5,
            "queue_depth 250 > target 100: scaling out from 2 to 5",
        ),
    ],
)
def test_decision(
    name: str,
    pol: pb.ScalingPolicy,
    state: pb.ScalingState,
    current: int,
    observation: Observation | None,
    now: float,
    count: int | None,
    message: str,
) -> None:
    decision = decide(pol, state, current, observation, now, deploying="deployment" in name)
    assert (decision.count, decision.message) == (count, message), name


def test_deciding_never_changes_the_given_state() -> None:
    state = steady(1)
    before = state.SerializeToString()
    decide(policy(), state, 1, seen(180.0, 1), 10.0)
    assert state.SerializeToString() == before


def test_the_scale_out_window_passes_then_it_scales_out() -> None:
    pol = policy(scale_out_window=30.0)
    state = steady(2)
    for now in (10.0, 20.0, 30.0):
        decision = decide(pol, state, 2, seen(150.0, 2), now)
        assert decision.count is None
        state = decision.state
    # At 40 s, every recommendation since 10 s asked for 5.
    assert decide(pol, state, 2, seen(150.0, 2), 41.0).count == 5


def test_a_lasting_hold_is_an_event_once() -> None:
    pol = policy(max_count=3)
    state = steady(3)
    events = []
    for now in range(0, 100, 5):
        decision = decide(pol, state, 3, seen(85.0 + now % 7, 3), float(now))
        events.append(decision.event)
        state = decision.state
    assert events.count(True) == 1


def test_missing_samples_hold_and_are_said_once_they_last() -> None:
    state = steady(3)
    first = decide(policy(), state, 3, None, 100.0)
    assert (first.count, first.event) == (None, False)
    later = decide(policy(), first.state, 3, seen(0.0, 0, missing=3), 100.0 + MISSING_GRACE)
    assert later.count is None and later.event
    assert later.message == "no cpu samples for 30s or more: holding at 3 tasks"
    again = decide(policy(), later.state, 3, None, 200.0)
    assert not again.event
    # Samples come back, then go again: the next gap is news again.
    back = decide(policy(), again.state, 3, seen(60.0, 3), 210.0)
    gone = decide(policy(), back.state, 3, None, 220.0)
    assert decide(policy(), gone.state, 3, None, 220.0 + MISSING_GRACE).event


def test_a_source_value_that_is_not_a_number_is_missing() -> None:
    decision = decide(policy(), steady(2), 2, seen(float("nan"), 2), 10.0)
    assert decision.count is None


def test_an_operator_count_restarts_the_windows() -> None:
    # Low load for 10 minutes at 1 task; the operator sets 4: not undone at once.
    state = steady(1)
    decision = decide(policy(), state, 4, seen(10.0, 4), 600.0)
    assert decision.count is None
    assert decision.state.count == 4
    # ... but after the scale-in window of low load, the policy scales in.
    state = decision.state
    for now in range(605, 1000, 5):
        decision = decide(policy(), state, 4, seen(10.0, 4), float(now))
        if decision.count is not None:
            break
        state = decision.state
    assert (now, decision.count) == (905, 2)  # the first low recommendation came at 605


def test_the_recommendations_kept_are_bounded() -> None:
    state = steady(1)
    pol = policy(max_count=10_000, scale_in_window=3600.0)
    current = 1
    for now in range(0, 3600):
        decision = decide(pol, state, current, seen(float(61 + now % 300), current), float(now))
        state = decision.state
    assert len(state.recommendations) <= 100
