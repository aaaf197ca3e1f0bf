"""ECS's task operations: RunTask, StartTask, StopTask, DescribeTasks, ListTasks."""

from __future__ import annotations

from typing import Any

from berth.ecs import shapes
from berth.errors import BerthError, InvalidArgument, NotFound
from berth.names import parse_task_definition_ref
from berth.v1 import resources_pb2 as pb
from controlplane.ecs.backend import (
    Answer,
    Backend,
    Operation,
    Params,
    bounded_list,
    call,
    check_launch_type,
    cluster_of,
    missing,
    operation,
    tags_of,
    wants_tags,
)
from controlplane.ecs.errors import translate
from controlplane.ecs.pages import page
from controlplane.ecs.placement import constraints, strategies
from controlplane.ecs.protocol import invalid

# ECS's answer for a task that does not exist where the request says.
NOT_FOUND = "InvalidParameterException"
MAX_COUNT = 10  # ECS: RunTask starts 1 to 10 tasks
MAX_REASON = 255  # ECS: a stop reason is at most 255 characters


def _render(backend: Backend, task: pb.Task, params: Params) -> Answer:
    return shapes.task(backend.arns, task, tags=task.tags if wants_tags(params) else None)


def _check_start(params: Params) -> tuple[str, str]:
    """The task definition reference and startedBy of a RunTask or StartTask, checked."""
    overrides: dict[str, Any] = params.get("overrides", {})
    if any(overrides.values()):
        raise invalid("Berth does not support task overrides: register a task definition revision instead")
    check_launch_type(params)
    started_by = params.get("startedBy", "")
    return params["taskDefinition"], started_by


async def _definition(backend: Backend, reference: str) -> str:
    """The task definition a RunTask or StartTask names, found and runnable, as family:revision:
    checked once, before any task starts, so a bad one starts none."""
    ref = backend.arns.task_definition_ref(reference)
    td = await call(backend.ops.taskdefs.runnable(ref), "ClientException")
    return f"{td.family}:{td.revision}"


def _failure(arn: str | None, error: BerthError) -> Answer:
    """An entry of `failures` for a task that did not start: ECS's short reason, Berth's line as detail."""
    entry: Answer = {"reason": type(error).__name__.upper(), "detail": str(error).splitlines()[0][:500]}
    if arn:
        entry["arn"] = arn
    return entry


async def run_task(backend: Backend, params: Params) -> Answer:
    cluster = await cluster_of(backend, params)
    reference, started_by = _check_start(params)
    count = params.get("count", 1)
    if not 1 <= count <= MAX_COUNT:
        raise invalid(f"count must be between 1 and {MAX_COUNT}")
    strategy, placement, tags = strategies(params), constraints(params), tags_of(params)
    ref = await _definition(backend, reference)
    started: list[Answer] = []
    failures: list[Answer] = []
    for _ in range(count):
        try:
            task = await backend.ops.tasks.run(
                cluster, ref, strategy, placement, started_by=started_by, tags=tags
            )
        except BerthError as error:
            if not started:
                raise translate(error) from None
            # Some tasks started: answer with them, and each one that did not as a failure.
            failures.append(_failure(None, error))
            continue
        started.append(_render(backend, task, {}))
    return {"tasks": started, "failures": failures}


async def start_task(backend: Backend, params: Params) -> Answer:
    """One task on each named container instance (ECS's StartTask), placed there and nowhere else.
    An instance that cannot take it (missing, another cluster's, not ACTIVE) is a failure of its own."""
    cluster = await cluster_of(backend, params)
    reference, started_by = _check_start(params)
    instances = bounded_list(params, "containerInstances", MAX_COUNT)
    tags = tags_of(params)
    nodes = [backend.arns.node_id(value, cluster) for value in instances]
    ref = await _definition(backend, reference)
    tasks, failures = [], []
    for instance_cluster, node_id in nodes:
        arn = backend.arns.container_instance(instance_cluster, node_id)
        if instance_cluster != cluster:
            failures.append(missing(arn))
            continue
        try:
            task = await backend.ops.tasks.run(
                cluster, ref, started_by=started_by, tags=tags, nodes=[node_id]
            )
        except NotFound:
            failures.append(missing(arn))
            continue
        except BerthError as error:
            failures.append(_failure(arn, error))
            continue
        tasks.append(_render(backend, task, {}))
    return {"tasks": tasks, "failures": failures}


