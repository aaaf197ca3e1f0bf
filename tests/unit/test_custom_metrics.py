"""CustomMetrics: averaging, expiry and bounds; the metric name and value checks."""

from __future__ import annotations

import math

import pytest

from berth.errors import InvalidArgument, ResourceExhausted
from berth.metric_values import check_name, check_task_id, parse_value
from controlplane import custom_metrics
from controlplane.custom_metrics import (
    MAX_NAMES_PER_SERVICE,
    MAX_TASKS_PER_NAME,
    RETENTION,
    CustomMetrics,
    Observation,
)

T1 = "a" * 32
T2 = "b" * 32
T3 = "c" * 32


def test_a_service_level_value_is_divided_by_the_running_tasks() -> None:
    metrics = CustomMetrics()
    metrics.put("default", "web", "queue_depth", 300.0, now=100.0)
    assert metrics.observe("default", "web", "queue_depth", running_tasks=3, now=110.0) == Observation(
        value=100.0, counted=3, warming=0, missing=0
    )


def test_the_newest_service_level_value_wins() -> None:
    metrics = CustomMetrics()
    metrics.put("default", "web", "queue_depth", 300.0, now=100.0)
    metrics.put("default", "web", "queue_depth", 30.0, now=101.0)
    found = metrics.observe("default", "web", "queue_depth", running_tasks=1, now=102.0)
    assert found is not None and found.value == 30.0


def test_per_task_values_are_averaged_over_each_tasks_newest_value() -> None:
    metrics = CustomMetrics()
    metrics.put("default", "web", "rps", 10.0, now=100.0, task_id=T1)
    metrics.put("default", "web", "rps", 50.0, now=101.0, task_id=T1)
    metrics.put("default", "web", "rps", 30.0, now=102.0, task_id=T2)
    assert metrics.observe("default", "web", "rps", running_tasks=3, now=103.0) == Observation(
        value=40.0, counted=2, warming=0, missing=1
    )


@pytest.mark.parametrize(
    ("running", "now", "max_age"),
    [
        (0, 101.0, 60.0),  # no running task: nothing to average over
        (2, 161.0, 60.0),  # older than max_age
        (2, 121.0, 20.0),
    ],
)
def test_nothing_is_observed_without_running_tasks_or_recent_values(
    running: int, now: float, max_age: float
) -> None:
    metrics = CustomMetrics()
    metrics.put("default", "web", "queue_depth", 5.0, now=100.0)
    metrics.put("default", "web", "rps", 5.0, now=100.0, task_id=T1)
    for name in ("queue_depth", "rps"):
        assert metrics.observe("default", "web", name, running, now, max_age) is None


def test_stale_task_values_are_left_out_of_the_average() -> None:
    metrics = CustomMetrics()
    metrics.put("default", "web", "rps", 100.0, now=0.0, task_id=T1)
    metrics.put("default", "web", "rps", 10.0, now=50.0, task_id=T2)
    found = metrics.observe("default", "web", "rps", running_tasks=2, now=70.0)
    assert found == Observation(value=10.0, counted=1, warming=0, missing=1)


def test_unknown_service_or_name_observes_nothing() -> None:
    metrics = CustomMetrics()
    metrics.put("default", "web", "rps", 1.0, now=0.0)
    assert metrics.observe("default", "api", "rps", 1, 1.0) is None
    assert metrics.observe("other", "web", "rps", 1, 1.0) is None
    assert metrics.observe("default", "web", "latency", 1, 1.0) is None


def test_values_expire_after_the_retention() -> None:
    metrics = CustomMetrics()
    metrics.put("default", "web", "rps", 1.0, now=0.0, task_id=T1)
    metrics.put("default", "web", "queue_depth", 2.0, now=10.0)
    assert [(s.name, s.task_id) for s in metrics.latest("default", "web", now=RETENTION + 5)] == [
        ("queue_depth", "")
    ]
    assert metrics.latest("default", "web", now=RETENTION + 11) == []


def test_names_per_service_are_bounded_and_expired_names_free_their_place() -> None:
    metrics = CustomMetrics()
    for i in range(MAX_NAMES_PER_SERVICE):
        metrics.put("default", "web", f"m{i}", 1.0, now=0.0)
    with pytest.raises(ResourceExhausted):
        metrics.put("default", "web", "one_more", 1.0, now=1.0)
    assert "one_more" not in {s.name for s in metrics.latest("default", "web", now=1.0)}
    # Another service has its own allowance; an existing name still takes values.
    metrics.put("default", "api", "one_more", 1.0, now=1.0)
    metrics.put("default", "web", "m0", 2.0, now=1.0)
    metrics.put("default", "web", "one_more", 1.0, now=RETENTION + 1)


def test_tasks_per_name_are_bounded() -> None:
    metrics = CustomMetrics()
    for i in range(MAX_TASKS_PER_NAME):
        metrics.put("default", "web", "rps", 1.0, now=0.0, task_id=f"{i:032x}")
    with pytest.raises(ResourceExhausted):
        metrics.put("default", "web", "rps", 1.0, now=0.0, task_id=T1)
    metrics.put("default", "web", "rps", 2.0, now=0.0, task_id=f"{0:032x}")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 1e12 + 1, -2e12])
def test_bad_values_are_refused_and_nothing_is_stored(value: float) -> None:
    metrics = CustomMetrics()
    with pytest.raises(InvalidArgument):
        metrics.put("default", "web", "rps", value, now=0.0)
    assert metrics.latest("default", "web", now=0.0) == []


@pytest.mark.parametrize(
    "name", ["", "Rps", "1rps", "_rps", "rps-total", "r" * 64, "rps\n", "r\u00e9ps", "rps total"]
)
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidArgument):
        check_name(name)
    with pytest.raises(InvalidArgument):
        CustomMetrics().put("default", "web", name, 1.0, now=0.0)


@pytest.mark.parametrize("name", ["r", "queue_depth", "r" * 63, "p99_latency_ms"])
def test_good_names_pass(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(("text", "expected"), [("12", 12.0), (" -3.5\n", -3.5), ("1e12", 1e12), ("0", 0.0)])
def test_values_parse_from_text(text: str, expected: float) -> None:
    assert parse_value(text) == expected


@pytest.mark.parametrize("text", ["", " ", "nan", "inf", "-Infinity", "1e13", "abc", "1" * 41, "0x10"])
def test_bad_value_texts_are_refused(text: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_value(text)


@pytest.mark.parametrize("task_id", ["A" * 32, "a" * 31, "a" * 33, "g" * 32])
def test_bad_task_ids_are_refused(task_id: str) -> None:
    with pytest.raises(InvalidArgument):
        check_task_id(task_id)


def test_values_in_all_are_bounded_and_counted_back_down_when_they_expire(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(custom_metrics, "MAX_SAMPLES", 3)
    metrics = CustomMetrics()
    metrics.put("default", "web", "rps", 1.0, now=0.0, task_id=T1)
    metrics.put("default", "web", "rps", 1.0, now=0.0, task_id=T2)
    metrics.put("default", "api", "queue_depth", 1.0, now=0.0)
    metrics.put("default", "api", "queue_depth", 2.0, now=1.0)  # a known source: no new value kept
    with pytest.raises(ResourceExhausted):
        metrics.put("default", "db", "rps", 1.0, now=1.0, task_id=T3)
    assert metrics.latest("default", "db", now=1.0) == []
    assert metrics.samples == 3
    # A put after the retention first forgets what expired.
    metrics.put("default", "db", "rps", 1.0, now=RETENTION + 1.0, task_id=T3)
    assert metrics.samples == 2  # api's queue_depth (put at 1.0) and db's rps
