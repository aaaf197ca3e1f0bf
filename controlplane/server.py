"""Assembles one control-plane replica: store, cache, API servers, election."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc

from berth.files import private_dir
from berth.grpc_options import SERVER_OPTIONS
from berth.v1 import agent_pb2_grpc, operator_pb2_grpc
from controlplane.api.agents import AgentService
from controlplane.api.operator import OperatorService
from controlplane.cache import ClusterCache
from controlplane.config import ControlPlaneSettings
from controlplane.controllers.housekeeping import Housekeeper
from controlplane.controllers.loop import ControllerLoop
from controlplane.controllers.nodes import NodeMonitor
from controlplane.controllers.scheduling import SchedulingController
from controlplane.controllers.services import ServiceController
from controlplane.events import EventLog
from controlplane.leader import LeaderElection
from controlplane.limits import Limits, TokenBucket, port_policy
from controlplane.liveness import NodeLeases
from controlplane.operations import Operations
from controlplane.operations.clusters import ensure_default_cluster
from controlplane.registry import AgentRegistry
from controlplane.status import StatusWriter
from controlplane.store import Store
from controlplane.store.embedded import EmbeddedEtcd

log = logging.getLogger(__name__)


class ControlPlane:
    def __init__(self, settings: ControlPlaneSettings) -> None:
        self.settings = settings
        self._etcd: EmbeddedEtcd | None = None
        self._store: Store | None = None
        self._cache: ClusterCache | None = None
        self._writer: StatusWriter | None = None
        self._leases: NodeLeases | None = None
        self._server: grpc.aio.Server | None = None
        self._election: LeaderElection | None = None
        self._election_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        settings = self.settings
        private_dir(settings.data_dir)
        endpoints = settings.etcd_endpoints
        if not endpoints:
            self._etcd = EmbeddedEtcd(settings.data_dir)
            await self._etcd.start()
            endpoints = [self._etcd.endpoint]
        store = self._store = Store(endpoints, prefix=settings.key_prefix)
        await store.connect()
        await ensure_default_cluster(store)
        cache = self._cache = ClusterCache(store)
        await cache.start()
        agents = AgentRegistry()
        events = EventLog(store)
        writer = self._writer = StatusWriter(store, cache)
        writer.start()
        leases = self._leases = NodeLeases(store, cache, settings.node_grace)
        operations = Operations.build(
            store,
            cache,
            agents,
            settings.service_cidr,
            allowed_registries=settings.allowed_registries,
            limits=self._limits(),
        )

        server = self._server = grpc.aio.server(
            options=[
                ("grpc.keepalive_time_ms", 10_000),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
                *SERVER_OPTIONS,
            ]
        )
        operator_pb2_grpc.add_OperatorServicer_to_server(OperatorService(operations), server)
        agent_pb2_grpc.add_AgentServiceServicer_to_server(
            AgentService(
                cache,
                operations.nodes,
                agents,
                writer,
                leases,
                settings.node_grace / 3,
                settings.service_cidr,
                logs=operations.logs.router,
            ),
            server,
        )
        if server.add_insecure_port(settings.listen) == 0:
            raise OSError(f"cannot listen on {settings.listen}")
        await server.start()

        async def lead() -> None:
            # Built afresh on every election, so the node monitor's start-up
            # hold counts from the moment this replica became leader.
            scheduler = SchedulingController(store, cache, events, settings.scheduler_sample_size)
            controllers = ControllerLoop(
                cache,
                [
                    NodeMonitor(store, cache, settings.node_grace, startup_hold=settings.node_grace + 2),
                    ServiceController(store, cache, events, scheduler, settings.crash_backoff),
                    scheduler,
                    Housekeeper(
                        store,
                        cache,
                        settings.stopped_task_retention,
                        node_gc_after=settings.node_gc_after,
                        keep_failed_per_service=settings.keep_failed_tasks,
                    ),
                ],
            )
            await controllers.run()

        self._election = LeaderElection(store, settings.identity, settings.leader_ttl)
        self._election_task = asyncio.create_task(self._election.run(lead), name="election")
        log.info(
            "event=controlplane_started listen=%s etcd=%s embedded=%s",
            settings.listen,
            ",".join(endpoints),
            self._etcd is not None,
        )

    def _limits(self) -> Limits:
        settings = self.settings
        return Limits(
            quotas=settings.quotas,
            ports=port_policy(
                listen=settings.listen,
                metrics_listen=settings.metrics_listen,
                etcd_endpoints=settings.etcd_endpoints,
                embedded_etcd_ports=(
                    (self._etcd.client_port, self._etcd.peer_port) if self._etcd is not None else ()
                ),
                extra_reserved=settings.lb_reserved_ports,
                allowed_privileged=settings.lb_allowed_ports,
            ),
            registrations=TokenBucket(settings.register_rate, settings.register_burst),
        )

    async def stop(self) -> None:
        log.info("event=controlplane_stopping")
        if self._server is not None:
            await self._server.stop(grace=1)
        if self._election_task is not None:
            self._election_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._election_task
        if self._election is not None:
            await self._election.resign()
        if self._writer is not None:
            await self._writer.stop()
        if self._leases is not None:
            await self._leases.close()
        if self._cache is not None:
            await self._cache.stop()
        if self._store is not None:
            await self._store.close()
        if self._etcd is not None:
            await self._etcd.stop()
        log.info("event=controlplane_stopped")
