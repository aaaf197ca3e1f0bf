"""Berth's protobuf objects as the JSON objects ECS's API returns: ECS's field names and
enum words, ARNs (`berth.ecs.arns`), timestamps as epoch seconds (JSON numbers), counts as
numbers, and optional fields left out when absent, as ECS leaves them out.

The ECS-compatible HTTP API (controlplane/ecs) and the CLI's `-o json|yaml` print these
same objects, so what a script reads from `aws ecs describe-tasks` it reads from
`berth task list -o json`. What Berth knows and ECS has no field for goes under one key,
"berth", in the object it belongs to (botocore and the aws CLI ignore keys they do not
know). Pure functions: objects in, dicts out.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from berth import tags as tag_rules
from berth.deployment_defaults import configuration as deployment_configuration
from berth.ecs.arns import Arns
from berth.names import node_cluster, protocol_name
from berth.taskdef import to_ecs_document
from berth.v1 import operator_pb2 as api
from berth.v1 import resources_pb2 as pb

# ECS keeps a service's newest 100 events; so does Berth.
MAX_EVENTS = 100

# Every proto enum value has its ECS word: tests check that none is missing, so a
# value added to the proto fails them until it is given one here.
TASK_STATUS: dict[int, str] = {
    # Not yet anything: the closest ECS word is the first state of its lifecycle.
    pb.TASK_STATUS_UNSPECIFIED: "PROVISIONING",
    pb.PENDING: "PENDING",
    pb.RUNNING: "RUNNING",
    pb.STOPPED: "STOPPED",
}
DESIRED_STATUS: dict[int, str] = {
    pb.DESIRED_STATUS_UNSPECIFIED: "RUNNING",
    pb.DESIRED_RUNNING: "RUNNING",
    pb.DESIRED_STOPPED: "STOPPED",
}
# None: no stop code (the task has not stopped, or stopped before stop codes were kept).
STOP_CODE: dict[int, str | None] = {
    pb.STOP_CODE_UNSPECIFIED: None,
    pb.TASK_FAILED_TO_START: "TaskFailedToStart",
    pb.ESSENTIAL_CONTAINER_EXITED: "EssentialContainerExited",
    pb.USER_INITIATED: "UserInitiated",
    pb.SERVICE_SCHEDULER_INITIATED: "ServiceSchedulerInitiated",
    # The node running the task stopped answering: ECS's word for a task stopped because of
    # the health of the infrastructure under it. Berth's own word, NodeLost, is under "berth".
    pb.NODE_LOST: "InfrastructureHealth",
}
HEALTH_STATUS: dict[int, str] = {
    pb.HEALTH_UNKNOWN: "UNKNOWN",
    pb.HEALTHY: "HEALTHY",
    pb.UNHEALTHY: "UNHEALTHY",
}
SERVICE_STATUS: dict[int, str] = {
    # Records written before the status field: a service that exists is ACTIVE.
    pb.SERVICE_STATUS_UNSPECIFIED: "ACTIVE",
    pb.SERVICE_ACTIVE: "ACTIVE",
    pb.SERVICE_DRAINING: "DRAINING",
}
DEPLOYMENT_STATUS: dict[int, str] = {
    pb.DEPLOYMENT_STATUS_UNSPECIFIED: "ACTIVE",
    pb.PRIMARY: "PRIMARY",
    pb.DEPLOYMENT_ACTIVE: "ACTIVE",
}
# None: no rollout state (ECS leaves the field out then too).
ROLLOUT_STATE: dict[int, str | None] = {
    pb.ROLLOUT_STATE_UNSPECIFIED: None,
    pb.IN_PROGRESS: "IN_PROGRESS",
    pb.COMPLETED: "COMPLETED",
    pb.FAILED: "FAILED",
}
TASK_DEFINITION_STATUS: dict[int, str] = {
    pb.TASK_DEFINITION_STATUS_UNSPECIFIED: "ACTIVE",
    pb.ACTIVE: "ACTIVE",
    pb.INACTIVE: "INACTIVE",
}
# A DOWN node is one whose agent stopped answering: ECS shows that as an ACTIVE container
# instance with agentConnected false (Berth's own word is under "berth").
NODE_STATUS: dict[int, str] = {
    pb.NODE_STATUS_UNSPECIFIED: "REGISTERING",
    pb.READY: "ACTIVE",
    pb.DRAINING: "DRAINING",
    pb.DOWN: "ACTIVE",
}
BERTH_NODE_STATUS: dict[int, str] = {
    pb.NODE_STATUS_UNSPECIFIED: "UNKNOWN",
    pb.READY: "READY",
    pb.DRAINING: "DRAINING",
    pb.DOWN: "DOWN",
}

# What a service without a stored configuration rolls with (ECS's defaults and Berth's own;
# the same as controlplane/deployments.py's).


def _word(table: Mapping[int, Any], value: int) -> Any:
    """ECS's word for an enum value; a value this replica does not know (written by a newer
    one during an upgrade) reads as the table's first word instead of failing the answer."""
    return table[value] if value in table else next(iter(table.values()))


