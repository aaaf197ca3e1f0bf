"""The order of a task's containers and when one may start or restart (pure).

A task's containers start in dependency order (`start_order`): each only once
every container it `dependsOn` met its condition (`waiting_on`), and stop in
the reverse order (`stop_order`: dependents first). A condition a dependency
can never meet any more (SUCCESS after a non-zero exit, HEALTHY or START
after an exit) fails the task's start at once, as does a wait longer than
the dependent container's startTimeout.

`restart_due` is ECS's restartPolicy: a container that exited is restarted in
place when its exit code is not ignored and it ran at least
restartAttemptPeriod seconds since its last (re)start.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from agent.runtime.driver import ContainerHealth, ContainerPhase, ObservedContainer
from berth.taskdef_lifecycle import CONDITION_NAMES, dependency_order, restart_attempt_period
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


def timed_out_reason(definition: pb.ContainerDefinition, waiting: str, timeout: int) -> str:
    return (
        f"DependencyTimeout: container {definition.name} waited {timeout}s (its startTimeout) for {waiting}"
    )


def start_order(definitions: Sequence[pb.ContainerDefinition]) -> list[int]:
    """Indexes of the task's containers in the order they start (dependencies first)."""
    return dependency_order(definitions)


def stop_order(definitions: Sequence[pb.ContainerDefinition]) -> list[int]:
    """Indexes in the order they stop: dependents before what they depend on (ECS)."""
    return list(reversed(start_order(definitions)))


def restart_due(policy: pb.RestartPolicy, exit_code: int | None, ran_for: float) -> bool:
    """ECS's restartPolicy for one exit: restart when enabled, the exit code is known and not
    ignored, and the container ran at least restartAttemptPeriod seconds since its last
    (re)start. An early exit is never restarted (that is what stops a crash loop)."""
    if not policy.enabled or exit_code is None:
        return False
    if exit_code in policy.ignored_exit_codes:
        return False
    return ran_for >= restart_attempt_period(policy)


def restarts(
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
