"""The cluster's operations, one implementation each, behind every front door.

The gRPC servicers in `controlplane/api/` translate requests into calls on
these and results back into responses; they hold no domain logic. Each
operation validates what it is given before it writes anything, and writes
in one transaction that compares revisions, so a bad or racing request
leaves the store as it was. Reads of single objects go to etcd; listings of
tasks and nodes come from the replica's cache, which trails etcd by
milliseconds; listings of clusters, services and task definitions scan etcd.
"""

from __future__ import annotations

from dataclasses import dataclass

from controlplane.cache import ClusterCache
from controlplane.execs import ExecRouter
from controlplane.limits import Limits
from controlplane.logs import LogRouter
from controlplane.operations.access_keys import AccessKeys
from controlplane.operations.clusters import Clusters
from controlplane.operations.execs import Execs
from controlplane.operations.logs import Logs
from controlplane.operations.nodes import Nodes
from controlplane.operations.scaling import ScalingPolicies
from controlplane.operations.secrets import Secrets, SecretValues
from controlplane.operations.services import Services
from controlplane.operations.tags import Tags
from controlplane.operations.taskdefs import TaskDefinitions
from controlplane.operations.tasks import Tasks
from controlplane.registry import AgentRegistry
from controlplane.sealing import MasterKey
from controlplane.store import StoreAPI
from controlplane.validation.host_paths import HostPathPolicy
from controlplane.validation.privileges import PrivilegePolicy
from controlplane.vips import VipAllocator


@dataclass(frozen=True)
class Operations:
    clusters: Clusters
    taskdefs: TaskDefinitions
    services: Services
    tasks: Tasks
    nodes: Nodes
    logs: Logs
    secrets: Secrets
    secret_values: SecretValues
    execs: Execs
    scaling: ScalingPolicies
    tags: Tags
    access_keys: AccessKeys

    @classmethod
    def build(
        cls,
        store: StoreAPI,
        cache: ClusterCache,
        agents: AgentRegistry,
        service_cidr: str,
        allowed_registries: tuple[str, ...] = (),
        limits: Limits | None = None,
        privileges: PrivilegePolicy | None = None,
        master_key: MasterKey | None = None,
        host_paths: HostPathPolicy | None = None,
    ) -> Operations:
        """master_key: seals secrets and access keys (None: a fresh one in memory, for unit tests)."""
        limits = limits or Limits()
        master_key = master_key or MasterKey.generate()
        clusters = Clusters(store, cache, limits.quotas)
        taskdefs = TaskDefinitions(store, limits.quotas, allowed_registries, privileges, host_paths)
        tasks = Tasks(store, cache, clusters, taskdefs)
        services = Services(
            store, cache, clusters, taskdefs, VipAllocator(store, service_cidr), limits.quotas, limits.ports
        )
        return cls(
            clusters=clusters,
            taskdefs=taskdefs,
            services=services,
            tasks=tasks,
            nodes=Nodes(store, cache, agents, limits.quotas, limits.registrations, clusters),
            logs=Logs(tasks, LogRouter(agents)),
            secrets=Secrets(store, master_key),
            secret_values=SecretValues(cache, master_key),
            execs=Execs(tasks, ExecRouter(agents)),
            scaling=ScalingPolicies(store, services, limits.quotas),
            tags=Tags(store),
            access_keys=AccessKeys(store, cache, master_key),
        )
