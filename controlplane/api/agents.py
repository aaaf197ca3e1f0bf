"""The agent API (`berth.v1.AgentService`): registration and the per-host stream.

Down the stream goes the full desired state of the host whenever it changes
(every message is a complete snapshot, so a reconnect needs no replay); up
come status reports and heartbeats. Reports are folded into etcd in batches
by `StatusWriter`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator

import grpc

from berth.clock import now
from berth.errors import InvalidArgument, NotFound, Unavailable
from berth.names import check_dns_label, parse_task_definition_ref
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import agent_pb2_grpc
from berth.v1 import resources_pb2 as pb
from controlplane import lifecycle
from controlplane.api.errors import Context, grpc_errors
from controlplane.cache import ClusterCache
from controlplane.endpoints import route
from controlplane.liveness import NodeLeases
from controlplane.metrics import AGENTS_CONNECTED, STATUS_REPORTS
from controlplane.registry import AgentRegistry, AgentSession
from controlplane.store import Condition, Put, Store, keys

log = logging.getLogger(__name__)

STATUS_BATCH = 100
# Seconds to let changes to one node accumulate before sending its snapshot.
COALESCE = 0.03


class DesiredStates:
    """Builds each node's desired state from the cache, reusing unchanged assignments.

    Every change on a node sends the node a complete snapshot again; in a
    big cluster that is many snapshots a second, so each task's assignment
    is built once per version of the task (and of its task definition).
    """

    def __init__(self, cache: ClusterCache) -> None:
        self._cache = cache
        self._assignments: dict[str, tuple[tuple[int, int], agent_pb.TaskAssignment]] = {}
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
            version = (versioned.mod_revision, td.mod_revision)
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
                )
                cached = self._assignments[task.id] = (version, assignment)
            entries.append((task.id, *version, cached[1]))
        entries.sort(key=lambda entry: entry[0])
        route_versions, table = self.routes()
        fingerprint = (tuple(entry[:3] for entry in entries), route_versions)
        state = agent_pb.DesiredState(
            revision=self._cache.revision, tasks=[entry[3] for entry in entries], routes=table
        )
        return fingerprint, state


class StatusWriter:
    """Folds agents' status reports into etcd, many per transaction."""

    def __init__(self, store: Store, cache: ClusterCache) -> None:
        self._store = store
        self._cache = cache
        self._queue: asyncio.Queue[tuple[str, agent_pb.TaskStatusReport]] = asyncio.Queue()
        self._runners: list[asyncio.Task[None]] = []

    def start(self, workers: int = 4) -> None:
        # Several writers, so one transaction's round trip does not hold up
        # the reports queued behind it.
        self._runners = [asyncio.create_task(self._run(), name=f"status-writer-{i}") for i in range(workers)]

    async def stop(self) -> None:
        for runner in self._runners:
            runner.cancel()
        await asyncio.gather(*self._runners, return_exceptions=True)

    def submit(self, node_id: str, report: agent_pb.TaskStatusReport) -> None:
        STATUS_REPORTS.inc()
        self._queue.put_nowait((node_id, report))

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty() and len(batch) < STATUS_BATCH:
                batch.append(self._queue.get_nowait())
            try:
                await self._write(batch)
            except Exception as error:  # the agent re-reports what etcd lacks
                log.warning("event=status_write_failed count=%d error=%r", len(batch), str(error))

    async def _write(self, batch: list[tuple[str, agent_pb.TaskStatusReport]]) -> None:
        writes, conditions, pending = [], [], []
        seen: set[str] = set()
        for node_id, report in batch:
            if report.task_id in seen:
                pending.append((node_id, report))  # two reports for one task: apply in order
                continue
            current = self._cache.task(report.task_id)
            if current is None:
                continue
            updated = lifecycle.apply_report(current.value, node_id, report)
            if updated is None:
                continue
            seen.add(report.task_id)
            writes.append(Put(current.key, updated))
            conditions.append(Condition(current.key, current.mod_revision))
        if writes and await self._store.commit(writes, conditions) is None:
            # The cache trailed etcd for some task: apply one by one on fresh reads.
            pending = batch
        for node_id, report in pending:
            await self._store.update(
                keys.task(report.task_id),
                pb.Task,
                lambda task, n=node_id, r=report: lifecycle.apply_report(task, n, r),  # type: ignore[misc]
            )
        for node_id, report in batch:
            log.info(
                "event=task_status task=%s node=%s status=%s",
                report.task_id,
                node_id,
                pb.TaskStatus.Name(report.last_status),
            )


