"""`berth service autoscale` against a real control plane: set, show, remove, and bad input.

Needs only a control plane (no Docker): the service runs no task (min 0).
Scaling under real load is the usage pipeline's end-to-end test.
"""

from __future__ import annotations

import pytest

from berth.testing.cli import Berth
from berth.testing.daemons import REPO, ControlPlaneProcess
from berth.testing.waiting import wait_until

EXAMPLE = REPO / "examples" / "web.json"


@pytest.fixture(scope="module")
def prepared(berth: Berth) -> Berth:
    berth.ok("taskdef", "register", "--family", "scaled", "--container-definitions", f"file://{EXAMPLE}")
    berth.ok("service", "create", "--name", "scaled", "--task-definition", "scaled", "--desired-count", "0")
    wait_until(
        lambda: "steady state" in berth.ok("service", "describe", "scaled").stdout or None,
        10,
        "the service to settle",
    )
    return berth


def test_a_policy_is_set_shown_and_removed(prepared: Berth) -> None:
    berth = prepared
    set_line = berth.ok(
        "service", "autoscale", "scaled", "--metric", "cpu", "--target", "60", "--min", "0", "--max", "5"
    ).stdout
    assert set_line.strip() == (
        "service scaled: cpu target 60%, 0-5 tasks, windows out 0s in 300s, warm-up 60s, "
        "tolerance 10%, max step out max(4, count)"
    )
    described = berth.ok("service", "describe", "scaled").stdout
    assert "auto-scaling:     cpu target 60%, 0-5 tasks" in described
    shown = berth.ok("service", "autoscale", "scaled", "-o", "json").json()
    assert shown["scalingPolicy"]["metric"] == "cpu"
    assert shown["scalingPolicy"]["target"] == 60
    assert shown["scalingPolicy"]["maxCount"] == 5
    full = berth.ok("service", "describe", "scaled", "-o", "json").json()
    assert full["berth"]["scalingPolicy"]["scaleInWindow"] == 300
    # The policy's event says what was set.
    events = berth.ok("service", "events", "scaled").stdout
    assert "scaling policy set: cpu target 60%" in events
    # A replaced policy, custom metric and explicit windows.
    berth.ok(
        "service", "autoscale", "scaled", "--metric", "custom:queue_depth", "--target", "100",
        "--min", "0", "--max", "3", "--scale-in-window", "60", "--warmup", "0", "--max-step", "2",
    )  # fmt: skip
    shown = berth.ok("service", "autoscale", "scaled", "-o", "json").json()
    assert shown["scalingPolicy"]["metric"] == "custom:queue_depth"
    assert shown["scalingPolicy"]["scaleInWindow"] == 60
    assert shown["scalingPolicy"]["maxStepOut"] == 2
    # The desired count was never touched (nothing to measure: it holds at 0).
    assert berth.ok("service", "autoscale", "scaled", "-o", "json").json()["desiredCount"] == 0

    removed = berth.ok("service", "autoscale", "scaled", "--remove").stdout
    assert removed.strip() == "service scaled: scaling policy removed; desired count stays 0"
    assert berth.ok("service", "autoscale", "scaled").stdout.strip() == "service scaled has no scaling policy"
    assert "scalingPolicy" not in berth.ok("service", "describe", "scaled", "-o", "json").json()["berth"]


def _policy(*extra: str, service: str = "scaled") -> list[str]:
    return ["service", "autoscale", service, *extra]


CASES: dict[str, tuple[list[str], str]] = {
    "target zero": (
        _policy("--metric", "cpu", "--target", "0", "--max", "5"),
        "target 0.0 is out of range: give a number above 0 and at most 1000",
    ),
    "target negative": (
        _policy("--metric", "cpu", "--target", "-5", "--max", "5"),
        "target -5.0 is out of range",
    ),
    "target not a number": (_policy("--metric", "cpu", "--target", "nan", "--max", "5"), "--target nan"),
    "min above max": (
        _policy("--metric", "cpu", "--target", "60", "--min", "6", "--max", "5"),
        "min 6 is above max 5: give min <= max",
    ),
    "max zero": (
        _policy("--metric", "cpu", "--target", "60", "--min", "0", "--max", "0"),
        "max 0 is too low",
    ),
    "max over the quota": (
        _policy("--metric", "cpu", "--target", "60", "--max", "10001"),
        "max 10001 is over the quota of 10000 tasks per service",
    ),
    "max past uint32": (
        _policy("--metric", "cpu", "--target", "60", "--max", "99999999999"),
        "--max 99999999999",
    ),
    "unknown metric": (_policy("--metric", "gpu", "--target", "60", "--max", "5"), "metric 'gpu' is unknown"),
    "bad custom name": (
        _policy("--metric", "custom:Queue-Depth", "--target", "60", "--max", "5"),
        "metric 'custom:Queue-Depth' is unknown",
    ),
    "unknown service": (
        _policy("--metric", "cpu", "--target", "60", "--max", "5", service="nope"),
        "service 'nope' does not exist in cluster 'default'",
    ),
    "negative window": (
        _policy("--metric", "cpu", "--target", "60", "--max", "5", "--scale-in-window", "-1"),
        "scale-in window -1.0 is out of range",
    ),
    "missing max": (_policy("--metric", "cpu", "--target", "60"), "give --metric, --target and --max"),
    "remove with options": (_policy("--remove", "--max", "5"), "--remove takes no other policy option"),
    "remove without a policy": (_policy("--remove"), "service 'scaled' has no scaling policy"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_and_changes_nothing(
    case: str, prepared: Berth, controlplane: ControlPlaneProcess
) -> None:
    args, message = CASES[case]
    before = controlplane.operator_records()
    prepared(*args).assert_refused(message)
    assert controlplane.operator_records() == before, "bad input must not write to etcd"
