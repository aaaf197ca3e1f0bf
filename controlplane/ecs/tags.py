"""ECS's TagResource, UntagResource and ListTagsForResource, for clusters, services,
task definitions and tasks, each named by its ARN."""

from __future__ import annotations

from berth import tags as tag_rules
from controlplane.ecs.backend import Answer, Backend, Operation, Params, call, operation, tags_of
from controlplane.ecs.protocol import invalid
from controlplane.operations.tags import Resource

MAX_KEYS = 50


def _resource(backend: Backend, params: Params) -> Resource:
    kind, cluster, name = backend.arns.resource(params["resourceArn"])
    return Resource(kind=kind, cluster=cluster, name=name)  # type: ignore[arg-type]


async def tag(backend: Backend, params: Params) -> Answer:
    tags = tags_of(params)
    if not tags:
        raise invalid("tags must name at least one tag")
    await call(backend.ops.tags.tag(_resource(backend, params), tags), "ResourceNotFoundException")
    return {}


async def untag(backend: Backend, params: Params) -> Answer:
    keys: list[str] = params["tagKeys"]
    if len(keys) > MAX_KEYS:
        raise invalid(f"tagKeys may name at most {MAX_KEYS} keys")
    await call(backend.ops.tags.untag(_resource(backend, params), keys), "ResourceNotFoundException")
    return {}


async def list_tags(backend: Backend, params: Params) -> Answer:
    tags = await call(backend.ops.tags.list(_resource(backend, params)), "ResourceNotFoundException")
    return {"tags": tag_rules.to_ecs(tags)}


def _role(params: Params) -> str:
    """Clusters are admin's (creating and deleting them is); the rest deployer's."""
    resource = str(params.get("resourceArn", "")).split(":", 5)[-1]
    return "admin" if resource.startswith("cluster/") else "deployer"


OPERATIONS: dict[str, Operation] = {
    "TagResource": operation("deployer", tag, supported=("resourceArn", "tags"), role_for=_role),
    "UntagResource": operation("deployer", untag, supported=("resourceArn", "tagKeys"), role_for=_role),
    "ListTagsForResource": operation("viewer", list_tags, supported=("resourceArn",)),
}
