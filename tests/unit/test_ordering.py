"""Container ordering and restarts in place (pure): dependency conditions, start and stop
order, ECS's restartPolicy, and the reconciler's Restart plan."""

from __future__ import annotations

import pytest

from agent import ordering
from agent.ordering import Seen, Verdict
from agent.reconciler import Report, Restart, Stop, plan
from agent.runtime.driver import ContainerHealth, ContainerPhase, ObservedContainer, ObservedTask
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb
from controlplane import lifecycle

D = pb.ContainerDependency
RUNNING, EXITED, CREATED = ContainerPhase.RUNNING, ContainerPhase.EXITED, ContainerPhase.CREATED


@pytest.mark.parametrize(
    ("condition", "seen", "expected"),
    [
        (D.START, Seen(CREATED), Verdict.WAITING),
        (D.START, Seen(RUNNING), Verdict.MET),
        (D.START, Seen(EXITED, 1), Verdict.MET),  # it started
        (D.COMPLETE, Seen(RUNNING), Verdict.WAITING),
        (D.COMPLETE, Seen(EXITED, 0), Verdict.MET),
        (D.COMPLETE, Seen(EXITED, 3), Verdict.MET),
        (D.SUCCESS, Seen(RUNNING), Verdict.WAITING),
        (D.SUCCESS, Seen(EXITED, 0), Verdict.MET),
        (D.SUCCESS, Seen(EXITED, 1), Verdict.NEVER),
        (D.HEALTHY, Seen(RUNNING, health=ContainerHealth.STARTING), Verdict.WAITING),
        (D.HEALTHY, Seen(RUNNING, health=ContainerHealth.UNHEALTHY), Verdict.WAITING),
        (D.HEALTHY, Seen(RUNNING, health=ContainerHealth.HEALTHY), Verdict.MET),
        (D.HEALTHY, Seen(EXITED, 0), Verdict.NEVER),
        (D.CONDITION_UNSPECIFIED, Seen(RUNNING), Verdict.NEVER),
    ],
)
def test_conditions_as_ecs_means_them(
    condition: pb.ContainerDependency.Condition.ValueType, seen: Seen, expected: Verdict
) -> None:
    assert ordering.verdict(condition, seen) == expected


def app(*dependencies: tuple[str, pb.ContainerDependency.Condition.ValueType]) -> pb.ContainerDefinition:
    return pb.ContainerDefinition(
        name="app",
        essential=True,
        depends_on=[D(container_name=name, condition=condition) for name, condition in dependencies],
    )


def test_a_container_waits_for_every_dependency_and_says_which() -> None:
    definition = app(("init", D.COMPLETE), ("sidecar", D.HEALTHY))
    assert ordering.waiting_on(
        definition, {"init": Seen(RUNNING), "sidecar": Seen(RUNNING, health=ContainerHealth.HEALTHY)}
    ) == (Verdict.WAITING, "init to be COMPLETE")
    assert ordering.waiting_on(
        definition, {"init": Seen(EXITED, 0), "sidecar": Seen(RUNNING, health=ContainerHealth.STARTING)}
    ) == (Verdict.WAITING, "sidecar to be HEALTHY")
    assert ordering.waiting_on(
        definition, {"init": Seen(EXITED, 0), "sidecar": Seen(RUNNING, health=ContainerHealth.HEALTHY)}
    ) == (Verdict.MET, "")
    assert ordering.waiting_on(app(), {}) == (Verdict.MET, "")


def test_a_condition_that_can_never_be_met_fails_at_once_naming_container_and_condition() -> None:
    verdict, reason = ordering.waiting_on(
        app(("sidecar", D.HEALTHY), ("migrate", D.SUCCESS)),
        {"sidecar": Seen(RUNNING), "migrate": Seen(EXITED, 1)},
    )
    assert verdict is Verdict.NEVER
    assert (
        reason == "DependencyError: container app needs migrate to be SUCCESS, but migrate exited with code 1"
    )


def test_containers_stop_in_reverse_dependency_order() -> None:
    definitions = [
        pb.ContainerDefinition(name="app", depends_on=[D(container_name="db", condition=D.START)]),
        pb.ContainerDefinition(name="db"),
        pb.ContainerDefinition(name="log"),
    ]
    assert ordering.stop_order(definitions) == [2, 0, 1]


def container(
    name: str, *dependencies: tuple[str, pb.ContainerDependency.Condition.ValueType], timeout: int = 0
) -> pb.ContainerDefinition:
    return pb.ContainerDefinition(
        name=name,
        start_timeout=timeout,
        depends_on=[D(container_name=n, condition=condition) for n, condition in dependencies],
    )


