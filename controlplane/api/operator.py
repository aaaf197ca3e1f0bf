"""The operator API (`berth.v1.Operator`): validates requests and writes etcd.

Every mutation is validated before anything is written, and written in one
transaction that compares mod_revisions, so a bad or racing request leaves
the store as it was. Reads of single objects go to etcd; listings come from
the replica's cache, which trails etcd by milliseconds.
"""

from __future__ import annotations

import logging

from berth.clock import now
from berth.errors import AlreadyExists, Conflict, FailedPrecondition, InvalidArgument, NotFound
from berth.names import check_dns_label, parse_task_definition_ref
from berth.taskdef import validate_task_definition
from berth.v1 import operator_pb2 as api
from berth.v1 import operator_pb2_grpc
from berth.v1 import resources_pb2 as pb
from controlplane import lifecycle
from controlplane.api.errors import Context, grpc_errors
from controlplane.cache import ClusterCache
from controlplane.endpoints import allocate_vip, dns_name, endpoints, resolve_ports
from controlplane.registry import AgentRegistry
from controlplane.scheduler.policies import compile_constraints, compile_strategy
from controlplane.store import Condition, Delete, Put, Store, keys

log = logging.getLogger(__name__)

DEFAULT_CLUSTER = "default"
MAX_DESIRED_COUNT = 10_000


async def ensure_default_cluster(store: Store) -> None:
    """The `default` cluster always exists (created once, never deletable)."""
    cluster = pb.Cluster(name=DEFAULT_CLUSTER, created_at=now())
    await store.commit(
        [Put(keys.cluster(DEFAULT_CLUSTER), cluster)], [Condition(keys.cluster(DEFAULT_CLUSTER), 0)]
    )


def _cluster_name(name: str) -> str:
    return check_dns_label("cluster", name or DEFAULT_CLUSTER)


def _desired_count(value: int) -> int:
    if value < 0:
        raise InvalidArgument(
            f"desired count {value} is negative: give a number from 0 to {MAX_DESIRED_COUNT}"
        )
    if value > MAX_DESIRED_COUNT:
        raise InvalidArgument(f"desired count {value} is too large: the limit is {MAX_DESIRED_COUNT}")
    return value


