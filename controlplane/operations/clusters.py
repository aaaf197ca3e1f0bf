"""Clusters: create, list, delete; the `default` cluster always exists.

A cluster is deleted only when empty, as in ECS: no services, no tasks that are
not STOPPED, no nodes registered in it (each refusal its own error type).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from berth import tags as tag_rules
from berth.clock import now
from berth.errors import (
    AlreadyExists,
    ClusterHasNodes,
    ClusterHasServices,
    ClusterHasTasks,
    Conflict,
    FailedPrecondition,
    NotFound,
)
from berth.names import DEFAULT_CLUSTER, check_dns_label, node_cluster
from berth.v1 import operator_pb2 as api
from berth.v1 import resources_pb2 as pb
from controlplane.cache import ClusterCache
from controlplane.limits import Quotas
from controlplane.store import Condition, Delete, Put, StoreAPI, keys

log = logging.getLogger(__name__)


async def ensure_default_cluster(store: StoreAPI) -> None:
    """The `default` cluster always exists (created once, never deletable)."""
    cluster = pb.Cluster(name=DEFAULT_CLUSTER, created_at=now())
    await store.commit(
        [Put(keys.cluster(DEFAULT_CLUSTER), cluster)], [Condition(keys.cluster(DEFAULT_CLUSTER), 0)]
    )


def cluster_name(name: str) -> str:
    """A cluster name as given, or the default cluster when none is."""
    return check_dns_label("cluster", name or DEFAULT_CLUSTER)


class Clusters:
    def __init__(self, store: StoreAPI, cache: ClusterCache, quotas: Quotas | None = None) -> None:
        self._store = store
        self._cache = cache
        self._quotas = quotas or Quotas()

    async def existing(self, name: str) -> tuple[str, int]:
        """The cluster's checked name and its record's revision; NotFound if it does not exist."""
        name = cluster_name(name)
        found = await self._store.get(keys.cluster(name), pb.Cluster)
        if found is None:
            raise NotFound(f"cluster {name!r} does not exist; create it with `berth cluster create {name}`")
        return name, found.mod_revision

    async def create(self, name: str, tags: Sequence[pb.Tag] = ()) -> pb.Cluster:
        name = check_dns_label("cluster", name)
        checked_tags = tag_rules.check_tags(tags)
        self._quotas.check(
            "the number of clusters", len(self._cache.clusters()), self._quotas.clusters, "--max-clusters"
        )
        cluster = pb.Cluster(name=name, created_at=now(), tags=checked_tags)
        revision = await self._store.put_if_unchanged(keys.cluster(name), cluster, 0)
        if revision is None:
            raise AlreadyExists(f"cluster {name!r} already exists")
        # Read your own writes: describe (from the cache) right after finds it.
        await self._cache.wait_for_revision(revision)
        log.info("event=cluster_created cluster=%s", name)
        return cluster

    async def all(self) -> list[pb.Cluster]:
        clusters, _ = await self._store.scan(keys.CLUSTERS, pb.Cluster)
        return [c.value for c in clusters]

    async def describe_all(self) -> list[api.ClusterDescription]:
        """Every cluster with its counts (ECS's DescribeClusters), by name, from the cache."""
        return self._descriptions([c.value for c in self._cache.clusters()])

    async def describe(self, name: str) -> api.ClusterDescription:
        """One cluster with its counts; NotFound if it does not exist."""
        name = cluster_name(name)
        found = self._cache.cluster(name)
        if found is None:
            raise NotFound(f"cluster {name!r} does not exist; create it with `berth cluster create {name}`")
        return self._descriptions([found.value])[0]

    def _descriptions(self, clusters: list[pb.Cluster]) -> list[api.ClusterDescription]:
        # One pass over tasks and services for all clusters asked about.
        described = {
            c.name: api.ClusterDescription(
                cluster=c,
            )
            for c in clusters
        }
        for node_record in self._cache.nodes():
            found = described.get(node_cluster(node_record.value))
            if found is not None:
                found.registered_container_instances += 1
        for task_record in self._cache.tasks():
            task = task_record.value
            found = described.get(task.cluster)
            if found is not None:
                found.running_tasks += task.last_status == pb.RUNNING
                found.pending_tasks += task.last_status == pb.PENDING
        for service_record in self._cache.services():
            service = service_record.value
            found = described.get(service.cluster)
            if found is not None and service.status != pb.SERVICE_DRAINING:
                found.active_services += 1
        return [described[name] for name in sorted(described)]

    async def delete(self, name: str) -> pb.Cluster:
        """Delete an empty cluster; like ECS, one with services, live tasks or nodes is refused."""
        name, revision = await self.existing(name)
        if name == DEFAULT_CLUSTER:
            raise FailedPrecondition("the default cluster cannot be deleted")
        services, read_at = await self._store.scan(keys.services_of(name), pb.Service)
        # Tasks are keyed by id, not by cluster: read them from the cache once
        # it has caught up with the scan above, so a task created before this
        # call is seen. One created after it compares the cluster's revision,
        # which the delete below changes, so it fails instead of being orphaned.
        await self._cache.wait_for_revision(read_at)
        live = sorted(
            t.value.id[:12]
            for t in self._cache.tasks()
            if t.value.cluster == name and t.value.last_status != pb.STOPPED
        )
        if services or live:
            left = []
            if services:
                left.append(f"{len(services)} service(s) ({', '.join(s.value.name for s in services)})")
            if live:
                shown = ", ".join(live[:5]) + (", ..." if len(live) > 5 else "")
                left.append(f"{len(live)} task(s) not STOPPED ({shown})")
            refusal = ClusterHasServices if services else ClusterHasTasks
            raise refusal(
                f"cluster {name!r} still has {' and '.join(left)}; "
                "delete its services and stop its tasks first"
            )
        # Nodes from etcd, not the cache: one that registered a moment ago counts.
        nodes, _ = await self._store.scan(keys.NODES, pb.Node)
        members = sum(1 for n in nodes if node_cluster(n.value) == name)
        if members:
            raise ClusterHasNodes(
                f"cluster {name!r} still has {members} container instances; drain and remove them first"
            )
        # Creates of services and tasks and registrations of nodes compare the
        # cluster's revision, so deleting it here makes any racing one fail.
        if (
            await self._store.commit([Delete(keys.cluster(name))], [Condition(keys.cluster(name), revision)])
            is None
        ):
            raise Conflict(f"cluster {name!r} changed while deleting it; try again")
        log.info("event=cluster_deleted cluster=%s", name)
        return pb.Cluster(name=name)