# The review's case: the app waits for migrate's SUCCESS, and migrate needs db up (at run time,
# not through dependsOn): db must not wait behind the app.
MIGRATING = [container("app", ("migrate", D.SUCCESS)), container("migrate", timeout=30), container("db")]
# A chain: app waits for init to COMPLETE, init for sidecar to be HEALTHY (no startTimeout: 600 s).
CHAIN = [
    container("app", ("init", D.COMPLETE)),
    container("init", ("sidecar", D.HEALTHY)),
    container("sidecar"),
]
HEALTHY = Seen(RUNNING, health=ContainerHealth.HEALTHY)
TIMEOUT_30 = (
    "DependencyTimeout: container app waited for migrate to be SUCCESS, which migrate did not reach "
    "within 30s of its start (its startTimeout)"
)


@pytest.mark.parametrize(
    ("definitions", "seen", "started_at", "now", "step"),
    [
        # Nothing started: every container without dependsOn starts at once, together.
        (MIGRATING, {}, {}, 0.0, ordering.Step(start=(1, 2))),
        (MIGRATING, {"migrate": Seen(RUNNING)}, {"migrate": 0.0, "db": 0.0}, 5.0, ordering.Step()),
        (
            MIGRATING,
            {"migrate": Seen(EXITED, 0)},
            {"migrate": 0.0, "db": 0.0},
            5.0,
            ordering.Step(start=(0,)),
        ),
        (
            MIGRATING,
            {"migrate": Seen(EXITED, 1)},
            {"migrate": 0.0, "db": 0.0},
            5.0,
            ordering.Step(
                failed="DependencyError: container app needs migrate to be SUCCESS, "
                "but migrate exited with code 1"
            ),
        ),
        # The timeout is migrate's own startTimeout, counted from migrate's start.
        (MIGRATING, {"migrate": Seen(RUNNING)}, {"migrate": 10.0, "db": 0.0}, 39.9, ordering.Step()),
        (
            MIGRATING,
            {"migrate": Seen(RUNNING)},
            {"migrate": 10.0, "db": 0.0},
            40.0,
            ordering.Step(failed=TIMEOUT_30),
        ),
        (
            MIGRATING,
            {"migrate": Seen(EXITED, 0)},
            {"migrate": 0.0, "db": 0.0},
            999.0,
            ordering.Step(start=(0,)),
        ),
        # All started: nothing left to do.
        (MIGRATING, {}, {"app": 1.0, "migrate": 0.0, "db": 0.0}, 5.0, ordering.Step()),
        (CHAIN, {}, {}, 0.0, ordering.Step(start=(2,))),
        (CHAIN, {"sidecar": HEALTHY}, {"sidecar": 0.0}, 1.0, ordering.Step(start=(1,))),
        # The app waits on init, which is not started: no clock runs for the app's wait.
        (CHAIN, {"sidecar": Seen(RUNNING)}, {"sidecar": 0.0}, 599.0, ordering.Step()),
        (
            CHAIN,
            {"sidecar": Seen(RUNNING)},
            {"sidecar": 0.0},
            600.0,
            ordering.Step(
                failed="DependencyTimeout: container init waited for sidecar to be HEALTHY, which sidecar "
                "did not reach within 600s of its start (its startTimeout)"
            ),
        ),
        # START has no time limit (ECS).
        (
            [container("app", ("db", D.START)), container("db", timeout=2)],
            {"db": Seen(RUNNING)},
            {"db": 0.0},
            100.0,
            ordering.Step(start=(0,)),
        ),
    ],
)
def test_every_container_whose_dependencies_are_met_starts_at_once(
    definitions: list[pb.ContainerDefinition],
    seen: dict[str, Seen],
    started_at: dict[str, float],
    now: float,
    step: ordering.Step,
) -> None:
    assert ordering.next_step(definitions, seen, started_at, now) == step


def policy(ignored: tuple[int, ...] = (), period: int = 0, enabled: bool = True) -> pb.RestartPolicy:
    return pb.RestartPolicy(enabled=enabled, ignored_exit_codes=ignored, restart_attempt_period=period)


@pytest.mark.parametrize(
    ("restart_policy", "exit_code", "ran_for", "due"),
    [
        (policy(period=60), 1, 60.0, True),
        (policy(period=60), 1, 59.9, False),  # an early exit is never restarted
        (policy(period=60), 0, 61.0, True),  # exit 0 too, unless ignored
        (policy((0,), period=60), 0, 61.0, False),
        (policy((0, 2), period=60), 2, 600.0, False),
        (policy(), 1, 299.0, False),  # default period: 300 s
        (policy(), 1, 300.0, True),
        (policy(enabled=False, period=60), 1, 600.0, False),
        (policy(period=60), None, 600.0, False),  # exit code unknown: never guess
    ],
)
def test_restart_policy_as_ecs_decides(
    restart_policy: pb.RestartPolicy, exit_code: int | None, ran_for: float, due: bool
) -> None:
    assert ordering.restart_due(restart_policy, exit_code, ran_for) is due


