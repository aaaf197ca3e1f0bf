"""Each node's desired state, projected from the cache (what its agent is sent).

A node's desired state is every task placed on it that is not STOPPED, with
its task definition, plus the route table (every service with ports and a
VIP, and its endpoints), which is the same on every node. Every change on a
node sends the node a complete snapshot again; in a big cluster that is
many snapshots a second, so each task's assignment is built once per
version of the task (and of its task definition), and each service's route
once per version of the service, its tasks and the nodes.

Secrets reach only the node that runs the task: the values a task's
containers name are resolved here, while building that node's snapshot, and
only for tasks meant to run; an assignment's version includes the revisions
of those secrets' records, so a put or a delete rebuilds it. A secret that
cannot be had leaves the values out and says why (`secrets_error`); the agent
then stops the task as TASK_FAILED_TO_START with that reason.
"""

from __future__ import annotations

from berth.names import parse_task_definition_ref
from berth.taskdef_lifecycle import restart_total
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb
from controlplane.cache import ClusterCache
from controlplane.endpoints import route
from controlplane.operations.secrets import PULL_FAILED, SecretUnavailable, SecretValues, names_any


class DesiredStates:
    """Builds each node's desired state from the cache, reusing unchanged assignments.

    Every change on a node sends the node a complete snapshot again; in a
    big cluster that is many snapshots a second, so each task's assignment
    is built once per version of the task (and of its task definition).
    """

    def __init__(self, cache: ClusterCache, secrets: SecretValues | None = None) -> None:
        self._cache = cache
        self._secrets = secrets  # None: no secret can be resolved (tasks naming one fail to start)
        self._assignments: dict[str, tuple[object, agent_pb.TaskAssignment]] = {}
        self._routes: dict[tuple[str, str], tuple[object, agent_pb.ServiceRoute]] = {}

    def routes(self) -> tuple[tuple[object, ...], list[agent_pb.ServiceRoute]]:
        """The route table (services with ports), rebuilt per service only when it changed."""
        nodes_version = self._cache.nodes_version()
        nodes: dict[str, pb.Node] | None = None
        versions: list[object] = []
        table: list[agent_pb.ServiceRoute] = []
        live = set()
        for versioned in sorted(self._cache.services(), key=lambda v: v.key):
            service = versioned.value
            if not service.ports or not service.vip:
                continue
            key = (service.cluster, service.name)
            live.add(key)
            version = (versioned.mod_revision, self._cache.service_tasks_version(*key), nodes_version)
            cached = self._routes.get(key)
            if cached is None or cached[0] != version:
                if nodes is None:
                    nodes = {n.value.id: n.value for n in self._cache.nodes()}
                tasks = [t.value for t in self._cache.tasks_of_service(*key)]
                cached = self._routes[key] = (version, route(service, tasks, nodes))
            versions.append((key, version))
            table.append(cached[1])
        for gone in set(self._routes) - live:
            del self._routes[gone]
        return tuple(versions), table

    def build(self, node_id: str) -> tuple[object, agent_pb.DesiredState]:
        """The node's snapshot, and a fingerprint that changes whenever its content does."""
        entries = []
        for versioned in self._cache.tasks_on_node(node_id):
            task = versioned.value
            if task.last_status == pb.STOPPED:
                # Absent from the snapshot: the agent removes its containers.
                self._assignments.pop(task.id, None)
                continue
            family, revision = parse_task_definition_ref(task.task_definition)
            td = self._cache.taskdef(family, revision or 0)
            if td is None:
                continue
            starting = task.desired_status == pb.DESIRED_RUNNING
            secrets = starting and names_any(td.value)
            secret_revisions = self._secrets.revisions(td.value) if secrets and self._secrets else ()
            version = (versioned.mod_revision, td.mod_revision, secret_revisions)
            cached = self._assignments.get(task.id)
            if cached is None or cached[0] != version:
                assignment = agent_pb.TaskAssignment(
                    task_id=task.id,
                    desired_status=task.desired_status,
                    last_status=task.last_status,
                    task_definition=td.value,
                    cluster=task.cluster,
                    service=task.service,
                    stop_code=task.stop_code,
                    stopped_reason=task.stopped_reason,
                    health_status=task.health_status,
                    restarts=restart_total(task.containers),
                )
                if secrets:
                    self._add_secrets(assignment, td.value)
                cached = self._assignments[task.id] = (version, assignment)
            entries.append((task.id, *version, cached[1]))
        entries.sort(key=lambda entry: entry[0])
        route_versions, table = self.routes()
        fingerprint = (tuple(entry[:4] for entry in entries), route_versions)
        state = agent_pb.DesiredState(
            revision=self._cache.revision, tasks=[entry[4] for entry in entries], routes=table
        )
        return fingerprint, state

    def _add_secrets(self, assignment: agent_pb.TaskAssignment, td: pb.TaskDefinition) -> None:
        if self._secrets is None:
            assignment.secrets_error = f"{PULL_FAILED}: this control plane holds no secrets"
            return
        try:
            assignment.secret_environment.extend(self._secrets.environment(td))
            assignment.environment_file_secrets.extend(self._secrets.environment_files(td))
        except SecretUnavailable as error:
            assignment.secrets_error = str(error)