async def stop_task(backend: Backend, params: Params) -> Answer:
    cluster = await cluster_of(backend, params)
    reason = params.get("reason", "")
    if len(reason) > MAX_REASON:
        raise invalid(f"reason is {len(reason)} characters: the limit is {MAX_REASON}")
    task_cluster, task_id = backend.arns.task_id(params["task"], cluster)
    try:
        task = await backend.ops.tasks.stop(task_cluster, task_id, reason)
    except NotFound:
        raise invalid("The referenced task was not found.") from None
    return {"task": _render(backend, task, {})}


async def describe(backend: Backend, params: Params) -> Answer:
    """Unknown tasks are listed as failures (reason MISSING), as ECS does, not refused."""
    cluster = await cluster_of(backend, params)
    found, failures = [], []
    for ref in bounded_list(params, "tasks", 100):
        task_cluster, task_id = backend.arns.task_id(ref, cluster)
        try:
            task, _ = await backend.ops.tasks.find(task_cluster, task_id)
        except (NotFound, InvalidArgument):
            # Not a task id Berth could have made, or one it does not have: missing either way.
            failures.append(missing(backend.arns.task(task_cluster, task_id)))
            continue
        found.append(_render(backend, task, params))
    return {"tasks": found, "failures": failures}


_DESIRED = {"RUNNING", "PENDING", "STOPPED"}


def _wanted(task: pb.Task, desired: str) -> bool:
    if desired == "STOPPED":
        return task.desired_status == pb.DESIRED_STOPPED
    return task.desired_status == pb.DESIRED_RUNNING


async def list_tasks(backend: Backend, params: Params) -> Answer:
    """ECS's filters, all of which must match; desiredStatus RUNNING unless asked otherwise.

    As in ECS, desiredStatus PENDING matches nothing (no task is ever desired PENDING),
    and every Berth task is an EC2 one, so another launchType matches nothing either."""
    cluster = await cluster_of(backend, params)
    desired = params.get("desiredStatus", "RUNNING")
    if desired not in _DESIRED:
        raise invalid("desiredStatus must be RUNNING, PENDING or STOPPED")
    if check_launch_type(params) != "EC2" or desired == "PENDING":
        return page(params, [], "taskArns")
    node = (
        backend.arns.node_id(params["containerInstance"], cluster) if "containerInstance" in params else None
    )
    service = backend.arns.service_name(params["serviceName"], cluster) if "serviceName" in params else None
    family = parse_task_definition_ref(params["family"])[0] if "family" in params else ""
    if (node and node[0] != cluster) or (service and service[0] != cluster):
        # A container instance or service of another cluster has no task in this one.
        return page(params, [], "taskArns")
    tasks = await call(
        backend.ops.tasks.all(cluster, service[1] if service else "", include_stopped=True),
        "ServiceNotFoundException",
    )
    started_by = params.get("startedBy", "")
    chosen = [
        backend.arns.task(cluster, t.id)
        for t in tasks
        if _wanted(t, desired)
        and (not node or t.node_id == node[1])
        and (not family or t.task_definition.split(":", 1)[0] == family)
        and (not started_by or t.started_by == started_by)
    ]
    return page(params, chosen, "taskArns")


OPERATIONS: dict[str, Operation] = {
    "RunTask": operation(
        "deployer",
        run_task,
        supported=(
            "cluster",
            "taskDefinition",
            "count",
            "startedBy",
            "placementConstraints",
            "placementStrategy",
            "tags",
            "overrides",
            "launchType",
        ),
        # clientToken: boto3 fills it in for every call; each RunTask starts new tasks.
        # The rest: as CreateService (controlplane/ecs/services.py).
        ignored=(
            "clientToken",
            "platformVersion",
            "networkConfiguration",
            "enableECSManagedTags",
            "propagateTags",
            "enableExecuteCommand",
        ),
    ),
    "StartTask": operation(
        "deployer",
        start_task,
        supported=("cluster", "taskDefinition", "containerInstances", "startedBy", "tags", "overrides"),
        ignored=("networkConfiguration", "enableECSManagedTags", "propagateTags", "enableExecuteCommand"),
    ),
    "StopTask": operation("deployer", stop_task, supported=("cluster", "task", "reason")),
    "DescribeTasks": operation("viewer", describe, supported=("cluster", "tasks", "include")),
    "ListTasks": operation(
        "viewer",
        list_tasks,
        supported=(
            "cluster",
            "containerInstance",
            "family",
            "startedBy",
            "serviceName",
            "desiredStatus",
            "launchType",
            "nextToken",
            "maxResults",
        ),
    ),
}
