"""Tasks: list (whole, or a page at a time), find by id or prefix, run one-off (optionally
pinned to given nodes), stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from berth import tags as tag_rules
from berth.errors import Conflict, FailedPrecondition, InvalidArgument, NotFound
from berth.names import (
    check_dns_label,
    check_started_by,
    node_cluster,
    parse_task_definition_ref,
    shown,
)
from berth.v1 import resources_pb2 as pb
from controlplane import lifecycle
from controlplane.cache import ClusterCache
from controlplane.operations.clusters import Clusters, cluster_name
from controlplane.operations.taskdefs import TaskDefinitions
from controlplane.scheduler.policies import compile_constraints, compile_strategy
from controlplane.store import Condition, Put, StoreAPI, Versioned, keys
from controlplane.task_pages import PageBuilder, TaskPage, TaskQuery, decode_token, page_size
from controlplane.validation.agent_reports import check_node_id

log = logging.getLogger(__name__)

# A task id is 32 hex digits; operators may give any unique prefix of 6 or more.
MIN_PREFIX = 6
ID_LENGTH = 32
MAX_REASON = 255  # ECS: a stop reason is at most 255 characters
MAX_PINNED_NODES = 10  # ECS StartTask: at most 10 container instances
# Cached tasks looked at between two yields to the event loop while a page is built:
# about a millisecond of filtering, so heartbeats and keep-alives never wait behind a listing.
PAGE_SLICE = 1000


class Tasks:
    def __init__(
        self, store: StoreAPI, cache: ClusterCache, clusters: Clusters, taskdefs: TaskDefinitions
    ) -> None:
        self._store = store
        self._cache = cache
        self._clusters = clusters
        self._taskdefs = taskdefs

    async def all(self, cluster_name: str, service: str = "", include_stopped: bool = False) -> list[pb.Task]:
        """The cluster's tasks (or one service's), oldest first, from this replica's cache."""
        cluster, _ = await self._clusters.existing(cluster_name)
        if service:
            check_dns_label("service", service)
            candidates = [t.value for t in self._cache.tasks_of_service(cluster, service)]
            # A deleted service's stopped tasks are still listed until purged.
            if not candidates and self._cache.service(cluster, service) is None:
                raise NotFound(f"service {service!r} does not exist in cluster {cluster!r}")
        else:
            candidates = [t.value for t in self._cache.tasks() if t.value.cluster == cluster]
        tasks = [t for t in candidates if include_stopped or t.last_status != pb.STOPPED]
        tasks.sort(key=lambda t: (t.created_at.seconds, t.created_at.nanos, t.id))
        return tasks

    async def page(
        self,
        cluster: str,
        *,
        service: str = "",
        node: str = "",
        family: str = "",
        desired_status: int = pb.DESIRED_STATUS_UNSPECIFIED,
        last_status: int = pb.TASK_STATUS_UNSPECIFIED,
        include_stopped: bool = False,
        size: int = 0,
        token: str = "",
    ) -> TaskPage:
        """One page of the cluster's tasks that match the filters (`controlplane.task_pages`).

        Read from this replica's cache alone, the cluster's existence included: the
        listing an operator runs during an incident costs etcd nothing and still
        answers while etcd is unreachable. The cache is looked at a slice at a time.
        """
        query = self._query(cluster, service, node, family, desired_status, last_status, include_stopped)
        after = decode_token(query, token)
        builder = PageBuilder(query, after, page_size(size))
        candidates = self._candidates(query)
        for start in range(0, len(candidates), PAGE_SLICE):
            if start:
                await asyncio.sleep(0)
            builder.add(t.value for t in candidates[start : start + PAGE_SLICE])
        if len(candidates) > PAGE_SLICE:
            await asyncio.sleep(0)  # choosing the page among what was kept is a slice of its own
        return builder.page()

    def _query(
        self,
        cluster: str,
        service: str,
        node: str,
        family: str,
        desired_status: int,
        last_status: int,
        include_stopped: bool,
    ) -> TaskQuery:
        """The listing's filters, each checked (a bad one is InvalidArgument, a missing
        cluster, service or node NotFound)."""
        name = cluster_name(cluster)
        if self._cache.cluster(name) is None:
            raise NotFound(f"cluster {name!r} does not exist; create it with `berth cluster create {name}`")
        if service:
            check_dns_label("service", service)
            if self._cache.service(name, service) is None and not self._cache.tasks_of_service(name, service):
                # A deleted service's stopped tasks are still listed until purged.
                raise NotFound(f"service {service!r} does not exist in cluster {name!r}")
        if node:
            check_node_id(node)
            if self._cache.node(node) is None and not self._cache.tasks_on_node(node):
                raise NotFound(f"node {node} does not exist; see `berth node list`")
        revision = None
        if family:
            family, revision = parse_task_definition_ref(family)
        if desired_status not in pb.DesiredStatus.values():
            raise InvalidArgument(f"desired_status {desired_status} is unknown: use RUNNING or STOPPED")
        if last_status not in pb.TaskStatus.values():
            raise InvalidArgument(f"last_status {last_status} is unknown: use PENDING, RUNNING or STOPPED")
        return TaskQuery(
            cluster=name,
            service=service,
            node_id=node,
            family=family,
            revision=revision,
            desired_status=pb.DesiredStatus.ValueType(desired_status),
            last_status=pb.TaskStatus.ValueType(last_status),
            include_stopped=include_stopped,
        )

    def _candidates(self, query: TaskQuery) -> list[Versioned[pb.Task]]:
        """A snapshot (a new list) of the cached tasks the query can match, narrowed by an index
        when it names a service or a node; the query itself still decides."""
        if query.service:
            return self._cache.tasks_of_service(query.cluster, query.service)
        if query.node_id:
            return self._cache.tasks_on_node(query.node_id)
        return list(self._cache.tasks())

    async def find(self, cluster_name: str, ref: str) -> tuple[pb.Task, int]:
        """The task with id or unique id prefix `ref`, and its record's revision."""
        cluster, _ = await self._clusters.existing(cluster_name)
        if not MIN_PREFIX <= len(ref) <= ID_LENGTH or not all(c in "0123456789abcdef" for c in ref):
            raise InvalidArgument(
                f"task id {shown(ref)} is invalid: give the id or at least its first {MIN_PREFIX} hex digits"
            )
        task_id = ref
        if len(ref) < ID_LENGTH:
            matches = [t.value.id for t in self._cache.tasks() if t.value.id.startswith(ref)]
            if len(matches) > 1:
                raise InvalidArgument(f"task id prefix {ref!r} is ambiguous: give more digits")
            if matches:
                task_id = matches[0]
        found = await self._store.get(keys.task(task_id), pb.Task)
        if found is None or found.value.cluster != cluster:
            raise NotFound(f"task {ref} does not exist in cluster {cluster!r}")
        return found.value, found.mod_revision

    async def run(
        self,
        cluster_name: str,
        task_definition: str,
        strategy: Sequence[pb.PlacementStrategy] = (),
        constraints: Sequence[pb.PlacementConstraint] = (),
        *,
        started_by: str = "",
        tags: Sequence[pb.Tag] = (),
        nodes: Sequence[str] = (),
    ) -> pb.Task:
        """Create one task that is not part of a service; the scheduler places it.

        `nodes` (ECS StartTask's containerInstances): node ids of the cluster, each
        READY now; the task is then placed only on one of them.
        """
        check_started_by(started_by)
        checked_tags = tag_rules.check_tags(tags)
        cluster, cluster_revision = await self._clusters.existing(cluster_name)
        td = await self._taskdefs.runnable(task_definition)
        compile_strategy(strategy)
        compile_constraints(constraints)
        pinned = await self._pinnable(cluster, nodes)
        task = lifecycle.new_task(cluster, td, "", strategy, constraints)
        task.started_by = started_by
        task.tags.extend(checked_tags)
        task.pinned_nodes.extend(pinned)
        key = keys.task(task.id)
        created = await self._store.commit(
            [Put(key, task)], [Condition(key, 0), Condition(keys.cluster(cluster), cluster_revision)]
        )
        if created is None:
            raise Conflict(f"cluster {cluster!r} changed while starting the task; try again")
        log.info(
            "event=task_created task=%s cluster=%s taskdef=%s started_by=%s pinned=%s",
            task.id,
            cluster,
            task.task_definition,
            started_by or "-",
            ",".join(pinned) or "-",
        )
        return task

    async def _pinnable(self, cluster: str, nodes: Sequence[str]) -> list[str]:
        """The node ids, deduplicated in order, once each is a READY node of the cluster."""
        pinned = list(dict.fromkeys(nodes))
        if len(pinned) > MAX_PINNED_NODES:
            raise InvalidArgument(
                f"{len(pinned)} nodes given to start the task on: the limit is {MAX_PINNED_NODES}"
            )
        for node_id in pinned:
            check_node_id(node_id)
            found = await self._store.get(keys.node(node_id), pb.Node)
            if found is None or node_cluster(found.value) != cluster:
                raise NotFound(f"node {node_id} does not exist in cluster {cluster!r}; see `berth node list`")
            if found.value.status != pb.READY:
                status = pb.NodeStatus.Name(found.value.status)
                raise FailedPrecondition(f"node {node_id} is {status}: a task starts only on a READY node")
        return pinned

    async def stop(self, cluster_name: str, ref: str, reason: str) -> pb.Task:
        """Ask for the task to stop; stopping a task already stopping or stopped changes nothing.

        The scheduler and the agent write a new task all the time (placement,
        PENDING, RUNNING, health), so the request is re-applied to fresh state
        under the store's one retry policy instead of failing on the first race.
        """
        if len(reason) > MAX_REASON:
            raise InvalidArgument(f"the stop reason is {len(reason)} characters: the limit is {MAX_REASON}")
        task, _ = await self.find(cluster_name, ref)
        reason = reason or "Task stopped by user"
        requested = False

        def request(current: pb.Task) -> pb.Task | None:
            nonlocal requested
            updated = lifecycle.request_stop(current, pb.USER_INITIATED, reason)
            requested = updated is not None
            return updated

        stored = await self._store.update(keys.task(task.id), pb.Task, request)
        if stored is None:
            raise NotFound(f"task {ref} does not exist in cluster {task.cluster!r}")
        if requested:
            log.info("event=task_stop_requested task=%s reason=%r", task.id, reason)
        return stored
