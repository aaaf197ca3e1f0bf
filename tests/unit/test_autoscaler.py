"""Scaling policies and the autoscaler controller on the MemoryStore, with a fake MetricSource."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
from prometheus_client import REGISTRY

from berth.errors import InvalidArgument, NotFound
from berth.v1 import resources_pb2 as pb
from controlplane.autoscaling import NoMetrics, Observation
from controlplane.cache import ClusterCache
from controlplane.controllers.autoscaler import Autoscaler, deploying
from controlplane.operations.scaling import ScalingPolicies, checked
from controlplane.operations.services import ServiceChange, ServiceSpec
from controlplane.store import keys
from controlplane.store.memory import MemoryStore
from tests.unit.conftest import caught_up
from tests.unit.test_operations import Ops, build


def cpu_policy(**changes: object) -> pb.ScalingPolicy:
    values: dict[str, object] = {"metric": "cpu", "target": 60.0, "min_count": 1, "max_count": 10}
    values.update(changes)
    return pb.ScalingPolicy(**values)  # type: ignore[arg-type]


# -- validation --------------------------------------------------------------------


def test_defaults_are_filled_in() -> None:
    filled = checked(cpu_policy(), 100)
    assert (filled.scale_out_window, filled.scale_in_window, filled.warmup, filled.tolerance) == (
        0.0,
        300.0,
        60.0,
        0.1,
    )
    # Given values, zero included, are kept.
    kept = checked(cpu_policy(scale_in_window=0.0, warmup=5.0, tolerance=0.0), 100)
    assert (kept.scale_in_window, kept.warmup, kept.tolerance) == (0.0, 5.0, 0.0)


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"target": 0.0}, "target 0.0 is out of range"),
        ({"target": -5.0}, "target -5.0 is out of range"),
        ({"target": math.nan}, "target nan is out of range"),
        ({"target": math.inf}, "target inf is out of range"),
        ({"target": 1001.0}, "at most 1000"),
        ({"min_count": 5, "max_count": 2}, "min 5 is above max 2"),
        ({"max_count": 0, "min_count": 0}, "max 0 is too low"),
        ({"max_count": 101}, "over the quota of 100"),
        ({"max_step_out": 101}, "max step 101 is over the quota"),
        ({"metric": "gpu"}, "metric 'gpu' is unknown"),
        ({"metric": "custom:"}, "is unknown"),
        ({"metric": "custom:Queue"}, "is unknown"),
        ({"metric": "custom:" + "q" * 64}, "is unknown"),
        ({"metric": "cpu\n"}, "metric 'cpu\\\\n' is unknown"),
        ({"scale_in_window": -1.0}, "scale-in window -1.0 is out of range"),
        ({"scale_out_window": 3601.0}, "scale-out window 3601.0 is out of range"),
        ({"warmup": math.nan}, "warm-up nan is out of range"),
        ({"tolerance": 0.95}, "tolerance 0.95 is out of range"),
    ],
)
def test_bad_policies_are_refused_with_one_line(changes: dict[str, object], says: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        checked(cpu_policy(**changes), 100)
    assert says in str(refused.value)
    assert "\n" not in str(refused.value)


def test_a_custom_metric_may_have_a_large_target() -> None:
    assert checked(cpu_policy(metric="custom:queue_depth", target=5000.0), 100).target == 5000.0


async def service_of(ops: Ops, name: str, desired: int = 1) -> None:
    await ops.services.create(ServiceSpec("default", name, "web", desired))


async def test_a_refused_put_writes_nothing(store: MemoryStore, cache: ClusterCache) -> None:
    ops = await build(store, cache)
    await service_of(ops, "web")
    policies = ScalingPolicies(store, ops.services)
    before = store.revision
    with pytest.raises(InvalidArgument):
        await policies.put("default", "web", cpu_policy(min_count=3, max_count=2))
    with pytest.raises(NotFound):
        await policies.put("default", "nope", cpu_policy())
    with pytest.raises(NotFound):
        await policies.delete("default", "web")  # it has none
    assert store.revision == before


async def test_put_and_delete(store: MemoryStore, cache: ClusterCache) -> None:
    ops = await build(store, cache)
    await service_of(ops, "web")
    policies = ScalingPolicies(store, ops.services)
    service = await policies.put("default", "web", cpu_policy())
    assert service.scaling_policy.max_count == 10 and service.scaling_policy.scale_in_window == 300
    removed = await policies.delete("default", "web")
    assert not removed.HasField("scaling_policy") and removed.desired_count == 1
    events = await ops.services.events("default", "web")
    assert events[0].message == "scaling policy removed: the desired count stays 1"
    assert events[1].message.startswith("scaling policy set: cpu target 60%, 1-10 tasks")


# -- the controller ----------------------------------------------------------------


class Load:
    """A fake MetricSource: a service's total CPU load, shared by its desired tasks."""

    def __init__(self, cache: ClusterCache) -> None:
        self.cache = cache
        self.total: dict[str, float] = {}
        self.broken: set[str] = set()

    def observe(
        self, cluster: str, service: str, metric: str, tasks: Sequence[pb.Task], now: float, warmup: float
    ) -> Observation | None:
        if service in self.broken:
            raise RuntimeError("the metric source broke")
        found = self.cache.service(cluster, service)
        assert found is not None
        count = found.value.desired_count
        return Observation(value=self.total[service] / max(count, 1), counted=count, warming=0, missing=0)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def run_for(
    autoscaler: Autoscaler, store: MemoryStore, cache: ClusterCache, clock: Clock, seconds: int
) -> None:
    for _ in range(0, seconds, 5):
        clock.now += 5
        await autoscaler.reconcile()
        await caught_up(cache, store)