def timestamp(stamp: Timestamp) -> float | None:
    """Epoch seconds (milliseconds kept, as ECS's), or None for an unset time."""
    if not stamp.seconds and not stamp.nanos:
        return None
    return round(stamp.seconds + stamp.nanos / 1e9, 3)


def _put_time(out: dict[str, Any], key: str, stamp: Timestamp) -> None:
    value = timestamp(stamp)
    if value is not None:
        out[key] = value


def _tags(out: dict[str, Any], tags: Iterable[pb.Tag] | None) -> None:
    """ECS shows tags only when asked (include TAGS): None leaves them out."""
    if tags is not None:
        out["tags"] = tag_rules.to_ecs(tags)


def task_definition_arn(arns: Arns, reference: str) -> str:
    """The ARN of a stored "family:revision" reference."""
    family, _, revision = reference.rpartition(":")
    return arns.task_definition(family, int(revision)) if revision.isdigit() and family else reference


def _strategies(strategies: Iterable[pb.PlacementStrategy]) -> list[dict[str, str]]:
    return [{"type": p.type, "field": p.field} if p.field else {"type": p.type} for p in strategies]


def _constraints(constraints: Iterable[pb.PlacementConstraint]) -> list[dict[str, str]]:
    shown = []
    for c in constraints:
        shown.append({"type": c.type, "expression": c.expression} if c.expression else {"type": c.type})
    return shown


# -- clusters ------------------------------------------------------------------


def cluster(
    arns: Arns, description: api.ClusterDescription, tags: Iterable[pb.Tag] | None = None
) -> dict[str, Any]:
    name = description.cluster.name
    out: dict[str, Any] = {
        "clusterArn": arns.cluster(name),
        "clusterName": name,
        "status": "ACTIVE",
        "registeredContainerInstancesCount": description.registered_container_instances,
        "runningTasksCount": description.running_tasks,
        "pendingTasksCount": description.pending_tasks,
        "activeServicesCount": description.active_services,
        "statistics": [],
    }
    _tags(out, tags)
    return out


# -- task definitions ------------------------------------------------------------


def task_definition(
    arns: Arns, td: pb.TaskDefinition, tags: Iterable[pb.Tag] | None = None
) -> dict[str, Any]:
    """ECS's TaskDefinition: Berth's ECS document (berth.taskdef.to_ecs_document, which
    `register --cli-input-json` takes back) with ECS's read-only fields added."""
    document = to_ecs_document(td)
    out: dict[str, Any] = {"taskDefinitionArn": arns.task_definition(td.family, td.revision)}
    out.update(document)
    out["revision"] = td.revision
    out["status"] = _word(TASK_DEFINITION_STATUS, td.status)
    out["compatibilities"] = ["EC2"]
    registered = timestamp(td.registered_at)
    if registered is None:
        out.pop("registeredAt", None)
    else:
        out["registeredAt"] = registered
    _tags(out, tags)
    return out


# -- services --------------------------------------------------------------------


def _counts(description: api.ServiceDescription, deployment_id: int) -> api.DeploymentCounts:
    for counts in description.deployment_counts:
        if counts.id == deployment_id:
            return counts
    return api.DeploymentCounts(id=deployment_id)


def _shown_deployments(description: api.ServiceDescription) -> list[pb.Deployment]:
    """PRIMARY, and the ACTIVE deployments that still have tasks: a steady service has one
    deployment, as ECS's (boto3's services_stable waiter waits for exactly one)."""
    shown = []
    for d in description.service.deployments:
        c = _counts(description, d.id)
        if d.status == pb.PRIMARY or c.desired_count or c.running_count or c.pending_count:
            shown.append(d)
    return shown


