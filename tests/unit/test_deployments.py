"""Rolling deployments, the circuit breaker and rollback, on a simulated world of tasks.

`deployments.account` and the service controller's `decide` are pure, so a
deployment can be played step by step: each step the controller decides, the
decision is applied, the invariants are checked, then tasks move on (start,
turn healthy or fail, stop). Tasks have a health check unless the world says
otherwise; those without one count for a rollout only once they have settled
(`controlplane/settling.py`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from berth import deployment_defaults
from berth.errors import InvalidArgument
from berth.v1 import operator_pb2 as api
from berth.v1 import resources_pb2 as pb
from controlplane import backoff, deployments, settling
from controlplane.controllers.services import decide
from controlplane.endpoints import endpoints

START = 1_000_000.0


def service(desired: int, minimum: int = 100, maximum: int = 200, delay: int = 0) -> pb.Service:
    config = deployment_defaults.defaults()
    config.minimum_healthy_percent = minimum
    config.maximum_percent = maximum
    config.deregistration_delay = delay
    created = pb.Service(
        cluster="default",
        name="web",
        task_definition="web:1",
        desired_count=desired,
        status=pb.SERVICE_ACTIVE,
        deployment_configuration=config,
        ports=[pb.ServicePort(port=80, container_port=80)],
    )
    return deployments.new_deployment(created, "web:1", backoff.timestamp(START))


@dataclass
class World:
    """A service and its tasks; `bad` task definitions fail to start, never turn healthy,
    or (`flash`) run for a second and exit; `checked`: the tasks have a health check."""

    service: pb.Service
    crash: set[str] = field(default_factory=set)
    never_healthy: set[str] = field(default_factory=set)
    # Tasks whose health check fails from now on (in steady state).
    sick: set[str] = field(default_factory=set)
    # Tasks the controller said were replaced for failing their health check, in order.
    replaced: list[str] = field(default_factory=list)
    flash: set[str] = field(default_factory=set)
    checked: bool = True
    # Every pass's decision said "steady" at least once.
    steady_seen: bool = False
    clock: float = START
    tasks: dict[str, pb.Task] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    ids: itertools.count[int] = field(default_factory=itertools.count)

    def now(self) -> float:
        return self.clock

    def step(self) -> None:
        """One controller pass, then the world moves on by one second."""
        change = deployments.account(self.service, list(self.tasks.values()), backoff.timestamp(self.clock))
        if change is not None:
            self.service = change.service
            self.events.extend(change.events)
        decision = decide(self.service, list(self.tasks.values()), now=self.clock)
        self.steady_seen = self.steady_seen or decision.steady
        # As the controller applies a decision (reasons, and a failed health check, kept from
        # deregistration to stop).
        self.replaced.extend(decision.unhealthy)
        for task_id in decision.unhealthy:
            self.tasks[task_id].failed_health_check = True
        for task_id in decision.stop:
            self.tasks[task_id].desired_status = pb.DESIRED_STOPPED
            self.tasks[task_id].stopped_reason = decision.reasons.get(task_id, "scaling")
        for task_id in decision.deregister:
            self.tasks[task_id].deregistered_at.CopyFrom(backoff.timestamp(self.clock))
            self.tasks[task_id].stopped_reason = decision.reasons.get(task_id, "scaling")
        current = deployments.primary(self.service)
        assert current is not None
        for _ in range(decision.start):
            task_id = f"t{next(self.ids)}"
            self.tasks[task_id] = pb.Task(
                id=task_id,
                service="web",
                cluster="default",
                task_definition=current.task_definition,
                deployment_id=current.id,
                desired_status=pb.DESIRED_RUNNING,
                last_status=pb.PENDING,
                node_id="n1",
                health_checked=self.checked,
                created_at=backoff.timestamp(self.clock),
            )
        self.check()
        self.clock += 1
        self.move_on()

    def check(self) -> None:
        """What a deployment promises at every instant (after the controller acted)."""
        desired = self.service.desired_count
        config = deployment_defaults.configuration(self.service)
        live = [t for t in self.tasks.values() if t.last_status != pb.STOPPED]
        assert len(live) <= deployments.maximum_total(desired, config), "over maximumPercent"
        if self.steady_once:
            assert self.healthy() >= deployments.minimum_healthy(desired, config), "under minimumHealthy"

    steady_once: bool = False

    def healthy(self) -> int:
        """HEALTHY, or without a health check RUNNING long enough to have settled."""
        return sum(
            1
            for t in self.tasks.values()
            if t.last_status == pb.RUNNING
            and t.desired_status == pb.DESIRED_RUNNING
            and not t.HasField("deregistered_at")
            and (t.health_status == pb.HEALTHY if t.health_checked else settling.has_settled(t, self.clock))
        )

    def move_on(self) -> None:
        for task in self.tasks.values():
            if task.last_status == pb.STOPPED:
                continue
            stamp = backoff.timestamp(self.clock)
            if task.desired_status == pb.DESIRED_STOPPED:
                task.last_status = pb.STOPPED
                task.stopped_at.CopyFrom(stamp)
                task.stop_code = task.stop_code or pb.SERVICE_SCHEDULER_INITIATED
            elif task.last_status == pb.PENDING and task.task_definition in self.crash:
                task.last_status = pb.STOPPED
                task.desired_status = pb.DESIRED_STOPPED
                task.stop_code = pb.ESSENTIAL_CONTAINER_EXITED
                task.stopped_at.CopyFrom(stamp)
            elif task.last_status == pb.PENDING:
                task.last_status = pb.RUNNING
                task.started_at.CopyFrom(stamp)
            elif task.task_definition in self.flash:
                # RUNNING for one second, as a container that exits at once looks to a
                # controller pass that lands between the agent's two reports.
                task.last_status = pb.STOPPED
                task.desired_status = pb.DESIRED_STOPPED
                task.stop_code = pb.ESSENTIAL_CONTAINER_EXITED
                task.has_exit_code, task.exit_code = True, 1
                task.stopped_at.CopyFrom(stamp)
            elif not task.health_checked:
                continue  # the agent reports no health
            elif task.task_definition in self.never_healthy or task.id in self.sick:
                task.health_status = pb.UNHEALTHY
            else:
                task.health_status = pb.HEALTHY

    def settle(self, steps: int = 200) -> None:
        for _ in range(steps):
            self.step()
            current = deployments.primary(self.service)
            assert current is not None
            if current.rollout_state != pb.IN_PROGRESS:
                break
        self.steady_once = True

    def deploy(self, task_definition: str) -> int:
        self.service = deployments.new_deployment(
            self.service, task_definition, backoff.timestamp(self.clock)
        )
        return self.service.deployment_count

    def running(self, task_definition: str) -> int:
        return sum(
            1
            for t in self.tasks.values()
            if t.task_definition == task_definition and t.last_status != pb.STOPPED
        )


def test_a_new_service_completes_its_first_deployment() -> None:
    world = World(service(3))
    world.settle()
    first = world.service.deployments[0]
    assert (first.id, first.status, first.rollout_state) == (1, pb.PRIMARY, pb.COMPLETED)
    assert world.events == ["deployment 1 completed: web:1, 3 tasks running"]
    assert world.healthy() == 3


@settings(max_examples=300, deadline=None)
@given(
    desired=st.integers(0, 12),
    minimum=st.integers(0, 100),
    maximum=st.integers(100, 200),
    delay=st.sampled_from([0, 2]),
    checked=st.booleans(),
)
def test_a_rolling_update_keeps_its_bounds_and_replaces_every_task(
    desired: int, minimum: int, maximum: int, delay: int, checked: bool
) -> None:
    if minimum >= maximum:
        return
    world = World(service(desired, minimum, maximum, delay), checked=checked)
    world.settle()
    deployment = world.deploy("web:2")
    world.settle()  # check() asserts both bounds at every step
    current = world.service.deployments[0]
    assert (current.id, current.rollout_state, current.task_definition) == (deployment, pb.COMPLETED, "web:2")
    assert [d.id for d in world.service.deployments] == [deployment]  # the old one is dropped
    assert world.running("web:1") == 0 and world.running("web:2") == desired
    assert world.healthy() == desired


def test_new_tasks_are_healthy_before_old_ones_leave_and_leavers_wait_out_the_delay() -> None:
    world = World(service(2, delay=3))
    world.settle()
    world.deploy("web:2")
    world.step()  # two new tasks start; the old two keep serving
    assert world.running("web:2") == 2 and world.healthy() == 2
    world.step()  # new ones RUNNING, health not known yet: nobody leaves
    assert all(not t.HasField("deregistered_at") for t in world.tasks.values())
    world.step()  # new ones HEALTHY this step: the old ones leave the endpoints, still running
    leaving = [t for t in world.tasks.values() if t.HasField("deregistered_at")]
    assert [t.task_definition for t in leaving] == ["web:1", "web:1"]
    assert all(t.desired_status == pb.DESIRED_RUNNING for t in leaving)
    world.step()
    world.step()
    assert all(t.desired_status == pb.DESIRED_RUNNING for t in leaving), "stopped before the delay"
    world.settle()
    assert all(world.tasks[t.id].last_status == pb.STOPPED for t in leaving)
    assert all("Replaced by deployment 2 (web:2)" in world.tasks[t.id].stopped_reason for t in leaving)


@pytest.mark.parametrize("bad", ["crash", "never_healthy"])
def test_a_bad_revision_trips_the_breaker_and_rolls_back(bad: str) -> None:
    world = World(service(6, delay=1))
    world.settle()
    getattr(world, bad).add("web:2")
    failed = world.deploy("web:2")
    world.settle()
    first = world.service.deployments[0]
    assert first.task_definition == "web:1" and first.status == pb.PRIMARY
    assert first.rolled_back_from == failed
    assert first.rollout_state == pb.COMPLETED
    # The failed deployment's tasks are gone, and it is no longer listed.
    assert world.running("web:2") == 0 and world.running("web:1") == 6
    assert world.events[-2].startswith(f"deployment {failed} failed: ")
    assert "rolled back to deployment 1 (web:1)" in world.events[-2]
    assert world.events[-1].startswith("rollback to deployment 1 (web:1) finished")


def test_a_task_unhealthy_in_steady_state_leaves_the_endpoints_is_replaced_then_stopped() -> None:
    world = World(service(2, delay=3))
    world.settle()
    world.steady_once = False  # a failing task is under the minimum until its replacement serves
    victim = next(iter(world.tasks))
    world.sick.add(victim)
    world.step()  # it turns UNHEALTHY
    world.step()  # out of the endpoints and replaced at once; still running
    task = world.tasks[victim]
    assert task.HasField("deregistered_at") and task.desired_status == pb.DESIRED_RUNNING
    assert task.failed_health_check and task.stopped_reason == "Task failed container health checks"
    assert len(world.tasks) == 3
    world.sick.discard(victim)  # healthy again during its delay: it leaves all the same
    world.step()
    world.step()
    assert task.desired_status == pb.DESIRED_RUNNING, "stopped before the delay"
    world.step()  # the delay is over
    assert task.desired_status == pb.DESIRED_STOPPED
    world.step()
    assert task.last_status == pb.STOPPED and backoff.is_failure(task)
    assert task.stopped_reason == "Task failed container health checks"
    for _ in range(5):
        world.step()
    # Replaced once, said once, counted once; the service is back at two healthy tasks.
    assert world.replaced == [victim] and len(world.tasks) == 3
    assert world.healthy() == 2
    state = backoff.advance(pb.ServiceBackoff(), list(world.tasks.values()), world.clock, backoff.Policy())
    assert (state.failed_tasks, state.last_failure) == (1, "failed its health check")


def test_unhealthy_stops_count_as_failures() -> None:
    task = pb.Task(last_status=pb.STOPPED, stop_code=pb.SERVICE_SCHEDULER_INITIATED, failed_health_check=True)
    assert backoff.is_failure(task)
    assert not backoff.is_failure(pb.Task(last_status=pb.STOPPED, stop_code=pb.SERVICE_SCHEDULER_INITIATED))


@pytest.mark.parametrize(("desired", "threshold"), [(1, 3), (6, 3), (7, 4), (10, 5), (1000, 200)])
def test_the_failure_threshold_is_ecs(desired: int, threshold: int) -> None:
    assert deployments.failure_threshold(desired) == threshold


def test_without_rollback_the_deployment_fails_and_stays() -> None:
    world = World(service(3))
    world.service.deployment_configuration.rollback = False
    world.settle()
    world.crash.add("web:2")
    world.deploy("web:2")
    world.settle()
    first = world.service.deployments[0]
    assert (first.task_definition, first.rollout_state) == ("web:2", pb.FAILED)
    assert "rollback is off" in first.rollout_state_reason
    assert world.running("web:1") == 3, "the old tasks keep serving"


def test_a_first_deployment_that_fails_has_nothing_to_return_to() -> None:
    world = World(service(3))
    world.crash.add("web:1")
    world.settle()
    first = world.service.deployments[0]
    assert first.rollout_state == pb.FAILED
    assert "no earlier deployment completed" in first.rollout_state_reason


def test_a_deployment_replaced_mid_way_is_dropped_and_the_newest_wins() -> None:
    world = World(service(4))
    world.settle()
    world.deploy("web:2")
    world.step()
    world.deploy("web:3")
    world.settle()
    assert [d.task_definition for d in world.service.deployments] == ["web:3"]
    assert world.running("web:3") == 4 and world.running("web:1") == world.running("web:2") == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (api.DeploymentOptions(minimum_healthy_percent=101), "over 100"),
        (api.DeploymentOptions(maximum_percent=99), "out of range"),
        (api.DeploymentOptions(maximum_percent=201), "out of range"),
        (api.DeploymentOptions(minimum_healthy_percent=100, maximum_percent=100), "must be below"),
        (api.DeploymentOptions(minimum_healthy_percent=90, maximum_percent=150), None),
        (api.DeploymentOptions(deregistration_delay=3601), "too long"),
    ],
)
def test_configuration_is_checked(options: api.DeploymentOptions, message: str | None) -> None:
    if message is None:
        merged = deployments.configure(deployment_defaults.defaults(), options)
        assert (merged.minimum_healthy_percent, merged.maximum_percent) == (90, 150)
        assert merged.circuit_breaker and merged.rollback  # untouched
        return
    with pytest.raises(InvalidArgument, match=message):
        deployments.configure(deployment_defaults.defaults(), options)


def test_old_records_without_deployments_get_one() -> None:
    old = pb.Service(name="web", task_definition="web:3", desired_count=1, status=pb.SERVICE_ACTIVE)
    task = pb.Task(id="a", task_definition="web:3", last_status=pb.RUNNING, desired_status=pb.DESIRED_RUNNING)
    change = deployments.account(old, [task], backoff.timestamp(START))
    assert change is not None
    (first,) = change.service.deployments
    assert (first.id, first.task_definition, first.rollout_state) == (1, "web:3", pb.COMPLETED)
    assert deployments.owner(task, change.service) == 1


def _running(task_id: str, started: float, checked: bool = False) -> pb.Task:
    task = pb.Task(
        id=task_id,
        service="web",
        cluster="default",
        task_definition="web:1",
        deployment_id=1,
        desired_status=pb.DESIRED_RUNNING,
        last_status=pb.RUNNING,
        node_id="n1",
        health_checked=checked,
        network_bindings=[pb.NetworkBinding(container_port=80, host_port=32768)],
    )
    task.started_at.CopyFrom(backoff.timestamp(started))
    return task


def test_a_task_without_a_health_check_counts_once_it_has_settled() -> None:
    """RUNNING for half a second proves nothing: no COMPLETED, no steady state; at SETTLE_SECONDS both."""
    fresh = service(1)
    started = START + 10
    task = _running("a", started)
    early = started + 0.5
    assert deployments.account(fresh, [task], backoff.timestamp(early)) is None
    decision = decide(fresh, [task], now=early)
    assert not decision.steady
    assert decision.settles_at == started + settling.SETTLE_SECONDS  # when to look again
    # Endpoints do not wait: a RUNNING task without a check gets traffic at once.
    node = pb.Node(id="n1", address="10.0.0.1", status=pb.READY)
    assert [e.task_id for e in endpoints(fresh, [task], {"n1": node})] == ["a"]

    settled = started + settling.SETTLE_SECONDS
    change = deployments.account(fresh, [task], backoff.timestamp(settled))
    assert change is not None
    assert change.service.deployments[0].rollout_state == pb.COMPLETED
    assert change.events == ("deployment 1 completed: web:1, 1 task running",)
    decision = decide(change.service, [task], now=settled)
    assert decision.steady and not decision.settles_at


def test_a_task_with_a_health_check_counts_when_healthy_at_once() -> None:
    fresh = service(1)
    task = _running("a", START + 10, checked=True)
    task.health_status = pb.HEALTHY
    at = START + 10.5
    change = deployments.account(fresh, [task], backoff.timestamp(at))
    assert change is not None and change.service.deployments[0].rollout_state == pb.COMPLETED
    decision = decide(change.service, [task], now=at)
    assert decision.steady and not decision.settles_at


def test_a_first_deployment_whose_tasks_exit_at_once_fails_and_is_never_steady() -> None:
    world = World(service(1), checked=False)
    world.flash.add("web:1")
    world.settle()
    first = world.service.deployments[0]
    assert first.rollout_state == pb.FAILED, world.events
    assert not any(" completed: " in e for e in world.events), world.events
    assert not world.steady_seen


def test_new_tasks_that_exit_at_once_never_take_old_ones_out() -> None:
    world = World(service(3, minimum=100, maximum=200, delay=1), checked=False)
    world.settle()
    serving = {t.id for t in world.tasks.values() if t.last_status == pb.RUNNING}
    assert len(serving) == 3
    world.flash.add("web:2")
    failed = world.deploy("web:2")
    world.settle()
    # Every old task served throughout: none was deregistered or stopped for a new one.
    for task_id in serving:
        old = world.tasks[task_id]
        assert old.last_status == pb.RUNNING and not old.HasField("deregistered_at"), old
    first = world.service.deployments[0]
    assert (first.task_definition, first.rolled_back_from, first.rollout_state) == (
        "web:1",
        failed,
        pb.COMPLETED,
    )