def desired(cache: ClusterCache, name: str) -> int:
    found = cache.service("default", name)
    assert found is not None
    return found.value.desired_count


async def scaling_events(store: MemoryStore, name: str) -> list[str]:
    found = await store.get(keys.events("default", name), pb.ServiceEvents)
    assert found is not None
    return [e.message for e in found.value.events if "scaling out" in e.message or "scaling in" in e.message]


async def test_scales_out_under_load_and_back_to_min_without_flapping(
    store: MemoryStore, cache: ClusterCache
) -> None:
    ops = await build(store, cache)
    await service_of(ops, "web")
    await ScalingPolicies(store, ops.services).put("default", "web", cpu_policy())
    await caught_up(cache, store)
    load = Load(cache)
    clock = Clock()
    autoscaler = Autoscaler(store, cache, load, interval=0, clock=clock)

    load.total["web"] = 250.0  # 2.5 tasks' worth at 100 %: 5 tasks at 50 %
    await run_for(autoscaler, store, cache, clock, 60)
    assert desired(cache, "web") >= 3
    peak = desired(cache, "web")
    assert peak == 5  # ceil(250 / 60); in tolerance from then on

    # Noisy load around the target never changes the count.
    for total in (270.0, 290.0, 280.0, 300.0, 320.0, 300.0):
        load.total["web"] = total
        await run_for(autoscaler, store, cache, clock, 10)
    assert desired(cache, "web") == peak

    load.total["web"] = 10.0
    await run_for(autoscaler, store, cache, clock, 250)
    assert desired(cache, "web") == peak  # inside the 300 s scale-in window
    await run_for(autoscaler, store, cache, clock, 400)
    assert desired(cache, "web") == 1
    await run_for(autoscaler, store, cache, clock, 600)
    assert desired(cache, "web") == 1

    labels = {"cluster": "default", "service": "web"}
    assert REGISTRY.get_sample_value("berth_scaling_target", {**labels, "metric": "cpu"}) == 60.0
    assert REGISTRY.get_sample_value("berth_scaling_observed", {**labels, "metric": "cpu"}) == 10.0
    outs = REGISTRY.get_sample_value("berth_scaling_decisions_total", {**labels, "direction": "out"})
    ins = REGISTRY.get_sample_value("berth_scaling_decisions_total", {**labels, "direction": "in"})
    assert (outs, ins) == (1.0, 3.0)

    events = await scaling_events(store, "web")
    # Out once (1 -> 5), then in by halves at most (5 -> 3 -> 2 -> 1): bounded, no oscillation.
    assert events[0] == "cpu 250% > target 60%: scaling out from 1 to 5"
    assert len(events) <= 5, events
    assert all("scaling in" in e for e in events[1:]), events

    # Without a policy, the service's gauges go.
    await ScalingPolicies(store, ops.services).delete("default", "web")
    await caught_up(cache, store)
    await run_for(autoscaler, store, cache, clock, 5)
    assert REGISTRY.get_sample_value("berth_scaling_target", {**labels, "metric": "cpu"}) is None


