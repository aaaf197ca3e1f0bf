"""Services: a desired count of one task definition, with a virtual IP and DNS name.

Creating, updating and deleting a service only writes its record; the
service controller (`controllers/services.py`) starts and stops tasks to
match it, and removes the record and its VIP once a deleted service's tasks
have all stopped, so no container is left behind.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from berth import deployment_defaults
from berth import tags as tag_rules
from berth.clock import now
from berth.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    ServiceNotActive,
)
from berth.names import check_dns_label, port_text, service_dns_name
from berth.v1 import operator_pb2 as api
from berth.v1 import resources_pb2 as pb
from controlplane import backoff, deployments, lifecycle
from controlplane.cache import ClusterCache
from controlplane.endpoints import endpoints, not_ready, resolve_ports, serves_health
from controlplane.events import EventLog
from controlplane.limits import PortPolicy, Quotas
from controlplane.operations.clusters import Clusters
from controlplane.operations.taskdefs import TaskDefinitions
from controlplane.scheduler.policies import compile_constraints, compile_strategy
from controlplane.store import RETRY, Condition, Put, Retry, StoreAPI, keys, optimistic
from controlplane.vips import VipAllocator

log = logging.getLogger(__name__)

# The default quota of tasks per service (--max-tasks-per-service).
MAX_DESIRED_COUNT = Quotas().tasks_per_service


def _started(service: pb.Service) -> str:
    current = service.deployments[0]
    tasks = "task" if service.desired_count == 1 else "tasks"
    return f"deployment {current.id} started: {current.task_definition}, {service.desired_count} {tasks}"


def deployment_counts(service: pb.Service, tasks: list[pb.Task]) -> list[api.DeploymentCounts]:
    """Each listed deployment's tasks: its share of the desired count, and how they are doing."""
    counts = {d.id: api.DeploymentCounts(id=d.id) for d in service.deployments}
    owner_of = deployments.owners(service)
    for task in tasks:
        found = counts.get(owner_of(task))
        if found is None:
            continue
        live = lifecycle.is_active(task)
        found.running_count += live and task.last_status == pb.RUNNING
        found.pending_count += live and task.last_status == pb.PENDING
        found.healthy_count += live and task.last_status == pb.RUNNING and serves_health(task)
        found.failed_count += backoff.is_failure(task)
        # An older deployment's share is what it still runs.
        found.desired_count += live
    current = deployments.primary(service)
    if current is not None:
        counts[current.id].desired_count = service.desired_count
    return list(counts.values())


def desired_count(value: int, limit: int = MAX_DESIRED_COUNT) -> int:
    if value < 0:
        raise InvalidArgument(f"desired count {value} is negative: give a number from 0 to {limit}")
    if value > limit:
        raise ResourceExhausted(
            f"desired count {value} is over the quota of {limit} tasks per service; "
            "raise it with berth-controlplane --max-tasks-per-service"
        )
    return value


@dataclass(frozen=True)
class ServiceSpec:
    """What an operator asks for when creating a service."""

    cluster: str
    name: str
    task_definition: str
    desired_count: int
    placement_strategy: list[pb.PlacementStrategy] = field(default_factory=list)
    placement_constraints: list[pb.PlacementConstraint] = field(default_factory=list)
    ports: list[pb.ServicePort] = field(default_factory=list)
    deployment: api.DeploymentOptions = field(default_factory=api.DeploymentOptions)
    # ECS's resource tags (berth.tags' rules).
    tags: list[pb.Tag] = field(default_factory=list)


@dataclass(frozen=True)
class ServiceChange:
    """What an operator asks of an existing service; None / empty / False = unchanged."""

    desired_count: int | None = None
    task_definition: str = ""
    force_new_deployment: bool = False
    deployment: api.DeploymentOptions = field(default_factory=api.DeploymentOptions)


@dataclass(frozen=True)
class ServiceState:
    """A service as `describe` shows it: the record, its tasks' counts, events, addresses."""

    service: pb.Service
    dns_name: str
    exposed_addresses: list[str]
    running_count: int
    pending_count: int
    events: list[pb.ServiceEvent]
    deployment_counts: list[api.DeploymentCounts] = field(default_factory=list)


def description(state: ServiceState) -> api.ServiceDescription:
    """The state as the operator API's ServiceDescription, which both doors render."""
    return api.ServiceDescription(
        service=state.service,
        dns_name=state.dns_name,
        exposed_addresses=state.exposed_addresses,
        running_count=state.running_count,
        pending_count=state.pending_count,
        events=state.events,
        deployment_counts=state.deployment_counts,
    )


