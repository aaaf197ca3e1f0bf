"""Tags on clusters, services, task definitions and tasks: list, tag, untag (ECS's
ListTagsForResource, TagResource, UntagResource).

Tags live on the resource's own record. Each change is one read-modify-write of that
record under the store's retry policy (`StoreAPI.update`), so it composes with the
controllers and agents that rewrite services and tasks all the time; the tag rules
themselves are `berth.tags`'.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from berth import tags as tag_rules
from berth.errors import InvalidArgument, NotFound
from berth.names import check_dns_label, parse_task_definition_ref, shown
from berth.v1 import resources_pb2 as pb
from controlplane.operations.clusters import cluster_name
from controlplane.store import StoreAPI, keys

log = logging.getLogger(__name__)

ResourceKind = Literal["cluster", "service", "task-definition", "task"]
_TASK_ID = re.compile(r"[0-9a-f]{32}")


# The records that carry ECS tags.
Record = pb.Cluster | pb.Service | pb.TaskDefinition | pb.Task
# `Tags.list` shadows the builtin inside the class.
TagList = list[pb.Tag]


@dataclass(frozen=True)
class Resource:
    """What a tag request names. `name`: the cluster's name, the service's name,
    "family:revision", or the task's full id; `cluster` matters for services and tasks."""

    kind: ResourceKind
    cluster: str
    name: str


@dataclass(frozen=True)
class _Located:
    key: str
    message_type: type[Record]
    # The record is this resource (a task read by id must also be in the cluster named).
    belongs: Callable[[Record], bool]
    missing: str


def _locate(resource: Resource) -> _Located:
    """The resource's key and record type, its names checked; InvalidArgument for a bad name."""
    if resource.kind == "cluster":
        name = cluster_name(resource.name)
        return _Located(keys.cluster(name), pb.Cluster, lambda _: True, f"cluster {name!r} does not exist")
    if resource.kind == "service":
        cluster = cluster_name(resource.cluster)
        name = check_dns_label("service", resource.name)
        return _Located(
            keys.service(cluster, name),
            pb.Service,
            lambda _: True,
            f"service {name!r} does not exist in cluster {cluster!r}",
        )
    if resource.kind == "task-definition":
        family, revision = parse_task_definition_ref(resource.name)
        if revision is None:
            raise InvalidArgument(
                f"task definition {shown(resource.name)} names no revision: tags belong to FAMILY:REVISION"
            )
        return _Located(
            keys.taskdef(family, revision),
            pb.TaskDefinition,
            lambda _: True,
            f"task definition {family}:{revision} does not exist",
        )
    if resource.kind == "task":
        cluster = cluster_name(resource.cluster)
        if not _TASK_ID.fullmatch(resource.name):
            raise InvalidArgument(f"task id {shown(resource.name)} is invalid: give its 32 hex digits")
        return _Located(
            keys.task(resource.name),
            pb.Task,
            lambda task: isinstance(task, pb.Task) and task.cluster == cluster,
            f"task {resource.name} does not exist in cluster {cluster!r}",
        )
    raise InvalidArgument(f"resource kind {shown(str(resource.kind))} cannot be tagged")


class Tags:
    def __init__(self, store: StoreAPI) -> None:
        self._store = store

    async def list(self, resource: Resource) -> TagList:
        """The resource's tags, in the order they were first given."""
        where = _locate(resource)
        found = await self._store.get(where.key, where.message_type)
        if found is None or not where.belongs(found.value):
            raise NotFound(where.missing)
        return [pb.Tag(key=t.key, value=t.value) for t in found.value.tags]

    async def tag(self, resource: Resource, tags: Sequence[pb.Tag]) -> TagList:
        """Add tags or change their values; the resource's tags after the change."""
        given = tag_rules.check_tags(tags)  # before any read: a bad request reads and writes nothing
        stored = await self._change(resource, lambda existing: tag_rules.merged(existing, given))
        log.info("event=resource_tagged kind=%s name=%s keys=%d", resource.kind, resource.name, len(given))
        return stored

    async def untag(self, resource: Resource, keys_: Sequence[str]) -> TagList:
        """Remove the tags with these keys (a key the resource lacks is ignored); its tags after."""
        tag_rules.without([], keys_)  # the keys checked up front
        stored = await self._change(resource, lambda existing: tag_rules.without(existing, keys_))
        log.info("event=resource_untagged kind=%s name=%s keys=%d", resource.kind, resource.name, len(keys_))
        return stored

    async def _change(self, resource: Resource, change: Callable[[Sequence[pb.Tag]], TagList]) -> TagList:
        where = _locate(resource)
        foreign = False

        def mutate(record: Record) -> Record | None:
            nonlocal foreign
            foreign = not where.belongs(record)
            if foreign:
                return None
            new = change(record.tags)
            if [(t.key, t.value) for t in new] == [(t.key, t.value) for t in record.tags]:
                return None
            del record.tags[:]
            record.tags.extend(new)
            return record

        stored = await self._store.update(where.key, where.message_type, mutate)
        if stored is None or foreign:
            raise NotFound(where.missing)
        return [pb.Tag(key=t.key, value=t.value) for t in stored.tags]
