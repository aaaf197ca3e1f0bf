"""Each node's desired state, projected from the cache (what its agent is sent).

A node's desired state is every task placed on it that is not STOPPED, with
its task definition, plus the route table (every service with ports and a
VIP, and its endpoints), which is the same on every node. It is projected
as versioned parts (`Projection`): a stream sends a node its first snapshot
whole and then only the parts whose content moved (`controlplane.
desired_stream`). Each task's assignment is built once per version of the
task (and of its task definition), and each service's route once per
version of the service, its tasks and the nodes; a rebuild that yields the
same message keeps its content generation, which is what streams compare.

Secrets reach only the node that runs the task: the values a task's
containers name are resolved here, while building that node's snapshot, and
only for tasks meant to run; an assignment's version includes the revisions
of those secrets' records, so a put or a delete rebuilds it. A secret that
cannot be had leaves the values out and says why (`secrets_error`); the agent
then stops the task as TASK_FAILED_TO_START with that reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from berth.deltas import RouteId, changes
from berth.names import parse_task_definition_ref
from berth.taskdef_lifecycle import restart_total
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb
from controlplane.cache import ClusterCache
from controlplane.endpoints import route
from controlplane.operations.secrets import PULL_FAILED, SecretUnavailable, SecretValues, names_any

# (key, content generation, message, encoded size): a generation changes whenever the content does.
TaskEntry = tuple[str, int, agent_pb.TaskAssignment, int]
RouteEntry = tuple[RouteId, int, agent_pb.ServiceRoute, int]


@dataclass(frozen=True)
class RouteTable:
    """The route table as of one cache revision (the same object for every node asking then)."""

    revision: int
    entries: list[RouteEntry]
    size: int  # encoded size of all routes, summed once


@dataclass(frozen=True)
class RouteChanges:
    """What changed from one route table to another: routes new or changed, keys gone."""

    routes: list[RouteEntry]
    removed: list[RouteId]


@dataclass(frozen=True)
class Projection:
    """One node's desired state as parts: (key, generation, message, size) per task, and the table.

    A generation changes whenever its message's content does, so what a stream
    sent is remembered as generations (`controlplane.desired_stream`); sizes
    are the messages' encoded sizes, to tell whether a delta beats a snapshot.
    """

    revision: int
    tasks: list[TaskEntry]
    table: RouteTable

    def snapshot(self) -> agent_pb.DesiredState:
        return agent_pb.DesiredState(
            revision=self.revision,
            tasks=[entry[2] for entry in self.tasks],
            routes=[entry[2] for entry in self.table.entries],
        )

    def fingerprint(self) -> object:
        """Changes whenever the snapshot's content does (the revision aside)."""
        return (
            tuple((key, version) for key, version, _, _ in self.tasks),
            tuple((key, version) for key, version, _, _ in self.table.entries),
        )

    def size(self) -> int:
        """The snapshot's encoded size, near enough (each entry's framing is a few bytes more)."""
        return sum(entry[3] for entry in self.tasks) + self.table.size


class DesiredStates:
    """Builds each node's desired state from the cache, reusing unchanged assignments.

    Every change on a node sends the node its changes (or a complete snapshot);
    in a big cluster that is many messages a second, so each task's assignment
    is built once per version of the task (and of its task definition), each
    route once per version of its service, and the route table's listing
    once per cache revision however many nodes ask.
    """

    def __init__(self, cache: ClusterCache, secrets: SecretValues | None = None) -> None:
        self._cache = cache
        self._secrets = secrets  # None: no secret can be resolved (tasks naming one fail to start)
        # Per task and per route: what it was built from, then (content generation, message,
        # size). A rebuild that yields the same message keeps its generation, and generations
        # are what streams compare: a task rewritten with nothing its agent is sent changed, a
        # node joining, a task changing in a way no endpoint shows (every route's inputs move
        # then) cost no agent anything.
        self._assignments: dict[str, tuple[object, int, agent_pb.TaskAssignment, int]] = {}
        self._routes: dict[RouteId, tuple[object, int, agent_pb.ServiceRoute, int]] = {}
        self._generation = 0
        # The route table as of the last cache revision asked for: every node asking then shares it.
        self._table: RouteTable | None = None
        # From older tables (by revision) to the current one: one comparison per older table
        # however many streams sent it.
        self._changes: dict[int, RouteChanges] = {}

    def routes(self) -> RouteTable:
        """The route table (services with ports and a VIP), each route rebuilt only when it changed."""
        revision = self._cache.revision
        if self._table is not None and self._table.revision == revision:
            return self._table
        nodes_version = self._cache.nodes_version()
        nodes: dict[str, pb.Node] | None = None
        entries: list[RouteEntry] = []
        live = set()
        for versioned in self._cache.services():
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
                built = route(service, tasks, nodes)
                if cached is not None and cached[2] == built:
                    cached = (version, *cached[1:])
                else:
                    self._generation += 1
                    cached = (version, self._generation, built, built.ByteSize())
                self._routes[key] = cached
            entries.append((key, *cached[1:]))
        for gone in set(self._routes) - live:
            del self._routes[gone]
        entries.sort(key=lambda entry: entry[0])  # canonical order (berth.deltas)
        self._table = RouteTable(revision, entries, sum(entry[3] for entry in entries))
        self._changes = {}
        return self._table

    def route_changes(self, old: RouteTable, new: RouteTable) -> RouteChanges:
        """The routes to send a stream that last sent `old` and now owes `new` (the current table)."""
        if old is new:
            return RouteChanges([], [])
        memo = self._changes if new is self._table else {}
        found = memo.get(old.revision)
        if found is None:
            sent = {key: version for key, version, _, _ in old.entries}
            routes, removed = changes(sent, ((entry[0], entry[1], entry) for entry in new.entries))
            found = memo[old.revision] = RouteChanges(routes, removed)
        return found

    def project(self, node_id: str) -> Projection:
        """The node's desired state, as versioned parts."""
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
                if cached is not None and cached[2] == assignment:
                    cached = (version, *cached[1:])
                else:
                    self._generation += 1
                    cached = (version, self._generation, assignment, assignment.ByteSize())
                self._assignments[task.id] = cached
            entries.append((task.id, *cached[1:]))
        entries.sort(key=lambda entry: entry[0])
        return Projection(self._cache.revision, entries, self.routes())

    def build(self, node_id: str) -> tuple[object, agent_pb.DesiredState]:
        """The node's full snapshot, and a fingerprint that changes whenever its content does."""
        projection = self.project(node_id)
        return projection.fingerprint(), projection.snapshot()

    def _add_secrets(self, assignment: agent_pb.TaskAssignment, td: pb.TaskDefinition) -> None:
        if self._secrets is None:
            assignment.secrets_error = f"{PULL_FAILED}: this control plane holds no secrets"
            return
        try:
            assignment.secret_environment.extend(self._secrets.environment(td))
            assignment.environment_file_secrets.extend(self._secrets.environment_files(td))
            assignment.log_secret_options.extend(self._secrets.log_options(td))
        except SecretUnavailable as error:
            # A task that will not start is sent no value at all, not those resolved before.
            for resolved in (
                assignment.secret_environment,
                assignment.environment_file_secrets,
                assignment.log_secret_options,
            ):
                del resolved[:]
            assignment.secrets_error = str(error)