class Services:
    def __init__(
        self,
        store: StoreAPI,
        cache: ClusterCache,
        clusters: Clusters,
        taskdefs: TaskDefinitions,
        vips: VipAllocator,
        quotas: Quotas | None = None,
        ports: PortPolicy | None = None,
    ) -> None:
        self._store = store
        self._cache = cache
        self._clusters = clusters
        self._taskdefs = taskdefs
        self._vips = vips
        self._quotas = quotas or Quotas()
        self._ports = ports or PortPolicy()
        self._events = EventLog(store)

    async def existing(self, cluster_name: str, name: str) -> tuple[str, pb.Service, int]:
        """The cluster's name, the service and its record's revision; NotFound if absent."""
        cluster, _ = await self._clusters.existing(cluster_name)
        check_dns_label("service", name)
        found = await self._store.get(keys.service(cluster, name), pb.Service)
        if found is None:
            raise NotFound(f"service {name!r} does not exist in cluster {cluster!r}")
        return cluster, found.value, found.mod_revision

    async def change(
        self, cluster_name: str, name: str, mutate: Callable[[str, pb.Service], pb.Service]
    ) -> tuple[str, pb.Service]:
        """Apply `mutate(cluster, service)` to the service's current record and write it.

        The service controller writes the record all the time (deployment
        counts, rollout state, backoff), so an operator's change is re-applied
        to fresh state under the store's one retry policy rather than failing
        on the first race. `mutate` may raise to refuse; it then writes nothing.
        """
        cluster, _, _ = await self.existing(cluster_name, name)
        key = keys.service(cluster, name)

        async def attempt() -> pb.Service | Retry:
            found = await self._store.get(key, pb.Service)
            if found is None:
                raise NotFound(f"service {name!r} does not exist in cluster {cluster!r}")
            updated = mutate(cluster, found.value)
            if await self._store.put_if_unchanged(key, updated, found.mod_revision) is None:
                return RETRY
            return updated

        return cluster, await optimistic(attempt, what=f"service {name!r}")

    async def create(self, spec: ServiceSpec) -> pb.Service:
        name = check_dns_label("service", spec.name)
        count = desired_count(spec.desired_count, self._quotas.tasks_per_service)
        cluster, cluster_revision = await self._clusters.existing(spec.cluster)
        self._check_service_quota(cluster)
        td = await self._taskdefs.runnable(spec.task_definition)
        compile_strategy(spec.placement_strategy)
        compile_constraints(spec.placement_constraints)
        tags = tag_rules.check_tags(spec.tags)
        ports = resolve_ports(spec.ports, td)
        config = deployments.configure(deployment_defaults.defaults(), spec.deployment)
        service = pb.Service(
            cluster=cluster,
            name=name,
            task_definition=lifecycle.task_definition_ref(td),
            desired_count=count,
            status=pb.SERVICE_ACTIVE,
            created_at=now(),
            updated_at=now(),
            placement_strategy=spec.placement_strategy,
            placement_constraints=spec.placement_constraints,
            ports=ports,
            deployment_configuration=config,
            tags=tags,
        )
        service = deployments.new_deployment(service, service.task_definition, service.created_at)
        key = keys.service(cluster, name)
        if await self._store.get(key, pb.Service) is not None:
            raise AlreadyExists(f"service {name!r} already exists in cluster {cluster!r}")
        events = pb.ServiceEvents(
            events=[
                pb.ServiceEvent(created_at=now(), message=f"service {name} was created"),
                pb.ServiceEvent(created_at=now(), message=_started(service)),
            ]
        )

        async def attempt() -> Retry | None:
            service.vip = await self._vips.candidate()
            claim, vip_free = self._vips.claim(service.vip, cluster, name)
            written = await self._store.commit(
                [Put(key, service), Put(keys.events(cluster, name), events), claim],
                [Condition(key, 0), Condition(keys.cluster(cluster), cluster_revision), vip_free],
            )
            if written is not None:
                return None
            if await self._store.get(key, pb.Service) is not None:
                raise AlreadyExists(f"service {name!r} already exists in cluster {cluster!r}")
            if await self._store.get(keys.cluster(cluster), pb.Cluster) is None:
                raise NotFound(f"cluster {cluster!r} was deleted while creating the service")
            return RETRY  # another service took this virtual IP first: pick again

        await optimistic(attempt, what=f"the virtual IPs of {self._vips.cidr}")
        log.info(
            "event=service_created cluster=%s service=%s taskdef=%s desired=%d vip=%s",
            cluster,
            name,
            service.task_definition,
            count,
            service.vip,
        )
        return service

    async def all(self, cluster_name: str) -> list[pb.Service]:
        cluster, _ = await self._clusters.existing(cluster_name)
        found, _ = await self._store.scan(keys.services_of(cluster), pb.Service)
        return [f.value for f in found]

    async def describe(self, cluster_name: str, name: str) -> ServiceState:
        cluster, service, _ = await self.existing(cluster_name, name)
        tasks = [t.value for t in self._cache.tasks_of_service(cluster, service.name)]
        events = await self._store.get(keys.events(cluster, service.name), pb.ServiceEvents)
        nodes = sorted(
            (n.value for n in self._cache.nodes() if n.value.status != pb.DOWN), key=lambda n: n.name
        )
        return ServiceState(
            service=service,
            dns_name=service_dns_name(service.name, service.cluster),
            exposed_addresses=[
                f"{n.address}:{port_text(lb.port, lb.protocol)}"
                for lb in service.load_balancers
                for n in nodes
            ],
            running_count=sum(1 for t in tasks if t.last_status == pb.RUNNING),
            pending_count=sum(1 for t in tasks if t.last_status == pb.PENDING),
            events=list(reversed(events.value.events)) if events else [],
            deployment_counts=deployment_counts(service, tasks),
        )

    async def events(self, cluster_name: str, name: str, limit: int = 0) -> list[pb.ServiceEvent]:
        """The service's events, newest first; at most `limit` of them (0: all that are kept)."""
        cluster, service, _ = await self.existing(cluster_name, name)
        stored = await self._store.get(keys.events(cluster, service.name), pb.ServiceEvents)
        newest_first = list(reversed(stored.value.events)) if stored else []
        return newest_first[:limit] if limit > 0 else newest_first

    async def update(self, cluster_name: str, name: str, change: ServiceChange) -> pb.Service:
        """Change the desired count or deployment settings, or start a deployment.

        A task definition other than the PRIMARY's (or `force_new_deployment`)
        starts a deployment; everything is checked before anything is written.
        """
        td = await self._taskdefs.runnable(change.task_definition) if change.task_definition else None
        started = False

        def apply(cluster: str, service: pb.Service) -> pb.Service:
            nonlocal started
            if service.status != pb.SERVICE_ACTIVE:
                raise ServiceNotActive(f"service {service.name!r} is being deleted")
            if change.desired_count is not None:
                service.desired_count = desired_count(change.desired_count, self._quotas.tasks_per_service)
            service.deployment_configuration.CopyFrom(
                deployments.configure(deployment_defaults.configuration(service), change.deployment)
            )
            current = deployments.primary(service)
            target = current.task_definition if current else service.task_definition
            if td is not None:
                # The service's ports stay what they are for every deployment, so
                # old and new tasks serve the same container ports side by side.
                resolve_ports(service.ports, td)
                target = lifecycle.task_definition_ref(td)
            started = change.force_new_deployment or current is None or target != current.task_definition
            if started:
                service = deployments.new_deployment(service, target, now())
            service.updated_at.CopyFrom(now())
            return service

        cluster, service = await self.change(cluster_name, name, apply)
        log.info(
            "event=service_updated cluster=%s service=%s desired=%d taskdef=%s deployment=%s",
            cluster,
            service.name,
            service.desired_count,
            service.task_definition,
            service.deployment_count if started else "unchanged",
        )
        if started:
            await self._events.record(cluster, service.name, _started(service))
        return service

    async def delete(self, cluster_name: str, name: str, force: bool = True) -> pb.Service:
        """Drain the service (desired count 0) and remove it once its tasks are gone.

        force=False is ECS's DeleteService without `force`: a service still scaled above
        zero is refused (checked on the record the delete writes over, so no scale-up slips in).
        """

        def drain(cluster: str, service: pb.Service) -> pb.Service:
            if not force and service.desired_count > 0 and service.status == pb.SERVICE_ACTIVE:
                raise InvalidArgument(
                    "The service cannot be stopped while it is scaled above 0: "
                    "set its desired count to 0 first, or delete with force"
                )
            service.status = pb.SERVICE_DRAINING
            service.desired_count = 0
            service.updated_at.CopyFrom(now())
            return service

        cluster, service = await self.change(cluster_name, name, drain)
        log.info("event=service_deleting cluster=%s service=%s", cluster, service.name)
        return service

    async def expose(
        self,
        cluster_name: str,
        name: str,
        kind: str,
        port: int,
        service_port: int,
        protocol: pb.TransportProtocol.ValueType,
    ) -> pb.Service:
        """Open `port` on every host's own address for one of the service's ports."""
        if kind != "LoadBalancer":
            raise InvalidArgument(f"expose type {kind!r} is not supported: use LoadBalancer")
        self._ports.check(port)

        def open_port(cluster: str, service: pb.Service) -> pb.Service:
            self._check_not_a_host_port(port, protocol)
            target = service_port or port
            if not any(p.port == target and p.protocol == protocol for p in service.ports):
                known = ", ".join(str(p.port) for p in service.ports) or "none; create it with --port"
                raise InvalidArgument(f"service {service.name} has no port {target} (its ports: {known})")
            # The port opens on every host, so it must be free across all services.
            for other in self._cache.services():
                same = other.value.name == service.name and other.value.cluster == cluster
                for lb in other.value.load_balancers:
                    if lb.port == port and lb.protocol == protocol and not same:
                        raise AlreadyExists(
                            f"port {port} is already exposed by service {other.value.name} "
                            f"in cluster {other.value.cluster}"
                        )
            kept = [lb for lb in service.load_balancers if not (lb.port == port and lb.protocol == protocol)]
            del service.load_balancers[:]
            service.load_balancers.extend(kept)
            service.load_balancers.append(
                pb.LoadBalancerPort(port=port, service_port=target, protocol=protocol)
            )
            return service

        cluster, service = await self.change(cluster_name, name, open_port)
        log.info("event=service_exposed cluster=%s service=%s port=%d", cluster, service.name, port)
        return service

    async def unexpose(
        self, cluster_name: str, name: str, port: int, protocol: pb.TransportProtocol.ValueType
    ) -> pb.Service:
        """Close a load-balancer port `expose` opened; the agents drop its rules."""

        def close_port(cluster: str, service: pb.Service) -> pb.Service:
            kept = [lb for lb in service.load_balancers if not (lb.port == port and lb.protocol == protocol)]
            if len(kept) == len(service.load_balancers):
                exposed = ", ".join(port_text(lb.port, lb.protocol) for lb in service.load_balancers)
                raise NotFound(
                    f"service {service.name} is not exposed on port {port_text(port, protocol)} "
                    f"(exposed on: {exposed or 'no ports'})"
                )
            del service.load_balancers[:]
            service.load_balancers.extend(kept)
            service.updated_at.CopyFrom(now())
            return service

        cluster, service = await self.change(cluster_name, name, close_port)
        log.info("event=service_unexposed cluster=%s service=%s port=%d", cluster, service.name, port)
        return service

    def _check_service_quota(self, cluster: str) -> None:
        count = sum(1 for s in self._cache.services() if s.value.cluster == cluster)
        self._quotas.check(
            f"the number of services in cluster {cluster}",
            count,
            self._quotas.services_per_cluster,
            "--max-services-per-cluster",
        )

    def _check_not_a_host_port(self, port: int, protocol: pb.TransportProtocol.ValueType) -> None:
        """A load-balancer rule would take the port from a task that publishes it on its host."""
        for task in self._cache.tasks():
            if task.value.last_status == pb.STOPPED:
                continue
            for binding in task.value.network_bindings:
                if binding.host_port == port and binding.protocol == protocol:
                    raise FailedPrecondition(
                        f"port {port_text(port, protocol)} is a host port of task {task.value.id[:12]}; "
                        "choose another port"
                    )
            self._check_taskdef_host_ports(port, protocol, task.value.task_definition, "task", task.value.id)
        for service in self._cache.services():
            if service.value.status == pb.SERVICE_ACTIVE:
                self._check_taskdef_host_ports(
                    port, protocol, service.value.task_definition, "service", service.value.name
                )

    def _check_taskdef_host_ports(
        self, port: int, protocol: pb.TransportProtocol.ValueType, ref: str, kind: str, owner: str
    ) -> None:
        family, _, revision = ref.partition(":")
        td = self._cache.taskdef(family, int(revision)) if revision.isdecimal() else None
        if td is None:
            return
        for container in td.value.container_definitions:
            for mapping in container.port_mappings:
                if mapping.host_port == port and mapping.protocol == protocol:
                    shown = owner[:12] if kind == "task" else owner
                    raise FailedPrecondition(
                        f"port {port_text(port, protocol)} is a fixed host port (hostPort) of {ref}, "
                        f"used by {kind} {shown}; choose another port"
                    )

    async def endpoints(self, cluster_name: str, name: str) -> tuple[list[pb.Endpoint], dict[str, str]]:
        """The endpoints serving the service, and why each other live task is not one."""
        cluster, service, _ = await self.existing(cluster_name, name)
        tasks = [t.value for t in self._cache.tasks_of_service(cluster, service.name)]
        nodes = {n.value.id: n.value for n in self._cache.nodes()}
        found = endpoints(service, tasks, nodes)
        return found, not_ready(tasks, nodes, found)