class OperatorService(operator_pb2_grpc.OperatorServicer):
    def __init__(self, store: Store, cache: ClusterCache, agents: AgentRegistry, service_cidr: str) -> None:
        self._store = store
        self._cache = cache
        self._agents = agents
        self._service_cidr = service_cidr

    # -- shared lookups ---------------------------------------------------

    async def _existing_cluster(self, name: str) -> tuple[str, int]:
        name = _cluster_name(name)
        found = await self._store.get(keys.cluster(name), pb.Cluster)
        if found is None:
            raise NotFound(f"cluster {name!r} does not exist; create it with `berth cluster create {name}`")
        return name, found.mod_revision

    async def _resolve_taskdef(self, ref: str, require_active: bool = True) -> pb.TaskDefinition:
        if not ref:
            raise InvalidArgument("a task definition is required: give FAMILY or FAMILY:REVISION")
        family, revision = parse_task_definition_ref(ref)
        if revision is not None:
            found = await self._store.get(keys.taskdef(family, revision), pb.TaskDefinition)
            if found is None:
                raise NotFound(f"task definition {family}:{revision} does not exist")
            if require_active and found.value.status != pb.ACTIVE:
                raise FailedPrecondition(f"task definition {family}:{revision} is INACTIVE (deregistered)")
            return found.value
        revisions, _ = await self._store.scan(keys.taskdef_family(family), pb.TaskDefinition)
        active = [r.value for r in revisions if r.value.status == pb.ACTIVE]
        if not active:
            raise NotFound(f"task definition family {family!r} has no active revision")
        return max(active, key=lambda td: td.revision)

    # -- clusters ----------------------------------------------------------

    @grpc_errors
    async def CreateCluster(self, request: api.CreateClusterRequest, context: Context) -> pb.Cluster:
        name = check_dns_label("cluster", request.name)
        cluster = pb.Cluster(name=name, created_at=now())
        if (
            await self._store.commit([Put(keys.cluster(name), cluster)], [Condition(keys.cluster(name), 0)])
            is None
        ):
            raise AlreadyExists(f"cluster {name!r} already exists")
        log.info("event=cluster_created cluster=%s", name)
        return cluster

    @grpc_errors
    async def ListClusters(
        self, request: api.ListClustersRequest, context: Context
    ) -> api.ListClustersResponse:
        clusters, _ = await self._store.scan(keys.CLUSTERS, pb.Cluster)
        return api.ListClustersResponse(clusters=[c.value for c in clusters])

    @grpc_errors
    async def DeleteCluster(self, request: api.DeleteClusterRequest, context: Context) -> pb.Cluster:
        name, revision = await self._existing_cluster(request.name)
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
            raise FailedPrecondition(
                f"cluster {name!r} still has {' and '.join(left)}; "
                "delete its services and stop its tasks first"
            )
        # Comparing the (absent) first service key would not stop a racing
        # create; creates compare the cluster's revision instead, so deleting
        # it here makes any racing create fail.
        if (
            await self._store.commit([Delete(keys.cluster(name))], [Condition(keys.cluster(name), revision)])
            is None
        ):
            raise Conflict(f"cluster {name!r} changed while deleting it; try again")
        log.info("event=cluster_deleted cluster=%s", name)
        return pb.Cluster(name=name)

    # -- task definitions --------------------------------------------------

    @grpc_errors
    async def RegisterTaskDefinition(
        self, request: api.RegisterTaskDefinitionRequest, context: Context
    ) -> pb.TaskDefinition:
        td = pb.TaskDefinition(
            family=request.family,
            container_definitions=request.container_definitions,
            cpu=request.cpu,
            memory=request.memory,
            status=pb.ACTIVE,
        )
        validate_task_definition(td)
        for _ in range(10):
            existing, _ = await self._store.scan(keys.taskdef_family(td.family), pb.TaskDefinition)
            td.revision = max((e.value.revision for e in existing), default=0) + 1
            td.registered_at.CopyFrom(now())
            key = keys.taskdef(td.family, td.revision)
            if await self._store.commit([Put(key, td)], [Condition(key, 0)]) is not None:
                log.info("event=taskdef_registered taskdef=%s:%s", td.family, td.revision)
                return td
        raise Conflict(f"too many concurrent registrations of family {td.family!r}; try again")

    @grpc_errors
    async def ListTaskDefinitions(
        self, request: api.ListTaskDefinitionsRequest, context: Context
    ) -> api.ListTaskDefinitionsResponse:
        prefix = keys.taskdef_family(request.family) if request.family else keys.TASKDEFS
        found, _ = await self._store.scan(prefix, pb.TaskDefinition)
        return api.ListTaskDefinitionsResponse(task_definitions=[f.value for f in found])

    @grpc_errors
    async def DescribeTaskDefinition(
        self, request: api.DescribeTaskDefinitionRequest, context: Context
    ) -> pb.TaskDefinition:
        return await self._resolve_taskdef(request.task_definition, require_active=False)

    @grpc_errors
    async def DeregisterTaskDefinition(
        self, request: api.DescribeTaskDefinitionRequest, context: Context
    ) -> pb.TaskDefinition:
        family, revision = parse_task_definition_ref(request.task_definition)
        if revision is None:
            raise InvalidArgument("deregister needs an exact revision: FAMILY:REVISION")

        def deactivate(td: pb.TaskDefinition) -> pb.TaskDefinition | None:
            if td.status == pb.INACTIVE:
                return None
            td.status = pb.INACTIVE
            return td

        updated = await self._store.update(keys.taskdef(family, revision), pb.TaskDefinition, deactivate)
        if updated is None:
            raise NotFound(f"task definition {family}:{revision} does not exist")
        # Like ECS: running services keep using an INACTIVE revision; only new uses are refused.
        return updated

    # -- services ------------------------------------------------------------

    @grpc_errors
    async def CreateService(self, request: api.CreateServiceRequest, context: Context) -> pb.Service:
        name = check_dns_label("service", request.name)
        desired = _desired_count(request.desired_count)
        cluster, cluster_revision = await self._existing_cluster(request.cluster)
        td = await self._resolve_taskdef(request.task_definition)
        compile_strategy(request.placement_strategy)
        compile_constraints(request.placement_constraints)
        ports = resolve_ports(request.ports, td)
        service = pb.Service(
            cluster=cluster,
            name=name,
            task_definition=lifecycle.task_definition_ref(td),
            desired_count=desired,
            status=pb.SERVICE_ACTIVE,
            created_at=now(),
            updated_at=now(),
            placement_strategy=request.placement_strategy,
            placement_constraints=request.placement_constraints,
            ports=ports,
        )
        key = keys.service(cluster, name)
        existing = await self._store.get(key, pb.Service)
        if existing is not None:
            raise AlreadyExists(f"service {name!r} already exists in cluster {cluster!r}")
        events = pb.ServiceEvents(
            events=[pb.ServiceEvent(created_at=now(), message=f"service {name} was created")]
        )
        for _ in range(20):
            taken, _ = await self._store.list_raw(keys.VIPS)
            service.vip = allocate_vip(self._service_cidr, (t.key.removeprefix(keys.VIPS) for t in taken))
            vip_key = keys.vip(service.vip)
            revision = await self._store.commit(
                [
                    Put(key, service),
                    Put(keys.events(cluster, name), events),
                    Put(vip_key, f"{cluster}/{name}".encode()),
                ],
                [
                    Condition(key, 0),
                    Condition(keys.cluster(cluster), cluster_revision),
                    Condition(vip_key, 0),
                ],
            )
            if revision is not None:
                break
            if await self._store.get(key, pb.Service) is not None:
                raise AlreadyExists(f"service {name!r} already exists in cluster {cluster!r}")
            if await self._store.get(keys.cluster(cluster), pb.Cluster) is None:
                raise NotFound(f"cluster {cluster!r} was deleted while creating the service")
            # Another service took this virtual IP first: pick again.
        else:
            raise Conflict(f"could not allocate a virtual IP for service {name!r}; try again")
        log.info(
            "event=service_created cluster=%s service=%s taskdef=%s desired=%d",
            cluster,
            name,
            service.task_definition,
            desired,
        )
        return service

    @grpc_errors
    async def ListServices(
        self, request: api.ListServicesRequest, context: Context
    ) -> api.ListServicesResponse:
        cluster, _ = await self._existing_cluster(request.cluster)
        found, _ = await self._store.scan(keys.services_of(cluster), pb.Service)
        return api.ListServicesResponse(services=[f.value for f in found])

    async def _existing_service(self, cluster_name: str, name: str) -> tuple[str, pb.Service, int]:
        cluster, _ = await self._existing_cluster(cluster_name)
        check_dns_label("service", name)
        found = await self._store.get(keys.service(cluster, name), pb.Service)
        if found is None:
            raise NotFound(f"service {name!r} does not exist in cluster {cluster!r}")
        return cluster, found.value, found.mod_revision

    @grpc_errors
    async def DescribeService(self, request: api.ServiceRef, context: Context) -> api.ServiceDescription:
        cluster, service, _ = await self._existing_service(request.cluster, request.name)
        tasks = [t.value for t in self._cache.tasks_of_service(cluster, service.name)]
        events = await self._store.get(keys.events(cluster, service.name), pb.ServiceEvents)
        nodes = [n.value for n in self._cache.nodes() if n.value.status != pb.DOWN]
        return api.ServiceDescription(
            dns_name=dns_name(service),
            exposed_addresses=[
                f"{n.address}:{lb.port}{'/udp' if lb.protocol == pb.UDP else ''}"
                for lb in service.load_balancers
                for n in sorted(nodes, key=lambda n: n.name)
            ],
            service=service,
            running_count=sum(1 for t in tasks if t.last_status == pb.RUNNING),
            pending_count=sum(1 for t in tasks if t.last_status == pb.PENDING),
            events=list(reversed(events.value.events)) if events else [],
        )

    @grpc_errors
    async def UpdateService(self, request: api.UpdateServiceRequest, context: Context) -> pb.Service:
        cluster, service, revision = await self._existing_service(request.cluster, request.name)
        if service.status != pb.SERVICE_ACTIVE:
            raise FailedPrecondition(f"service {service.name!r} is being deleted")
        if request.HasField("desired_count"):
            service.desired_count = _desired_count(request.desired_count)
        service.updated_at.CopyFrom(now())
        key = keys.service(cluster, service.name)
        if await self._store.commit([Put(key, service)], [Condition(key, revision)]) is None:
            raise Conflict(f"service {service.name!r} changed while updating it; try again")
        log.info(
            "event=service_updated cluster=%s service=%s desired=%d",
            cluster,
            service.name,
            service.desired_count,
        )
        return service

    @grpc_errors
    async def DeleteService(self, request: api.ServiceRef, context: Context) -> pb.Service:
        cluster, service, revision = await self._existing_service(request.cluster, request.name)
        # The service controller stops its tasks and removes the record once
        # they are all STOPPED, so no container is left behind.
        service.status = pb.SERVICE_DRAINING
        service.desired_count = 0
        service.updated_at.CopyFrom(now())
        key = keys.service(cluster, service.name)
        if await self._store.commit([Put(key, service)], [Condition(key, revision)]) is None:
            raise Conflict(f"service {service.name!r} changed while deleting it; try again")
        log.info("event=service_deleting cluster=%s service=%s", cluster, service.name)
        return service

    # -- tasks -----------------------------------------------------------------

    @grpc_errors
    async def ListTasks(self, request: api.ListTasksRequest, context: Context) -> api.ListTasksResponse:
        cluster, _ = await self._existing_cluster(request.cluster)
        if request.service:
            check_dns_label("service", request.service)
            candidates = [t.value for t in self._cache.tasks_of_service(cluster, request.service)]
            # A deleted service's stopped tasks are still listed until purged.
            if not candidates and self._cache.service(cluster, request.service) is None:
                raise NotFound(f"service {request.service!r} does not exist in cluster {cluster!r}")
        else:
            candidates = [t.value for t in self._cache.tasks() if t.value.cluster == cluster]
        tasks = [t for t in candidates if request.include_stopped or t.last_status != pb.STOPPED]
        tasks.sort(key=lambda t: (t.created_at.seconds, t.created_at.nanos, t.id))
        return api.ListTasksResponse(tasks=tasks)

    async def _find_task(self, cluster: str, ref: str) -> tuple[pb.Task, int]:
        if len(ref) < 6 or not all(c in "0123456789abcdef" for c in ref):
            raise InvalidArgument(
                f"task id {ref!r} is invalid: give the id or at least its first 6 hex digits"
            )
        task_id = ref
        if len(ref) < 32:
            matches = [t.value.id for t in self._cache.tasks() if t.value.id.startswith(ref)]
            if len(matches) > 1:
                raise InvalidArgument(f"task id prefix {ref!r} is ambiguous: give more digits")
            if matches:
                task_id = matches[0]
        found = await self._store.get(keys.task(task_id), pb.Task)
        if found is None or found.value.cluster != cluster:
            raise NotFound(f"task {ref} does not exist in cluster {cluster!r}")
        return found.value, found.mod_revision

    @grpc_errors
    async def DescribeTask(self, request: api.TaskRef, context: Context) -> pb.Task:
        cluster, _ = await self._existing_cluster(request.cluster)
        task, _ = await self._find_task(cluster, request.id)
        return task

    @grpc_errors
    async def RunTask(self, request: api.RunTaskRequest, context: Context) -> pb.Task:
        cluster, cluster_revision = await self._existing_cluster(request.cluster)
        td = await self._resolve_taskdef(request.task_definition)
        compile_strategy(request.placement_strategy)
        compile_constraints(request.placement_constraints)
        task = lifecycle.new_task(cluster, td, "", request.placement_strategy, request.placement_constraints)
        key = keys.task(task.id)
        if (
            await self._store.commit(
                [Put(key, task)], [Condition(key, 0), Condition(keys.cluster(cluster), cluster_revision)]
            )
            is None
        ):
            raise Conflict(f"cluster {cluster!r} changed while starting the task; try again")
        log.info("event=task_created task=%s cluster=%s taskdef=%s", task.id, cluster, task.task_definition)
        return task

    @grpc_errors
    async def StopTask(self, request: api.StopTaskRequest, context: Context) -> pb.Task:
        cluster, _ = await self._existing_cluster(request.cluster)
        task, revision = await self._find_task(cluster, request.id)
        reason = request.reason or "Task stopped by user"
        updated = lifecycle.request_stop(task, pb.USER_INITIATED, reason)
        if updated is None:
            return task
        if (
            await self._store.commit(
                [Put(keys.task(task.id), updated)], [Condition(keys.task(task.id), revision)]
            )
            is None
        ):
            raise Conflict(f"task {task.id} changed while stopping it; try again")
        log.info("event=task_stop_requested task=%s reason=%r", task.id, reason)
        return updated

    # -- nodes -------------------------------------------------------------------

    @grpc_errors
    async def ListNodes(self, request: api.ListNodesRequest, context: Context) -> api.ListNodesResponse:
        summaries = []
        for versioned in sorted(self._cache.nodes(), key=lambda n: n.value.name):
            node = versioned.value
            tasks = [
                t.value for t in self._cache.tasks_on_node(node.id) if lifecycle.holds_resources(t.value)
            ]
            summary = api.NodeSummary(
                node=node,
                cpu_reserved=sum(t.cpu for t in tasks),
                memory_reserved=sum(t.memory for t in tasks),
                running_tasks=sum(1 for t in tasks if t.last_status == pb.RUNNING),
                connected=self._agents.is_connected(node.id),
            )
            metrics = self._agents.metrics(node.id)
            if metrics is not None:
                summary.metrics.CopyFrom(metrics)
            summaries.append(summary)
        return api.ListNodesResponse(nodes=summaries)

    @grpc_errors
    async def UpdateNodeStatus(self, request: api.UpdateNodeStatusRequest, context: Context) -> pb.Node:
        if request.status not in (pb.READY, pb.DRAINING):
            raise InvalidArgument(
                "a node's status can be set to READY or DRAINING (DOWN is decided by heartbeats)"
            )
        nodes, _ = await self._store.scan(keys.NODES, pb.Node)
        matches = [n for n in nodes if request.node in (n.value.id, n.value.name)]
        if not matches:
            raise NotFound(f"node {request.node!r} does not exist; see `berth node list`")
        if len(matches) > 1:
            raise InvalidArgument(f"node name {request.node!r} is ambiguous: give the node id")
        (found,) = matches

        def change(node: pb.Node) -> pb.Node | None:
            if node.status == pb.DOWN:
                raise FailedPrecondition(f"node {node.name} is DOWN; it becomes READY when its agent is back")
            if node.status == request.status:
                return None
            node.status = request.status
            return node

        updated = await self._store.update(found.key, pb.Node, change)
        if updated is None:
            raise NotFound(f"node {request.node!r} does not exist")
        log.info("event=node_status_set node=%s status=%s", updated.id, pb.NodeStatus.Name(updated.status))
        return updated

    @grpc_errors
    async def ExposeService(self, request: api.ExposeServiceRequest, context: Context) -> pb.Service:
        if request.type != "LoadBalancer":
            raise InvalidArgument(f"expose type {request.type!r} is not supported: use LoadBalancer")
        if not 1 <= request.port <= 65535:
            raise InvalidArgument(f"port {request.port} is out of range: use 1-65535")
        cluster, service, revision = await self._existing_service(request.cluster, request.name)
        target = request.service_port or request.port
        if not any(p.port == target and p.protocol == request.protocol for p in service.ports):
            known = ", ".join(str(p.port) for p in service.ports) or "none; create it with --port"
            raise InvalidArgument(f"service {service.name} has no port {target} (its ports: {known})")
        # The port opens on every host, so it must be free across all services.
        for other in self._cache.services():
            for lb in other.value.load_balancers:
                same = other.value.name == service.name and other.value.cluster == cluster
                if lb.port == request.port and lb.protocol == request.protocol and not same:
                    raise AlreadyExists(
                        f"port {request.port} is already exposed by service {other.value.name} "
                        f"in cluster {other.value.cluster}"
                    )
        kept = [
            lb
            for lb in service.load_balancers
            if not (lb.port == request.port and lb.protocol == request.protocol)
        ]
        del service.load_balancers[:]
        service.load_balancers.extend(kept)
        service.load_balancers.append(
            pb.LoadBalancerPort(port=request.port, service_port=target, protocol=request.protocol)
        )
        key = keys.service(cluster, service.name)
        if await self._store.commit([Put(key, service)], [Condition(key, revision)]) is None:
            raise Conflict(f"service {service.name!r} changed while exposing it; try again")
        log.info("event=service_exposed cluster=%s service=%s port=%d", cluster, service.name, request.port)
        return service

    @grpc_errors
    async def ListEndpoints(self, request: api.ServiceRef, context: Context) -> api.ListEndpointsResponse:
        cluster, service, _ = await self._existing_service(request.cluster, request.name)
        tasks = [t.value for t in self._cache.tasks_of_service(cluster, service.name)]
        nodes = {n.value.id: n.value for n in self._cache.nodes()}
        found = endpoints(service, tasks, nodes)
        serving = {e.task_id for e in found}
        not_ready = {}
        for task in tasks:
            if task.id in serving or task.last_status == pb.STOPPED:
                continue
            node = nodes.get(task.node_id)
            if task.desired_status == pb.DESIRED_STOPPED:
                not_ready[task.id] = "stopping"
            elif node is not None and node.status == pb.DOWN:
                not_ready[task.id] = "node DOWN"
            else:
                not_ready[task.id] = pb.TaskStatus.Name(task.last_status)
        return api.ListEndpointsResponse(endpoints=found, not_ready=not_ready)