class AgentService(agent_pb2_grpc.AgentServiceServicer):
    def __init__(
        self,
        store: Store,
        cache: ClusterCache,
        agents: AgentRegistry,
        writer: StatusWriter,
        leases: NodeLeases,
        heartbeat_interval: float,
        service_cidr: str,
    ) -> None:
        self._store = store
        self._cache = cache
        self._agents = agents
        self._writer = writer
        self._leases = leases
        self._heartbeat_interval = heartbeat_interval
        self._service_cidr = service_cidr
        self._desired = DesiredStates(cache)

    @grpc_errors
    async def Register(
        self, request: agent_pb.RegisterRequest, context: Context
    ) -> agent_pb.RegisterResponse:
        name = check_dns_label("node", request.name)
        if not request.address:
            raise InvalidArgument("the agent must report an address (--address)")
        node_id = request.node_id or f"node-{uuid.uuid4().hex[:12]}"
        key = keys.node(node_id)
        for _ in range(10):
            current = await self._store.get(key, pb.Node)
            node = pb.Node()
            if current is not None:
                node.CopyFrom(current.value)
            else:
                node.id = node_id
                node.registered_at.CopyFrom(now())
                node.status = pb.READY
            node.name = name
            node.address = request.address
            node.cpu_units = request.cpu_units
            node.memory_mib = request.memory_mib
            node.agent_version = request.agent_version
            node.attributes.clear()
            node.attributes.update(request.attributes)
            # A DOWN node turns READY with its first heartbeat (NodeLeases),
            # atomically with its liveness key.
            condition = Condition(key, current.mod_revision if current else 0)
            if await self._store.commit([Put(key, node)], [condition]) is not None:
                # Registering counts as a heartbeat: the node is alive from now on.
                await self._leases.beat(node_id)
                log.info(
                    "event=node_registered node=%s name=%s address=%s cpu=%d memory_mib=%d",
                    node_id,
                    name,
                    node.address,
                    node.cpu_units,
                    node.memory_mib,
                )
                return agent_pb.RegisterResponse(
                    node_id=node_id,
                    heartbeat_interval=self._heartbeat_interval,
                    service_cidr=self._service_cidr,
                )
        raise InvalidArgument(f"node {node_id} is changing too fast to register; try again")

    async def Connect(
        self, request_iterator: AsyncIterator[agent_pb.AgentMessage], context: Context
    ) -> AsyncIterator[agent_pb.ControlMessage]:
        first = await anext(aiter(request_iterator), None)
        if first is None or not first.HasField("hello"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be hello")
            return
        node_id = first.hello.node_id
        if self._cache.node(node_id) is None and await self._store.get(keys.node(node_id), pb.Node) is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(NotFound(f"node {node_id} is not registered")))
            return
        await self._leases.beat(node_id)
        session = self._agents.connected(node_id)
        AGENTS_CONNECTED.set(len(self._agents.connected_ids()))
        log.info("event=agent_connected node=%s peer=%s", node_id, context.peer())
        receiver = asyncio.create_task(self._receive(session, request_iterator), name=f"agent-recv-{node_id}")
        # One event per stream, set by the cache when the node's tasks change
        # and when the agent goes away: no task per wake-up (a thousand
        # streams wake often).
        wake = asyncio.Event()
        unsubscribe = self._cache.subscribe_node(node_id, wake.set)
        receiver.add_done_callback(lambda _: wake.set())
        try:
            last_sent: object = None
            while not receiver.done():
                wake.clear()
                fingerprint, state = self._desired.build(node_id)
                if fingerprint != last_sent:
                    yield agent_pb.ControlMessage(desired_state=state)
                    last_sent = fingerprint
                await wake.wait()
                # Coalesce a burst of changes into one snapshot.
                await asyncio.sleep(COALESCE)
        finally:
            unsubscribe()
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await receiver
            self._agents.disconnected(session)
            AGENTS_CONNECTED.set(len(self._agents.connected_ids()))
            if not self._agents.is_connected(node_id):
                self._leases.forget(node_id)
            log.info("event=agent_disconnected node=%s", node_id)

    async def _receive(self, session: AgentSession, messages: AsyncIterator[agent_pb.AgentMessage]) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            async for message in messages:
                body = message.WhichOneof("body")
                if body == "status":
                    self._writer.submit(session.node_id, message.status)
                elif body == "heartbeat":
                    metrics = message.heartbeat.metrics if message.heartbeat.HasField("metrics") else None
                    self._agents.record_heartbeat(session, metrics)
                    try:
                        await self._leases.beat(session.node_id)
                    except Unavailable as error:
                        log.warning(
                            "event=heartbeat_not_recorded node=%s error=%r", session.node_id, str(error)
                        )