def _deployment(arns: Arns, description: api.ServiceDescription, d: pb.Deployment) -> dict[str, Any]:
    c = _counts(description, d.id)
    out: dict[str, Any] = {
        "id": f"ecs-svc/{d.id}",
        "status": _word(DEPLOYMENT_STATUS, d.status),
        "taskDefinition": task_definition_arn(arns, d.task_definition),
        "desiredCount": c.desired_count,
        "pendingCount": c.pending_count,
        "runningCount": c.running_count,
        "failedTasks": d.failed_tasks,
    }
    _put_time(out, "createdAt", d.created_at)
    _put_time(out, "updatedAt", d.updated_at)
    out["launchType"] = "EC2"
    state = _word(ROLLOUT_STATE, d.rollout_state)
    if state is not None:
        out["rolloutState"] = state
    if d.rollout_state_reason:
        out["rolloutStateReason"] = d.rollout_state_reason
    own: dict[str, Any] = {"number": d.id, "healthyCount": c.healthy_count, "failedCount": c.failed_count}
    if d.rolled_back_from:
        own["rolledBackFrom"] = d.rolled_back_from
    _put_time(own, "completedAt", d.completed_at)
    out["berth"] = own
    return out


def _event_id(service_arn: str, event: pb.ServiceEvent) -> str:
    """A stable id (ECS's are UUIDs): the same event has the same id in every answer."""
    digest = hashlib.sha256(
        f"{service_arn}\n{event.created_at.seconds}.{event.created_at.nanos}\n{event.message}".encode()
    ).digest()
    return str(uuid.UUID(bytes=digest[:16]))


def _service_port(port: pb.ServicePort) -> dict[str, Any]:
    out: dict[str, Any] = {"port": port.port, "protocol": protocol_name(port.protocol)}
    if port.container_port:
        out["containerPort"] = port.container_port
    if port.name:
        out["name"] = port.name
    return out


def _scaling_policy(policy: pb.ScalingPolicy) -> dict[str, Any]:
    out: dict[str, Any] = {
        "metric": policy.metric,
        "target": policy.target,
        "minCount": policy.min_count,
        "maxCount": policy.max_count,
    }
    if policy.HasField("scale_out_window"):
        out["scaleOutWindow"] = policy.scale_out_window
    if policy.HasField("scale_in_window"):
        out["scaleInWindow"] = policy.scale_in_window
    if policy.HasField("warmup"):
        out["warmup"] = policy.warmup
    if policy.HasField("tolerance"):
        out["tolerance"] = policy.tolerance
    if policy.max_step_out:
        out["maxStepOut"] = policy.max_step_out
    return out


def _service_berth(description: api.ServiceDescription, config: pb.DeploymentConfiguration) -> dict[str, Any]:
    s = description.service
    own: dict[str, Any] = {
        "deregistrationDelay": config.deregistration_delay,
        "rebalance": config.rebalance,
    }
    if s.vip:
        own["vip"] = s.vip
    if description.dns_name:
        own["dnsName"] = description.dns_name
    if s.ports:
        own["ports"] = [_service_port(p) for p in s.ports]
    if s.load_balancers:
        own["loadBalancerPorts"] = [
            {"port": lb.port, "servicePort": lb.service_port, "protocol": protocol_name(lb.protocol)}
            for lb in s.load_balancers
        ]
    if description.exposed_addresses:
        own["exposedAddresses"] = list(description.exposed_addresses)
    if s.HasField("scaling_policy"):
        own["scalingPolicy"] = _scaling_policy(s.scaling_policy)
    if s.backoff.attempts:
        backoff: dict[str, Any] = {
            "attempts": s.backoff.attempts,
            "failedTasks": s.backoff.failed_tasks,
            "lastFailure": s.backoff.last_failure,
        }
        _put_time(backoff, "nextAttemptAt", s.backoff.next_attempt_at)
        own["backoff"] = backoff
    _put_time(own, "updatedAt", s.updated_at)
    return own


