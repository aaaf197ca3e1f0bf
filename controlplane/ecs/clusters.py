"""ECS's cluster operations: CreateCluster, DescribeClusters, ListClusters, DeleteCluster."""

from __future__ import annotations

from berth.ecs import shapes
from berth.errors import AlreadyExists
from berth.names import DEFAULT_CLUSTER
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
    tags_of,
    wants_tags,
)
from controlplane.ecs.pages import page


async def create_cluster(backend: Backend, params: Params) -> Answer:
    """Like ECS, creating a cluster that exists answers with it instead of an error."""
    name = params.get("clusterName") or DEFAULT_CLUSTER
    try:
        await backend.ops.clusters.create(name, tags=tags_of(params))
    except AlreadyExists:
        pass
    return {"cluster": shapes.cluster(backend.arns, await call(backend.ops.clusters.describe(name)))}


async def describe_clusters(backend: Backend, params: Params) -> Answer:
    """Unknown clusters (and names Berth could not have) are listed as failures (reason MISSING),
    as ECS does, not refused; every cluster asked about is counted in one pass over the cache."""
    refs = bounded_list(params, "clusters", 100, required=False) or [DEFAULT_CLUSTER]
    described = {d.cluster.name: d for d in await call(backend.ops.clusters.describe_all())}
    found, failures, seen = [], [], set()
    for ref in refs:
        name = backend.arns.cluster_name(ref)
        if name in seen:
            continue
        seen.add(name)
        description = described.get(name)
        if description is None:
            failures.append(missing(backend.arns.cluster(name)))
            continue
        tags = description.cluster.tags if wants_tags(params) else None
        found.append(shapes.cluster(backend.arns, description, tags))
    return {"clusters": found, "failures": failures}


async def list_clusters(backend: Backend, params: Params) -> Answer:
    clusters = await call(backend.ops.clusters.all())
    return page(params, [backend.arns.cluster(c.name) for c in clusters], "clusterArns")


async def delete_cluster(backend: Backend, params: Params) -> Answer:
    name = await cluster_of(backend, params)
    description = await call(backend.ops.clusters.describe(name))
    await call(backend.ops.clusters.delete(name), "ClusterNotFoundException")
    shape = shapes.cluster(backend.arns, description)
    shape["status"] = "INACTIVE"
    return {"cluster": shape}


OPERATIONS: dict[str, Operation] = {
    "CreateCluster": operation(
        "admin",
        create_cluster,
        supported=("clusterName", "tags"),
        # Container Insights is CloudWatch's; Berth's metrics are its own (README: Metrics).
        ignored=("settings",),
    ),
    "DescribeClusters": operation("viewer", describe_clusters, supported=("clusters", "include")),
    "ListClusters": operation("viewer", list_clusters, supported=("nextToken", "maxResults")),
    "DeleteCluster": operation("admin", delete_cluster, supported=("cluster",)),
}
