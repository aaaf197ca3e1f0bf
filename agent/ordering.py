"""When a task's containers may start or restart, and the order they stop in (pure).

While a task starts, `next_step` looks at its containers as seen and says
which to start now: every container not yet started whose `dependsOn`
conditions are all met (`waiting_on`), so containers without dependencies
start at once and one container's wait never holds up another, as in ECS.
The start fails at once when a condition can never be met any more (SUCCESS
after a non-zero exit, HEALTHY after an exit), or when a container waited on
for COMPLETE, SUCCESS or HEALTHY has not got there within its own
startTimeout from its own start (ECS's hasDependencyTimedOut; unset: the
agent's default, `berth.taskdef_lifecycle.DEFAULT_START_TIMEOUT`).
Containers stop in the reverse of the dependency order (`stop_order`:
dependents first).

`due_restarts` is ECS's restartPolicy: a container that exited is restarted
in place when its exit code is not ignored and it ran at least
restartAttemptPeriod seconds since its last (re)start.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from agent.runtime.driver import ContainerHealth, ContainerPhase, ObservedContainer
from berth.taskdef_lifecycle import (
    CONDITION_NAMES,
    dependency_order,
    restart_attempt_period,
    start_timeout,
)
from berth.v1 import resources_pb2 as pb


class Verdict(Enum):
    MET = "met"
    WAITING = "waiting"
    NEVER = "never"  # the dependency can no longer meet the condition


@dataclass(frozen=True)
class Seen:
    """What the agent sees of a dependency while the task starts."""

    phase: ContainerPhase
    exit_code: int | None = None
    health: ContainerHealth = ContainerHealth.NONE


def verdict(condition: pb.ContainerDependency.Condition.ValueType, seen: Seen) -> Verdict:
    """Whether a dependency in state `seen` meets `condition` (ECS's meanings)."""
    exited = seen.phase is ContainerPhase.EXITED
    if condition == pb.ContainerDependency.START:
        if seen.phase is ContainerPhase.RUNNING:
            return Verdict.MET
        return Verdict.MET if exited else Verdict.WAITING  # it started, and has exited since
    if condition == pb.ContainerDependency.COMPLETE:
        return Verdict.MET if exited else Verdict.WAITING
    if condition == pb.ContainerDependency.SUCCESS:
        if not exited:
            return Verdict.WAITING
        return Verdict.MET if seen.exit_code == 0 else Verdict.NEVER
    if condition == pb.ContainerDependency.HEALTHY:
        if exited:
            return Verdict.NEVER
        return Verdict.MET if seen.health is ContainerHealth.HEALTHY else Verdict.WAITING
    return Verdict.NEVER


def condition_name(condition: pb.ContainerDependency.Condition.ValueType) -> str:
    return CONDITION_NAMES.get(condition, "UNKNOWN")


def waiting_on(definition: pb.ContainerDefinition, seen: Mapping[str, Seen]) -> tuple[Verdict, str]:
    """Whether `definition` may start, given its dependencies as seen: MET (start it),
    WAITING (look again), or NEVER with the stopped reason (name, condition, what happened)."""
    waiting = ""
    for dependency in definition.depends_on:
        state = seen.get(dependency.container_name, Seen(ContainerPhase.CREATED))
        result = verdict(dependency.condition, state)
        name = condition_name(dependency.condition)
        if result is Verdict.NEVER:
            what = (
                f"exited with code {state.exit_code}"
                if state.phase is ContainerPhase.EXITED
                else "cannot meet it"
            )
            return Verdict.NEVER, (
                f"DependencyError: container {definition.name} needs {dependency.container_name} "
                f"to be {name}, but {dependency.container_name} {what}"
            )
        if result is Verdict.WAITING and not waiting:
            waiting = f"{dependency.container_name} to be {name}"
    if waiting:
        return Verdict.WAITING, waiting
    return Verdict.MET, ""


# The conditions a dependency must reach within its startTimeout (ECS): START has no limit.
_TIMED_CONDITIONS = frozenset(
    {pb.ContainerDependency.COMPLETE, pb.ContainerDependency.SUCCESS, pb.ContainerDependency.HEALTHY}
)


def timed_out_reason(
    definition: pb.ContainerDefinition, dependency: pb.ContainerDependency, timeout: int
) -> str:
    name = dependency.container_name
    return (
        f"DependencyTimeout: container {definition.name} waited for {name} to be "
        f"{condition_name(dependency.condition)}, which {name} did not reach within {timeout}s of "
        "its start (its startTimeout)"
    )


def _timed_out(
    definition: pb.ContainerDefinition,
    by_name: Mapping[str, pb.ContainerDefinition],
    seen: Mapping[str, Seen],
    started_at: Mapping[str, float],
    now: float,
) -> str:
    """Why `definition`'s wait is over, or "": a dependency it waits on for COMPLETE, SUCCESS or
    HEALTHY has not met it within that dependency's own startTimeout from its own start."""
    for dependency in definition.depends_on:
        name = dependency.container_name
        if dependency.condition not in _TIMED_CONDITIONS or name not in started_at:
            continue  # START has no limit; one not started yet is on no clock
        state = seen.get(name, Seen(ContainerPhase.CREATED))
        if verdict(dependency.condition, state) is Verdict.MET:
            continue
        timeout = start_timeout(by_name[name])
        if now - started_at[name] >= timeout:
            return timed_out_reason(definition, dependency, timeout)
    return ""


@dataclass(frozen=True)
class Step:
    """What a starting task does next: start these containers (indexes), or fail with `failed`."""

    start: tuple[int, ...] = ()
    failed: str = ""


def next_step(
    definitions: Sequence[pb.ContainerDefinition],
    seen: Mapping[str, Seen],
    started_at: Mapping[str, float],
    now: float,
) -> Step:
    """Which of a starting task's containers to start now: every one not yet started (not in
    `started_at`: name -> when it was started, on the clock of `now`) whose dependencies are all
    met as `seen`; or the reason the start fails (a condition never met, a dependency's
    startTimeout passed). Nothing to start and no failure: look again later (or all started)."""
    by_name = {d.name: d for d in definitions}
    start = []
    for index, definition in enumerate(definitions):
        if definition.name in started_at:
            continue
        result, why = waiting_on(definition, seen)
        if result is Verdict.NEVER:
            return Step(failed=why)
        if result is Verdict.MET:
            start.append(index)
        elif reason := _timed_out(definition, by_name, seen, started_at, now):
            return Step(failed=reason)
    return Step(start=tuple(start))


def stop_order(definitions: Sequence[pb.ContainerDefinition]) -> list[int]:
    """Indexes in the order they stop: dependents before what they depend on (ECS)."""
    return list(reversed(dependency_order(definitions)))


def restart_due(policy: pb.RestartPolicy, exit_code: int | None, ran_for: float) -> bool:
    """ECS's restartPolicy for one exit: restart when enabled, the exit code is known and not
    ignored, and the container ran at least restartAttemptPeriod seconds since its last
    (re)start. An early exit is never restarted (that is what stops a crash loop)."""
    if not policy.enabled or exit_code is None:
        return False
    if exit_code in policy.ignored_exit_codes:
        return False
    return ran_for >= restart_attempt_period(policy)


def due_restarts(
    definitions: Sequence[pb.ContainerDefinition], containers: Sequence[ObservedContainer]
) -> list[ObservedContainer]:
    """The exited containers of a task that their restartPolicy restarts now."""
    policies = {d.name: d.restart_policy for d in definitions if d.HasField("restart_policy")}
    due = []
    for c in containers:
        policy = policies.get(c.name)
        if policy is None or c.phase is not ContainerPhase.EXITED:
            continue
        if not (c.started_at and c.finished_at):
            continue  # times unknown (not yet inspected): never guess
        if restart_due(policy, c.exit_code, c.finished_at - c.started_at):
            due.append(c)
    return due