def service(
    arns: Arns, description: api.ServiceDescription, tags: Iterable[pb.Tag] | None = None
) -> dict[str, Any]:
    s = description.service
    service_arn = arns.service(s.cluster, s.name)
    config = deployment_configuration(s)
    out: dict[str, Any] = {
        "serviceArn": service_arn,
        "serviceName": s.name,
        "clusterArn": arns.cluster(s.cluster),
        "loadBalancers": [],
        "serviceRegistries": [],
        "status": _word(SERVICE_STATUS, s.status),
        "desiredCount": s.desired_count,
        "runningCount": description.running_count,
        "pendingCount": description.pending_count,
        "launchType": "EC2",
        "taskDefinition": task_definition_arn(arns, s.task_definition),
        "deploymentConfiguration": {
            "deploymentCircuitBreaker": {"enable": config.circuit_breaker, "rollback": config.rollback},
            "maximumPercent": config.maximum_percent,
            "minimumHealthyPercent": config.minimum_healthy_percent,
        },
        "deployments": [_deployment(arns, description, d) for d in _shown_deployments(description)],
        "events": [
            {
                "id": _event_id(service_arn, e),
                "createdAt": timestamp(e.created_at) or 0.0,
                "message": e.message,
            }
            for e in description.events[:MAX_EVENTS]
        ],
    }
    _put_time(out, "createdAt", s.created_at)
    out["placementConstraints"] = _constraints(s.placement_constraints)
    out["placementStrategy"] = _strategies(s.placement_strategy)
    out["schedulingStrategy"] = "REPLICA"
    out["deploymentController"] = {"type": "ECS"}
    _tags(out, tags)
    out["berth"] = _service_berth(description, config)
    return out


# -- tasks -----------------------------------------------------------------------


def _binding(b: pb.NetworkBinding) -> dict[str, Any]:
    return {
        "bindIP": b.bind_ip or "0.0.0.0",
        "containerPort": b.container_port,
        "hostPort": b.host_port,
        "protocol": protocol_name(b.protocol),
    }


def _container(
    arns: Arns, task: pb.Task, task_arn: str, c: pb.ContainerState, images: Mapping[str, str]
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "containerArn": arns.container(task.cluster, task.id, c.name),
        "taskArn": task_arn,
        "name": c.name,
    }
    if c.name in images:
        out["image"] = images[c.name]
    if c.docker_id:
        out["runtimeId"] = c.docker_id
    out["lastStatus"] = _word(TASK_STATUS, c.last_status)
    if c.has_exit_code:
        out["exitCode"] = c.exit_code
    if c.reason:
        out["reason"] = c.reason
    out["networkBindings"] = [_binding(b) for b in task.network_bindings if b.container_name == c.name]
    out["healthStatus"] = _word(HEALTH_STATUS, c.health_status)
    own: dict[str, Any] = {}
    if c.health_output:
        own["healthOutput"] = c.health_output
    if c.restart_count:
        own["restartCount"] = c.restart_count
    if own:
        out["berth"] = own
    return out


def _task_berth(task: pb.Task) -> dict[str, Any]:
    own: dict[str, Any] = {"id": task.id}
    if task.node_id:
        own["nodeId"] = task.node_id
    if task.service:
        own["service"] = task.service
    if task.pending_reason:
        own["pendingReason"] = task.pending_reason
    if task.deployment_id:
        own["deploymentId"] = task.deployment_id
    if task.has_exit_code:
        own["exitCode"] = task.exit_code
    if task.stop_code == pb.NODE_LOST:
        own["stopCode"] = "NodeLost"
    own["healthChecked"] = task.health_checked
    if task.failed_health_check:
        own["failedHealthCheck"] = True
    if task.rebalancing:
        own["rebalancing"] = True
    _put_time(own, "deregisteredAt", task.deregistered_at)
    if task.placement_strategy:
        own["placementStrategy"] = _strategies(task.placement_strategy)
    if task.placement_constraints:
        own["placementConstraints"] = _constraints(task.placement_constraints)
    if task.HasField("kept_output"):
        own["keptOutput"] = {
            "container": task.kept_output.container,
            "lines": list(task.kept_output.lines),
            "truncated": task.kept_output.truncated,
        }
    if task.health_history:
        own["healthHistory"] = [_health_change(c) for c in task.health_history]
    return own


def _health_change(change: pb.HealthChange) -> dict[str, Any]:
    out: dict[str, Any] = {"container": change.container, "healthStatus": _word(HEALTH_STATUS, change.status)}
    _put_time(out, "at", change.at)
    if change.output:
        out["output"] = change.output
    return out