TD = pb.TaskDefinition(
    family="web",
    revision=1,
    container_definitions=[
        pb.ContainerDefinition(name="web", essential=True, restart_policy=policy((0,), period=60)),
        pb.ContainerDefinition(name="log", essential=False),
    ],
)


def assignment(
    last: pb.TaskStatus.ValueType = pb.RUNNING, desired: pb.DesiredStatus.ValueType = pb.DESIRED_RUNNING
) -> dict[str, agent_pb.TaskAssignment]:
    return {
        "t": agent_pb.TaskAssignment(
            task_id="t", last_status=last, desired_status=desired, task_definition=TD
        )
    }


def web(
    phase: ContainerPhase,
    exit_code: int | None = None,
    started: float = 1000.0,
    finished: float = 0.0,
    restarts: int = 0,
) -> ObservedContainer:
    return ObservedContainer(
        "web",
        "web-id",
        phase,
        True,
        5,
        exit_code,
        started_at=started,
        finished_at=finished,
        restart_count=restarts,
    )


def log(phase: ContainerPhase = RUNNING, exit_code: int | None = None) -> ObservedContainer:
    return ObservedContainer("log", "log-id", phase, False, 5, exit_code, started_at=1000.0)


def task(*containers: ObservedContainer) -> dict[str, ObservedTask]:
    return {"t": ObservedTask("t", containers)}


def test_an_essential_container_that_ran_its_period_is_restarted_in_place() -> None:
    observed = task(web(EXITED, 1, finished=1060.0), log())
    assert plan(assignment(), observed, set(), {}) == [Restart("t", ("web-id",))]


def test_an_early_exit_stops_the_task_as_usual() -> None:
    observed = task(web(EXITED, 1, finished=1059.0, restarts=1), log())
    assert plan(assignment(), observed, set(), {}) == [Stop("t", 5)]
    (action,) = plan(
        assignment(), task(web(EXITED, 1, finished=1059.0, restarts=1), log(EXITED, 143)), set(), {}
    )
    assert isinstance(action, Report)
    assert (
        action.report.last_status == pb.STOPPED and action.report.stop_code == pb.ESSENTIAL_CONTAINER_EXITED
    )
    (state, _) = action.report.containers
    assert state.restart_count == 1


def test_an_ignored_exit_code_is_not_restarted() -> None:
    assert plan(assignment(), task(web(EXITED, 0, finished=5000.0), log()), set(), {}) == [Stop("t", 5)]


def test_unknown_times_are_never_guessed() -> None:
    assert plan(assignment(), task(web(EXITED, 1, started=0.0, finished=0.0), log()), set(), {}) == [
        Stop("t", 5)
    ]


def test_a_task_asked_to_stop_is_never_restarted() -> None:
    observed = task(web(EXITED, 1, finished=1060.0), log())
    assert plan(assignment(desired=pb.DESIRED_STOPPED), observed, set(), {}) == [Stop("t", 5)]


def test_a_busy_task_is_not_restarted_twice() -> None:
    assert plan(assignment(), task(web(EXITED, 1, finished=1060.0), log()), {"t"}, {}) == []


def test_a_non_essential_container_that_exits_leaves_the_task_running() -> None:
    assert plan(assignment(), task(web(RUNNING), log(EXITED, 0)), set(), {}) == []
    (action,) = plan(assignment(pb.PENDING), task(web(RUNNING), log(EXITED, 0)), set(), {})
    assert isinstance(action, Report) and action.report.last_status == pb.RUNNING


def test_the_restart_count_is_reported() -> None:
    (action,) = plan(assignment(pb.PENDING), task(web(RUNNING, restarts=2), log()), set(), {})
    assert isinstance(action, Report)
    assert [c.restart_count for c in action.report.containers] == [2, 0]


def test_a_restart_is_reported_at_once_until_etcd_records_it() -> None:
    restarted = task(web(RUNNING, restarts=1), log())
    (action,) = plan(assignment(), restarted, set(), {})
    assert isinstance(action, Report) and action.report.last_status == pb.RUNNING
    recorded = assignment()
    recorded["t"].restarts = 1
    assert plan(recorded, restarted, set(), {}) == []


def test_the_control_plane_writes_a_running_task_whose_containers_restarted() -> None:
    running = pb.Task(id="t", node_id="n1", last_status=pb.RUNNING)
    running.containers.add(name="web", restart_count=0)
    report = agent_pb.TaskStatusReport(task_id="t", last_status=pb.RUNNING)
    report.containers.add(name="web", restart_count=0)
    assert lifecycle.apply_report(running, "n1", report) is None
    report.containers[0].restart_count = 1
    updated = lifecycle.apply_report(running, "n1", report)
    assert updated is not None and updated.containers[0].restart_count == 1
    assert updated.last_status == pb.RUNNING
