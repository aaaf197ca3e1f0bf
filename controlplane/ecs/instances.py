"""ECS's container instance operations over Berth's nodes: list, describe, drain and activate.

A container instance is a node registered in a cluster (`berth-agent --cluster`);
its ARN names the cluster and the node's id. ECS's DRAINING and ACTIVE are Berth's
DRAINING and READY; a node whose agent stopped answering (Berth's DOWN) shows as
ECS shows a disconnected agent: ACTIVE with agentConnected false.
"""

from __future__ import annotations

from berth.ecs import shapes
from berth.errors import BerthError, NotFound
from berth.v1 import operator_pb2 as api
from berth.v1 import resources_pb2 as pb
from controlplane.ecs.backend import (
    Answer,
    Backend,
    Operation,
    Params,
    bounded_list,
    cluster_of,
    missing,
    operation,
)
from controlplane.ecs.pages import page
from controlplane.ecs.protocol import invalid

_STATES = {"ACTIVE": pb.READY, "DRAINING": pb.DRAINING}


def _members(backend: Backend, cluster: str) -> dict[str, api.NodeSummary]:
    return {s.node.id: s.message() for s in backend.ops.nodes.summaries(cluster)}


def _status(summary: api.NodeSummary) -> str:
    return "DRAINING" if summary.node.status == pb.DRAINING else "ACTIVE"


async def list_instances(backend: Backend, params: Params) -> Answer:
    cluster = await cluster_of(backend, params)
    if params.get("filter"):
        raise invalid("Berth does not support filter expressions in ListContainerInstances; use status")
    status = params.get("status", "")
    if status and status not in _STATES:
        raise invalid("status must be ACTIVE or DRAINING (Berth has no other container instance states)")
    members = _members(backend, cluster).values()
    arns = [
        backend.arns.container_instance(cluster, s.node.id)
        for s in members
        if not status or _status(s) == status
    ]
    return page(params, arns, "containerInstanceArns")


def _resolve(backend: Backend, cluster: str, refs: list[str]) -> list[tuple[str, api.NodeSummary | None]]:
    """Each reference's ARN and summary (None: not a node of this cluster)."""
    members = _members(backend, cluster)
    resolved: list[tuple[str, api.NodeSummary | None]] = []
    for ref in refs:
        instance_cluster, node_id = backend.arns.node_id(ref, cluster)
        found = members.get(node_id) if instance_cluster == cluster else None
        resolved.append((backend.arns.container_instance(instance_cluster, node_id), found))
    return resolved


async def describe(backend: Backend, params: Params) -> Answer:
    cluster = await cluster_of(backend, params)
    found, failures = [], []
    for arn, summary in _resolve(backend, cluster, bounded_list(params, "containerInstances", 100)):
        if summary is None:
            failures.append(missing(arn))
        else:
            found.append(shapes.container_instance(backend.arns, summary))
    return {"containerInstances": found, "failures": failures}


async def update_state(backend: Backend, params: Params) -> Answer:
    cluster = await cluster_of(backend, params)
    status = params["status"]
    if status not in _STATES:
        raise invalid("status must be ACTIVE or DRAINING (Berth has no other container instance states)")
    resolved = _resolve(backend, cluster, bounded_list(params, "containerInstances", 10))
    changed, failures = [], []
    for arn, summary in resolved:
        if summary is None:
            failures.append(missing(arn))
            continue
        try:
            node = await backend.ops.nodes.set_status(summary.node.id, _STATES[status])
        except NotFound:
            failures.append(missing(arn))
            continue
        except BerthError as error:
            failures.append({"arn": arn, "reason": str(error)})
            continue
        # The node as written (the cache may not have it yet), with the summary's counts.
        updated = api.NodeSummary()
        updated.CopyFrom(summary)
        updated.node.CopyFrom(node)
        changed.append(shapes.container_instance(backend.arns, updated))
    return {"containerInstances": changed, "failures": failures}


OPERATIONS: dict[str, Operation] = {
    "ListContainerInstances": operation(
        "viewer", list_instances, supported=("cluster", "filter", "status", "nextToken", "maxResults")
    ),
    "DescribeContainerInstances": operation(
        # Nodes have no tags, and Berth has no container health reports: nothing to include.
        "viewer",
        describe,
        supported=("cluster", "containerInstances"),
        ignored=("include",),
    ),
    "UpdateContainerInstancesState": operation(
        "admin", update_state, supported=("cluster", "containerInstances", "status")
    ),
}
