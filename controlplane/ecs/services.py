"""ECS's service operations: create, describe, update, list, delete.

What ECS would do with an AWS-only parameter Berth has nothing for (load
balancers of ELB, Cloud Map registries, capacity providers) is refused by name;
a few are accepted and have no effect because Berth's behaviour already is what
they ask for on AWS, each with the reason beside it.
"""

from __future__ import annotations

from typing import Any

from berth.ecs import shapes
from berth.errors import NotFound
from berth.v1 import operator_pb2 as api
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
from controlplane.ecs.pages import page
from controlplane.ecs.placement import constraints, strategies
from controlplane.ecs.protocol import invalid
from controlplane.operations.services import ServiceChange, ServiceSpec, description

NOT_FOUND = "ServiceNotFoundException"


def _deployment(params: Params) -> api.DeploymentOptions:
    config: dict[str, Any] = params.get("deploymentConfiguration", {})
    options = api.DeploymentOptions()
    if "minimumHealthyPercent" in config:
        options.minimum_healthy_percent = _percent(config["minimumHealthyPercent"], "minimumHealthyPercent")
    if "maximumPercent" in config:
        options.maximum_percent = _percent(config["maximumPercent"], "maximumPercent")
    breaker: dict[str, Any] = config.get("deploymentCircuitBreaker", {})
    if "enable" in breaker:
        options.circuit_breaker = breaker["enable"]
    if "rollback" in breaker:
        options.rollback = breaker["rollback"]
    unknown = set(config) - {"minimumHealthyPercent", "maximumPercent", "deploymentCircuitBreaker"}
    if unknown:
        raise invalid(f"Berth does not support deploymentConfiguration.{sorted(unknown)[0]}")
    return options


def _percent(value: int, name: str) -> int:
    if not 0 <= value <= 1000:
        raise invalid(f"deploymentConfiguration.{name} must be between 0 and 1000, not {value}")
    return value


def _check_common(params: Params) -> None:
    check_launch_type(params)
    if params.get("schedulingStrategy", "REPLICA") != "REPLICA":
        raise invalid("Berth runs REPLICA services only; schedulingStrategy DAEMON is not supported")
    if params.get("deploymentController", {}).get("type", "ECS") != "ECS":
        raise invalid("Berth deploys services itself: deploymentController.type must be ECS")


def _render(backend: Backend, described: api.ServiceDescription, params: Params) -> Answer:
    return shapes.service(backend.arns, described, described.service.tags if wants_tags(params) else None)


async def _shape(backend: Backend, service: pb.Service) -> Answer:
    """The service as DescribeServices shows it now; a service deleted meanwhile as it was written."""
    try:
        return _render(
            backend, description(await backend.ops.services.describe(service.cluster, service.name)), {}
        )
    except NotFound:
        return _render(backend, api.ServiceDescription(service=service), {})


async def create(backend: Backend, params: Params) -> Answer:
    cluster = await cluster_of(backend, params)
    _check_common(params)
    if "taskDefinition" not in params:
        raise invalid("taskDefinition is required: Berth services run a task definition")
    count = params.get("desiredCount", 0)
    spec = ServiceSpec(
        cluster=cluster,
        name=params["serviceName"],
        task_definition=backend.arns.task_definition_ref(params["taskDefinition"]),
        desired_count=count,
        placement_strategy=strategies(params),
        placement_constraints=constraints(params),
        deployment=_deployment(params),
        tags=tags_of(params),
    )
    service = await backend.ops.services.create(spec)
    return {"service": await _shape(backend, service)}


async def describe(backend: Backend, params: Params) -> Answer:
    """Unknown services are listed as failures (reason MISSING), as ECS does, not refused."""
    cluster = await cluster_of(backend, params)
    found, failures = [], []
    for ref in bounded_list(params, "services", 10):
        try:
            service_cluster, name = backend.arns.service_name(ref, cluster)
            state = await backend.ops.services.describe(service_cluster, name)
        except NotFound:
            failures.append(missing(backend.arns.service(service_cluster, name)))
            continue
        found.append(_render(backend, description(state), params))
    return {"services": found, "failures": failures}


