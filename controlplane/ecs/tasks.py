"""ECS's task operations: RunTask, StartTask, StopTask, DescribeTasks, ListTasks."""

from __future__ import annotations

from typing import Any

from berth.ecs import shapes
from berth.errors import BerthError, NotFound
from berth.names import parse_task_definition_ref
from berth.v1 import resources_pb2 as pb
from controlplane.ecs.backend import (
    Answer,
    Backend,
    Operation,
    Params,
    bounded_list,
    call,
    cluster_of,
    missing,
    operation,
    tag_list,
    tags_of,
)
from controlplane.ecs.errors import translate
from controlplane.ecs.pages import page
from controlplane.ecs.placement import constraints, strategies
from controlplane.ecs.protocol import invalid

# ECS's answer for a task that does not exist where the request says.
NOT_FOUND = "InvalidParameterException"
MAX_COUNT = 10  # ECS: RunTask starts 1 to 10 tasks
MAX_REASON = 255  # ECS: a stop reason is at most 255 characters
LAUNCH_TYPES = ("EC2", "FARGATE", "EXTERNAL")


def _render(backend: Backend, task: pb.Task, params: Params) -> Answer:
    shape = shapes.task(backend.arns, task)
    if "TAGS" in params.get("include", []):
        shape["tags"] = tag_list(task.tags)
    return shape


def _check_start(params: Params) -> tuple[str, str]:
    """The task definition reference and startedBy of a RunTask or StartTask, checked."""
    overrides: dict[str, Any] = params.get("overrides", {})
    if any(overrides.values()):
        raise invalid("Berth does not support task overrides: register a task definition revision instead")
    if params.get("launchType", "EC2") not in LAUNCH_TYPES:
        raise invalid(f"launchType must be one of {', '.join(LAUNCH_TYPES)}")
    started_by = params.get("startedBy", "")
    return params["taskDefinition"], started_by


async def run_task(backend: Backend, params: Params) -> Answer:
    cluster = await cluster_of(backend, params)
    reference, started_by = _check_start(params)
    count = params.get("count", 1)
    if not 1 <= count <= MAX_COUNT:
        raise invalid(f"count must be between 1 and {MAX_COUNT}")
    started: list[pb.Task] = []
    try:
        ref = backend.arns.task_definition_ref(reference)
        strategy, placement = strategies(params), constraints(params)
        tags = tags_of(params)
        for _ in range(count):
            started.append(
                await backend.ops.tasks.run(
                    cluster, ref, strategy, placement, started_by=started_by, tags=tags
                )
            )
    except BerthError as error:
        if not started:
            raise translate(error, "ClientException") from None
        # Some tasks started: answer with them, and the rest as failures (ECS's shape).
        failure = {"reason": str(error)}
        rendered = [_render(backend, t, {}) for t in started]
        return {"tasks": rendered, "failures": [failure] * (count - len(started))}
    return {"tasks": [_render(backend, t, {}) for t in started], "failures": []}


async def start_task(backend: Backend, params: Params) -> Answer:
    """One task on each named container instance (ECS's StartTask), placed there and nowhere else."""
    cluster = await cluster_of(backend, params)
    reference, started_by = _check_start(params)
    instances = bounded_list(params, "containerInstances", MAX_COUNT)
    tasks, failures = [], []
    try:
        ref = backend.arns.task_definition_ref(reference)
        tags = tags_of(params)
        nodes = [backend.arns.node_id(value, cluster) for value in instances]
    except BerthError as error:
        raise translate(error) from None
    for instance_cluster, node_id in nodes:
        if instance_cluster != cluster:
            failures.append(
                {"arn": backend.arns.container_instance(instance_cluster, node_id), "reason": "MISSING"}
            )
            continue
        try:
            task = await backend.ops.tasks.run(
                cluster, ref, started_by=started_by, tags=tags, nodes=[node_id]
            )
        except NotFound as error:
            if "task definition" in str(error):
                raise translate(error, "ClientException") from None
            failures.append({"arn": backend.arns.container_instance(cluster, node_id), "reason": "MISSING"})
            continue
        except BerthError as error:
            raise translate(error) from None
        tasks.append(_render(backend, task, {}))
    return {"tasks": tasks, "failures": failures}


async def stop_task(backend: Backend, params: Params) -> Answer:
    cluster = await cluster_of(backend, params)
    reason = params.get("reason", "")
    if len(reason) > MAX_REASON:
        raise invalid(f"reason is {len(reason)} characters: the limit is {MAX_REASON}")
    try:
        task_cluster, task_id = backend.arns.task_id(params["task"], cluster)
    except BerthError as error:
        raise translate(error) from None
    try:
        task = await backend.ops.tasks.stop(task_cluster, task_id, reason)
    except NotFound:
        raise invalid("The referenced task was not found.") from None
    except BerthError as error:
        raise translate(error) from None
    return {"task": _render(backend, task, {})}


async def describe(backend: Backend, params: Params) -> Answer:
    """Unknown tasks are listed as failures (reason MISSING), as ECS does, not refused."""
    cluster = await cluster_of(backend, params)
    found, failures = [], []
    for ref in bounded_list(params, "tasks", 100):
        try:
            task_cluster, task_id = backend.arns.task_id(ref, cluster)
            task, _ = await backend.ops.tasks.find(task_cluster, task_id)
        except NotFound:
            failures.append(missing(backend.arns.task(task_cluster, task_id)))
            continue
        except BerthError as error:
            raise translate(error) from None
        found.append(_render(backend, task, params))
    return {"tasks": found, "failures": failures}


_DESIRED = {"RUNNING", "PENDING", "STOPPED"}


def _wanted(task: pb.Task, desired: str) -> bool:
    if desired == "STOPPED":
        return task.desired_status == pb.DESIRED_STOPPED
    if desired == "PENDING":
        return task.desired_status == pb.DESIRED_RUNNING and task.last_status in (
            pb.TASK_STATUS_UNSPECIFIED,
            pb.PENDING,
        )
    return task.desired_status == pb.DESIRED_RUNNING


async def list_tasks(backend: Backend, params: Params) -> Answer:
    """ECS's filters, all of which must match; desiredStatus RUNNING unless asked otherwise."""
    cluster = await cluster_of(backend, params)
    desired = params.get("desiredStatus", "RUNNING")
    if desired not in _DESIRED:
        raise invalid("desiredStatus must be RUNNING, PENDING or STOPPED")
    if params.get("launchType", "EC2") not in LAUNCH_TYPES:
        raise invalid(f"launchType must be one of {', '.join(LAUNCH_TYPES)}")
    try:
        node = (
            backend.arns.node_id(params["containerInstance"], cluster)[1]
            if "containerInstance" in params
            else ""
        )
        service = (
            backend.arns.service_name(params["serviceName"], cluster)[1] if "serviceName" in params else ""
        )
        family = parse_task_definition_ref(params["family"])[0] if "family" in params else ""
    except BerthError as error:
        raise translate(error) from None
    tasks = await call(
        backend.ops.tasks.all(cluster, service, include_stopped=True), "ServiceNotFoundException"
    )
    started_by = params.get("startedBy", "")
    chosen = [
        backend.arns.task(cluster, t.id)
        for t in tasks
        if _wanted(t, desired)
        and (not node or t.node_id == node)
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