async def test_one_services_failure_does_not_stop_the_others(store: MemoryStore, cache: ClusterCache) -> None:
    ops = await build(store, cache)
    policies = ScalingPolicies(store, ops.services)
    for name in ("bad", "good"):
        await service_of(ops, name)
        await policies.put("default", name, cpu_policy())
    await caught_up(cache, store)
    load = Load(cache)
    load.broken.add("bad")
    load.total.update(bad=500.0, good=180.0)
    clock = Clock()
    autoscaler = Autoscaler(store, cache, load, interval=0, clock=clock)
    await run_for(autoscaler, store, cache, clock, 20)
    assert desired(cache, "good") == 3
    assert desired(cache, "bad") == 1


async def test_an_operator_count_outside_the_limits_is_clamped(
    store: MemoryStore, cache: ClusterCache
) -> None:
    ops = await build(store, cache)
    await service_of(ops, "web")
    await ScalingPolicies(store, ops.services).put("default", "web", cpu_policy(max_count=4))

    await ops.services.update("default", "web", ServiceChange(desired_count=9))
    await caught_up(cache, store)
    load = Load(cache)
    load.total["web"] = 4 * 60.0
    clock = Clock()
    autoscaler = Autoscaler(store, cache, load, interval=0, clock=clock)
    await run_for(autoscaler, store, cache, clock, 20)
    assert desired(cache, "web") == 4
    found = await store.get(keys.events("default", "web"), pb.ServiceEvents)
    assert found is not None
    assert "desired count 9 is above the maximum 4: scaling to 4" in [e.message for e in found.value.events]


async def test_without_samples_it_holds_and_says_so_once(store: MemoryStore, cache: ClusterCache) -> None:
    ops = await build(store, cache)
    await service_of(ops, "web", desired=2)
    await ScalingPolicies(store, ops.services).put("default", "web", cpu_policy())
    await caught_up(cache, store)
    clock = Clock()
    autoscaler = Autoscaler(store, cache, NoMetrics(), interval=0, clock=clock)
    await run_for(autoscaler, store, cache, clock, 300)
    assert desired(cache, "web") == 2
    found = await store.get(keys.events("default", "web"), pb.ServiceEvents)
    assert found is not None
    holds = [e.message for e in found.value.events if "samples" in e.message]
    assert holds == ["no cpu samples for 30s or more: holding at 2 tasks"]


def test_only_a_rollout_replacing_tasks_holds_scale_in() -> None:
    first = pb.Deployment(id=1, status=pb.PRIMARY, rollout_state=pb.IN_PROGRESS)
    assert not deploying(pb.Service(deployments=[first]))  # a new service, or one just scaled out
    old = pb.Deployment(id=1, status=pb.DEPLOYMENT_ACTIVE, rollout_state=pb.COMPLETED)
    second = pb.Deployment(id=2, status=pb.PRIMARY, rollout_state=pb.IN_PROGRESS)
    assert deploying(pb.Service(deployments=[second, old]))
    failed = pb.Deployment(id=2, status=pb.PRIMARY, rollout_state=pb.FAILED)
    assert not deploying(pb.Service(deployments=[failed, old]))