async def update(backend: Backend, params: Params) -> Answer:
    cluster = await cluster_of(backend, params)
    _check_common(params)
    service_cluster, name = backend.arns.service_name(params["service"], cluster)
    change = ServiceChange(
        desired_count=params.get("desiredCount"),
        task_definition=(
            backend.arns.task_definition_ref(params["taskDefinition"]) if params.get("taskDefinition") else ""
        ),
        force_new_deployment=params.get("forceNewDeployment", False),
        deployment=_deployment(params),
    )
    if change.task_definition:
        # A missing task definition is the client's mistake, not a missing service.
        await call(backend.ops.taskdefs.runnable(change.task_definition), "ClientException")
    service = await call(backend.ops.services.update(service_cluster, name, change), NOT_FOUND)
    return {"service": await _shape(backend, service)}


async def list_services(backend: Backend, params: Params) -> Answer:
    cluster = await cluster_of(backend, params)
    if check_launch_type(params) != "EC2" or params.get("schedulingStrategy", "REPLICA") != "REPLICA":
        # Filters: every Berth service is a REPLICA service shown as EC2, so these match none.
        return page(params, [], "serviceArns", default_size=10)
    services = await call(backend.ops.services.all(cluster))
    arns = [backend.arns.service(cluster, s.name) for s in services]
    return page(params, arns, "serviceArns", default_size=10)


async def delete(backend: Backend, params: Params) -> Answer:
    cluster = await cluster_of(backend, params)
    service_cluster, name = backend.arns.service_name(params["service"], cluster)
    service = await call(
        backend.ops.services.delete(service_cluster, name, force=params.get("force", False)), NOT_FOUND
    )
    return {"service": await _shape(backend, service)}


# Accepted without effect, and why (README's ECS-compatible API section lists them too).
_IGNORED = (
    # Berth runs every task on its own hosts; FARGATE and EXTERNAL tasks run as EC2's do.
    "launchType",
    "platformVersion",
    # awsvpc's subnets and security groups are AWS's network; Berth gives tasks its own.
    "networkConfiguration",
    # Idempotency tokens: boto3 fills them in; a repeated create is refused as ECS refuses it.
    "clientToken",
    # ECS's service-linked role: Berth needs no IAM role to manage a service.
    "role",
    "enableECSManagedTags",
    "propagateTags",
    # `berth exec` is always available to deployers; there is no agent feature to switch on.
    "enableExecuteCommand",
    # Berth replaces unhealthy tasks after their health check's own startPeriod.
    "healthCheckGracePeriodSeconds",
    "availabilityZoneRebalancing",
)

OPERATIONS: dict[str, Operation] = {
    "CreateService": operation(
        "deployer",
        create,
        supported=(
            "cluster",
            "serviceName",
            "taskDefinition",
            "desiredCount",
            "deploymentConfiguration",
            "placementConstraints",
            "placementStrategy",
            "schedulingStrategy",
            "deploymentController",
            "tags",
        ),
        ignored=_IGNORED,
    ),
    "DescribeServices": operation("viewer", describe, supported=("cluster", "services", "include")),
    "UpdateService": operation(
        "deployer",
        update,
        supported=(
            "cluster",
            "service",
            "desiredCount",
            "taskDefinition",
            "deploymentConfiguration",
            "forceNewDeployment",
            "deploymentController",
        ),
        ignored=tuple(p for p in _IGNORED if p not in ("launchType", "clientToken", "role")),
    ),
    "ListServices": operation(
        "viewer",
        list_services,
        supported=("cluster", "launchType", "schedulingStrategy", "nextToken", "maxResults"),
    ),
    "DeleteService": operation("deployer", delete, supported=("cluster", "service", "force")),
}
