"""ECS's container ordering and lifecycle fields: `dependsOn`, `startTimeout`, `restartPolicy`.

`LifecycleSettings` is the JSON schema of one container's fields (types and
bounds) and `LifecycleSettings.apply` fills the protobuf message;
`check_lifecycle` checks their meaning across the whole task (names that
exist, no self-dependency, no cycle, HEALTHY only on a container with a
healthCheck, COMPLETE/SUCCESS never on an essential one), whichever client
sent it. `dependency_order` ranks a task's containers, each after those it
depends on (the agent stops them in the reverse order; it starts each as soon
as its conditions are met, `agent.ordering`); `to_ecs` writes the fields back
in ECS's shape.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Literal, Protocol

from pydantic import Field, field_validator

from berth.ecs_schema import EcsModel
from berth.errors import InvalidArgument
from berth.names import shown
from berth.v1 import resources_pb2 as pb

# The JSON fields this module owns (the container parser hands them over).
FIELDS = {"dependsOn": "depends_on", "startTimeout": "start_timeout", "restartPolicy": "restart_policy"}

MAX_DEPENDENCIES = 10  # a task has at most 10 containers: one entry per other container is enough
# startTimeout: how long a container that others wait on (COMPLETE, SUCCESS, HEALTHY) may take
# to get there, from its own start (the ECS agent's hasDependencyTimedOut). ECS documents 2-120 s
# for Fargate only and no bound for EC2; Berth takes 2 s to an hour. Unset, ECS waits without
# limit; Berth's agent gives up after 10 minutes, so no start waits forever. (ECS's agent setting
# ECS_CONTAINER_START_TIMEOUT is something else: how long one `docker start` call may take.)
MIN_START_TIMEOUT = 2
MAX_START_TIMEOUT = 3600
DEFAULT_START_TIMEOUT = 600
# restartPolicy: ECS's bounds and default.
MIN_RESTART_ATTEMPT_PERIOD = 60
MAX_RESTART_ATTEMPT_PERIOD = 1800
DEFAULT_RESTART_ATTEMPT_PERIOD = 300
MAX_IGNORED_EXIT_CODES = 50
MAX_EXIT_CODE = 255  # a process's exit status is one byte

CONDITIONS: dict[str, pb.ContainerDependency.Condition.ValueType] = {
    "START": pb.ContainerDependency.START,
    "COMPLETE": pb.ContainerDependency.COMPLETE,
    "SUCCESS": pb.ContainerDependency.SUCCESS,
    "HEALTHY": pb.ContainerDependency.HEALTHY,
}
CONDITION_NAMES = {value: name for name, value in CONDITIONS.items()}
# ECS: a container that must exit cannot be essential (its exit would stop the task).
_EXIT_CONDITIONS = frozenset({pb.ContainerDependency.COMPLETE, pb.ContainerDependency.SUCCESS})


def _int_or_string(value: Any) -> Any:
    if isinstance(value, str) and 0 < len(value) <= 16 and value.isascii() and value.strip().isdigit():
        return int(value)
    return value


class _Dependency(EcsModel):
    container_name: str = Field(alias="containerName", max_length=255)
    condition: Literal["START", "COMPLETE", "SUCCESS", "HEALTHY"]


class _RestartPolicy(EcsModel):
    enabled: bool
    ignored_exit_codes: list[Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]] = Field(
        default_factory=list, alias="ignoredExitCodes", max_length=MAX_IGNORED_EXIT_CODES
    )
    restart_attempt_period: int | None = Field(
        default=None, alias="restartAttemptPeriod", ge=MIN_RESTART_ATTEMPT_PERIOD, le=2**31
    )

    _coerce = field_validator("restart_attempt_period", mode="before")(_int_or_string)


class LifecycleSettings(EcsModel):
    """The JSON schema of the fields in FIELDS: types and bounds (meaning: check_lifecycle)."""

    depends_on: list[_Dependency] = Field(
        default_factory=list, alias="dependsOn", max_length=MAX_DEPENDENCIES
    )
    # An explicit 0 is refused, as ECS refuses it (stored, 0 would read as unset).
    start_timeout: int | None = Field(default=None, alias="startTimeout", ge=MIN_START_TIMEOUT, le=2**31)
    restart_policy: _RestartPolicy | None = Field(default=None, alias="restartPolicy")

    _coerce = field_validator("start_timeout", mode="before")(_int_or_string)

    @classmethod
    def take(cls, raw: dict[str, Any]) -> tuple[LifecycleSettings, dict[str, Any]]:
        """Split a container definition: these settings (validated), and every other field."""
        mine = {key: value for key, value in raw.items() if key in FIELDS}
        rest = {key: value for key, value in raw.items() if key not in FIELDS}
        return cls.model_validate(mine), rest

    def apply(self, c: pb.ContainerDefinition) -> None:
        """Write these settings into the container definition."""
        c.depends_on.extend(
            pb.ContainerDependency(container_name=d.container_name, condition=CONDITIONS[d.condition])
            for d in self.depends_on
        )
        c.start_timeout = self.start_timeout or 0
        policy = self.restart_policy
        if policy is not None:
            c.restart_policy.CopyFrom(
                pb.RestartPolicy(
                    enabled=policy.enabled,
                    ignored_exit_codes=policy.ignored_exit_codes,
                    restart_attempt_period=policy.restart_attempt_period or 0,
                )
            )


def start_timeout(c: pb.ContainerDefinition) -> int:
    """Seconds the containers that wait on `c` give it, from its start, to be COMPLETE, SUCCESS
    or HEALTHY (its own startTimeout, as in ECS; unset: DEFAULT_START_TIMEOUT)."""
    return c.start_timeout or DEFAULT_START_TIMEOUT


def restart_attempt_period(policy: pb.RestartPolicy) -> int:
    return policy.restart_attempt_period or DEFAULT_RESTART_ATTEMPT_PERIOD


class _Restarted(Protocol):
    @property
    def restart_count(self) -> int: ...


def restart_total(containers: Iterable[_Restarted]) -> int:
    """A task's restarts in place (restartPolicy), summed over its containers: the agent's
    observed containers, a status report's, or a stored task's."""
    return sum(c.restart_count for c in containers)


def dependency_order(containers: Sequence[pb.ContainerDefinition]) -> list[int]:
    """The indexes of the containers, each after every container it depends on, otherwise in
    task-definition order (reversed, the order they stop in). Raises InvalidArgument on a cycle or an
    unknown name (check_lifecycle says which; the agent only ever sees checked definitions)."""
    index = {c.name: i for i, c in enumerate(containers)}
    waits_for: list[set[int]] = []
    for i, c in enumerate(containers):
        needed = set()
        for d in c.depends_on:
            if d.container_name not in index:
                raise InvalidArgument(
                    f"containerDefinitions[{i}].dependsOn: no container is named {shown(d.container_name)}"
                )
            needed.add(index[d.container_name])
        waits_for.append(needed)
    order: list[int] = []
    placed: set[int] = set()
    while len(order) < len(containers):
        ready = [i for i in range(len(containers)) if i not in placed and waits_for[i] <= placed]
        if not ready:
            stuck = [containers[i].name for i in range(len(containers)) if i not in placed]
            raise InvalidArgument(f"dependsOn has a cycle among containers {', '.join(stuck)}")
        order.append(ready[0])
        placed.add(ready[0])
    return order


def _check_container(
    where: str, c: pb.ContainerDefinition, by_name: dict[str, pb.ContainerDefinition]
) -> None:
    if len(c.depends_on) > MAX_DEPENDENCIES:
        raise InvalidArgument(
            f"{where}.dependsOn has {len(c.depends_on)} entries: the limit is {MAX_DEPENDENCIES}"
        )
    seen: set[str] = set()
    for j, d in enumerate(c.depends_on):
        at = f"{where}.dependsOn[{j}]"
        if d.condition not in CONDITION_NAMES:
            raise InvalidArgument(f"{at}.condition must be START, COMPLETE, SUCCESS or HEALTHY")
        target = by_name.get(d.container_name)
        if target is None:
            raise InvalidArgument(
                f"{at}.containerName: no container of the task is named {shown(d.container_name)}"
            )
        if d.container_name == c.name:
            raise InvalidArgument(f"{at}.containerName: a container cannot depend on itself")
        if d.container_name in seen:
            raise InvalidArgument(f"{at}.containerName: {d.container_name} is listed twice")
        seen.add(d.container_name)
        condition = CONDITION_NAMES[d.condition]
        if d.condition == pb.ContainerDependency.HEALTHY and not target.HasField("health_check"):
            raise InvalidArgument(
                f"{at}: condition HEALTHY needs a healthCheck on container {d.container_name}"
            )
        if d.condition in _EXIT_CONDITIONS and target.essential:
            raise InvalidArgument(
                f"{at}: condition {condition} cannot target essential container {d.container_name} "
                '(its exit would stop the task): mark it "essential": false'
            )
    if c.start_timeout and not MIN_START_TIMEOUT <= c.start_timeout <= MAX_START_TIMEOUT:
        raise InvalidArgument(
            f"{where}.startTimeout {c.start_timeout} is out of range: use "
            f"{MIN_START_TIMEOUT}-{MAX_START_TIMEOUT} seconds"
        )
    if c.HasField("restart_policy"):
        _check_restart_policy(f"{where}.restartPolicy", c.restart_policy)


def _check_restart_policy(where: str, policy: pb.RestartPolicy) -> None:
    period = policy.restart_attempt_period
    if period and not MIN_RESTART_ATTEMPT_PERIOD <= period <= MAX_RESTART_ATTEMPT_PERIOD:
        raise InvalidArgument(
            f"{where}.restartAttemptPeriod {period} is out of range: use "
            f"{MIN_RESTART_ATTEMPT_PERIOD}-{MAX_RESTART_ATTEMPT_PERIOD} seconds, as in ECS"
        )
    codes = list(policy.ignored_exit_codes)
    if len(codes) > MAX_IGNORED_EXIT_CODES:
        raise InvalidArgument(
            f"{where}.ignoredExitCodes has {len(codes)} codes: the limit is {MAX_IGNORED_EXIT_CODES}"
        )
    for code in codes:
        if not 0 <= code <= MAX_EXIT_CODE:
            raise InvalidArgument(f"{where}.ignoredExitCodes: {code} is not an exit code (0-{MAX_EXIT_CODE})")
    if len(set(codes)) != len(codes):
        raise InvalidArgument(f"{where}.ignoredExitCodes lists a code twice")


def check_lifecycle(containers: Sequence[pb.ContainerDefinition]) -> None:
    """Check every container's ordering and lifecycle fields against the task's containers
    (every client: the gRPC API too). Names are unique by now (validate_containers)."""
    by_name = {c.name: c for c in containers}
    for i, c in enumerate(containers):
        _check_container(f"containerDefinitions[{i}]", c, by_name)
    dependency_order(containers)


def to_ecs(c: pb.ContainerDefinition) -> dict[str, Any]:
    """These settings of a stored container in ECS's JSON (only those set): the inverse of
    `LifecycleSettings.apply`, so a described definition registers again unchanged."""
    out: dict[str, Any] = {}
    if c.depends_on:
        out["dependsOn"] = [
            {"containerName": d.container_name, "condition": CONDITION_NAMES.get(d.condition, "START")}
            for d in c.depends_on
        ]
    if c.start_timeout:
        out["startTimeout"] = c.start_timeout
    if c.HasField("restart_policy"):
        policy: dict[str, Any] = {"enabled": c.restart_policy.enabled}
        if c.restart_policy.ignored_exit_codes:
            policy["ignoredExitCodes"] = list(c.restart_policy.ignored_exit_codes)
        if c.restart_policy.restart_attempt_period:
            policy["restartAttemptPeriod"] = c.restart_policy.restart_attempt_period
        out["restartPolicy"] = policy
    return out