def task(
    arns: Arns,
    task: pb.Task,
    *,
    images: Mapping[str, str] | None = None,
    version: int | None = None,
    tags: Iterable[pb.Tag] | None = None,
) -> dict[str, Any]:
    """ECS's Task. `images`: container name -> image, when the caller has the task
    definition at hand; `version`: ECS's task version (the record's revision), when known."""
    task_arn = arns.task(task.cluster, task.id)
    family = task.task_definition.rpartition(":")[0] or task.task_definition
    out: dict[str, Any] = {
        "taskArn": task_arn,
        "clusterArn": arns.cluster(task.cluster),
        "taskDefinitionArn": task_definition_arn(arns, task.task_definition),
    }
    if task.node_id:
        out["containerInstanceArn"] = arns.container_instance(task.cluster, task.node_id)
    elif len(task.pinned_nodes) == 1:
        # StartTask's task, pinned to one instance: ECS names it at once, and it can run nowhere else.
        out["containerInstanceArn"] = arns.container_instance(task.cluster, task.pinned_nodes[0])
    out["lastStatus"] = _word(TASK_STATUS, task.last_status)
    out["desiredStatus"] = _word(DESIRED_STATUS, task.desired_status)
    out["launchType"] = "EC2"
    if task.cpu:
        out["cpu"] = str(task.cpu)
    if task.memory:
        out["memory"] = str(task.memory)
    _put_time(out, "createdAt", task.created_at)
    _put_time(out, "startedAt", task.started_at)
    _put_time(out, "stoppedAt", task.stopped_at)
    stop_code = _word(STOP_CODE, task.stop_code)
    if stop_code is not None:
        out["stopCode"] = stop_code
    if task.stopped_reason:
        out["stoppedReason"] = task.stopped_reason
    out["group"] = f"service:{task.service}" if task.service else f"family:{family}"
    if task.started_by:
        out["startedBy"] = task.started_by
    out["healthStatus"] = _word(HEALTH_STATUS, task.health_status)
    out["containers"] = [_container(arns, task, task_arn, c, images or {}) for c in task.containers]
    if version is not None:
        out["version"] = version
    _tags(out, tags)
    out["berth"] = _task_berth(task)
    return out


# -- container instances ---------------------------------------------------------


def _resources(cpu: int, memory: int) -> list[dict[str, Any]]:
    return [
        {"name": "CPU", "type": "INTEGER", "integerValue": cpu},
        {"name": "MEMORY", "type": "INTEGER", "integerValue": memory},
    ]


def container_instance(
    arns: Arns, summary: api.NodeSummary, tags: Iterable[pb.Tag] | None = None
) -> dict[str, Any]:
    """ECS's ContainerInstance for a node (ec2InstanceId is the node's name), in its cluster."""
    node = summary.node
    cluster = node_cluster(node)
    connected = summary.connected and node.status != pb.DOWN
    out: dict[str, Any] = {
        "containerInstanceArn": arns.container_instance(cluster, node.id),
        "ec2InstanceId": node.name,
        "versionInfo": {"agentVersion": node.agent_version} if node.agent_version else {},
        "remainingResources": _resources(
            max(0, node.cpu_units - summary.cpu_reserved), max(0, node.memory_mib - summary.memory_reserved)
        ),
        "registeredResources": _resources(node.cpu_units, node.memory_mib),
        "status": _word(NODE_STATUS, node.status),
        "agentConnected": connected,
        "runningTasksCount": summary.running_tasks,
        "pendingTasksCount": summary.pending_tasks,
        "attributes": [{"name": k, "value": v} for k, v in sorted(node.attributes.items())],
    }
    _put_time(out, "registeredAt", node.registered_at)
    _tags(out, tags)
    own: dict[str, Any] = {
        "nodeId": node.id,
        "name": node.name,
        "address": node.address,
        "status": _word(BERTH_NODE_STATUS, node.status),
        "cpuReserved": summary.cpu_reserved,
        "memoryReserved": summary.memory_reserved,
    }
    _put_time(own, "downSince", node.down_since)
    if summary.HasField("metrics"):
        own["cpuPercent"] = summary.metrics.cpu_percent
        own["memoryUsedBytes"] = summary.metrics.memory_used_bytes
        own["memoryTotalBytes"] = summary.metrics.memory_total_bytes
    out["berth"] = own
    return out
