"""Assembles one control-plane replica: store, cache, API servers, election."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import secrets
from pathlib import Path

import grpc
from prometheus_client import REGISTRY

from berth import pki
from berth.clientconfig import ClientConfig
from berth.ecs.arns import Arns
from berth.errors import BerthError
from berth.files import private_dir, write_private
from berth.grpc_options import SERVER_OPTIONS
from berth.looplag import LoopLagMonitor
from berth.v1 import agent_pb2_grpc, operator_pb2_grpc
from berth.v1 import resources_pb2 as pb
from controlplane import tls
from controlplane.api.access import Access, AuditLog
from controlplane.api.agents import AgentService
from controlplane.api.join import JoinService
from controlplane.api.operator import OperatorService
from controlplane.autoscaling import MetricSource, NoMetrics
from controlplane.aws_profile import ProfileError, write_aws_profile
from controlplane.cache import ClusterCache
from controlplane.config import ControlPlaneSettings
from controlplane.controllers.autoscaler import Autoscaler
from controlplane.controllers.housekeeping import Housekeeper
from controlplane.controllers.loop import ControllerLoop
from controlplane.controllers.nodes import NodeMonitor
from controlplane.controllers.scheduling import SchedulingController
from controlplane.controllers.services import ServiceController
from controlplane.custom_metrics import CustomMetrics
from controlplane.ecs.backend import Backend
from controlplane.ecs.server import EcsApi
from controlplane.events import EventLog
from controlplane.keepalive import ThreadedKeepAlive
from controlplane.leader import LeaderElection
from controlplane.limits import Limits, TokenBucket, port_policy
from controlplane.liveness import NodeLeases, heartbeat_interval
from controlplane.metric_sources import ServiceMetrics, UsageMetrics
from controlplane.metrics import LOOP_LAG, LOOP_LAG_MAX
from controlplane.operations import Operations
from controlplane.operations.access_keys import AccessKeys
from controlplane.operations.clusters import ensure_default_cluster
from controlplane.operations.membership import Membership, Users
from controlplane.operations.metrics import Metrics
from controlplane.operations.secrets import check_master_key
from controlplane.registry import AgentRegistry
from controlplane.rightsizing_view import RightsizingView
from controlplane.sealing import load_or_create_master_key
from controlplane.status import StatusWriter
from controlplane.store import Store
from controlplane.store.embedded import EmbeddedEtcd
from controlplane.usage import UsageWindow
from controlplane.usage_metrics import UsageCollector
from controlplane.usage_view import UsageView
from controlplane.validation.host_paths import HostPathPolicy
from controlplane.validation.privileges import PrivilegePolicy

log = logging.getLogger(__name__)

# The profile the quick start's `aws --profile berth ecs ...` uses.
AWS_PROFILE = "berth"


class ControlPlane:
    def __init__(self, settings: ControlPlaneSettings) -> None:
        self.settings = settings
        self._etcd: EmbeddedEtcd | None = None
        self._store: Store | None = None
        self._cache: ClusterCache | None = None
        self._writer: StatusWriter | None = None
        self._leases: NodeLeases | None = None
        self._server: grpc.aio.Server | None = None
        self._join_server: grpc.aio.Server | None = None
        self._ecs: EcsApi | None = None
        self._election: LeaderElection | None = None
        self._election_task: asyncio.Task[None] | None = None
        # What the autoscaler observes (controlplane/autoscaling.py).
        self.metric_source: MetricSource = NoMetrics()
        self._usage_collector: UsageCollector | None = None
        self.loop_lag = LoopLagMonitor(
            observe=LOOP_LAG.observe, on_worst=LOOP_LAG_MAX.set, name="controlplane"
        )
        self._loop_lag_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        settings = self.settings
        self._loop_lag_task = asyncio.create_task(self.loop_lag.run(), name="loop-lag")
        private_dir(settings.data_dir)
        endpoints = settings.etcd_endpoints
        etcd_tls = settings.etcd_tls
        if not endpoints:
            self._etcd = EmbeddedEtcd(settings.data_dir, settings.ca_directory)
            await self._etcd.start()
            endpoints, etcd_tls = [self._etcd.endpoint], self._etcd.client_tls
        ca, _ = tls.load_or_create_ca(settings.ca_directory, secrets.token_hex(4))
        master_key = load_or_create_master_key(settings.ca_directory)
        lifetime = datetime.timedelta(seconds=settings.certificate_lifetime)
        store = self._store = Store(endpoints, prefix=settings.key_prefix, tls=etcd_tls)
        await store.connect()
        await ensure_default_cluster(store)
        await check_master_key(store, master_key)
        cache = self._cache = ClusterCache(store)
        await cache.start()
        agents = AgentRegistry()
        events = EventLog(store)
        writer = self._writer = StatusWriter(store, cache)
        writer.start()

        def keep_alive_connection() -> Store:
            return Store(endpoints, prefix=settings.key_prefix, tls=etcd_tls)

        leases = self._leases = NodeLeases(
            store,
            cache,
            settings.node_grace,
            restart_grace=settings.agent_restart_grace,
            # Off the event loop: placement load must not starve the nodes' keep-alives.
            keep_alive_stream=lambda: ThreadedKeepAlive(keep_alive_connection),
        )
        operations = Operations.build(
            store,
            cache,
            agents,
            settings.service_cidr,
            allowed_registries=settings.allowed_registries,
            limits=self._limits(),
            privileges=PrivilegePolicy(settings.allow_privileged, settings.allow_devices),
            host_paths=HostPathPolicy(
                settings.allowed_host_paths, settings.allowed_volume_drivers, settings.allow_network_volumes
            ),
            master_key=master_key,
        )

        membership = Membership(store, cache, ca, lifetime)
        users = Users(store, ca, datetime.timedelta(days=365))
        await self._write_admin_config(ca, users, operations.access_keys)
        audit = AuditLog(settings.data_dir / "audit.log")
        access = Access(cache, audit)
        # In memory, per replica: custom metrics pushed through the API and the agents'
        # streams, and the agents' usage reports; the auto-scaler observes both.
        custom_metrics = CustomMetrics()
        metrics = Metrics(cache, custom_metrics)
        usage = UsageWindow(lambda task_id: found.value if (found := cache.task(task_id)) else None)
        self._usage_collector = UsageCollector(agents, usage)
        REGISTRY.register(self._usage_collector)
        self.metric_source = ServiceMetrics(custom_metrics, UsageMetrics(usage))
        operator = OperatorService(
            operations,
            access,
            membership,
            users,
            metrics,
            UsageView(cache, agents, usage),
            RightsizingView(cache, usage),
            Arns(settings.ecs_region, settings.ecs_account),
        )
        operator.advertise_join(settings.join_address)

        server = self._server = grpc.aio.server(
            options=[
                ("grpc.keepalive_time_ms", 10_000),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
                *SERVER_OPTIONS,
            ]
        )
        operator_pb2_grpc.add_OperatorServicer_to_server(operator, server)
        agent_pb2_grpc.add_AgentServiceServicer_to_server(
            AgentService(
                cache,
                operations.nodes,
                agents,
                writer,
                leases,
                heartbeat_interval(settings.node_grace),
                settings.service_cidr,
                membership,
                logs=operations.logs.router,
                secret_values=operations.secret_values,
                execs=operations.execs.router,
                metrics=metrics,
                usage=usage,
            ),
            server,
        )
        certificate = tls.ServerCertificate(ca, lifetime, tls.listen_names(settings.listen))
        if server.add_secure_port(settings.listen, certificate.credentials()) == 0:
            raise OSError(f"cannot listen on {settings.listen}")
        await server.start()
        join = self._join_server = grpc.aio.server(options=SERVER_OPTIONS)
        agent_pb2_grpc.add_JoinServiceServicer_to_server(JoinService(membership), join)
        if join.add_secure_port(settings.join_address, tls.join_credentials(ca)) == 0:
            raise OSError(f"cannot listen on {settings.join_address} (--join-listen)")
        await join.start()
        if settings.ecs_address:
            self._ecs = EcsApi(
                Backend(operations, cache, Arns(settings.ecs_region, settings.ecs_account)),
                operations.access_keys.lookup,
                audit,
                None if settings.ecs_insecure_http else certificate,
                settings.data_dir / "ecs-tls",
            )
            await self._ecs.start(settings.ecs_address)

        async def lead() -> None:
            # Built afresh on every election, so the node monitor's start-up
            # hold counts from the moment this replica became leader.
            scheduler = SchedulingController(store, cache, events, settings.scheduler_sample_size)
            controllers = ControllerLoop(
                cache,
                [
                    NodeMonitor(
                        store,
                        cache,
                        settings.node_grace,
                        startup_hold=settings.node_grace + 2,
                        mass_failure_share=settings.mass_failure_share,
                    ),
                    ServiceController(store, cache, events, scheduler, settings.crash_backoff),
                    scheduler,
                    Autoscaler(store, cache, self.metric_source),
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

        self._election = LeaderElection(
            store,
            settings.identity,
            settings.leader_ttl,
            keep_alive_stream=lambda: ThreadedKeepAlive(keep_alive_connection, every_reply=True, streams=1),
        )
        self._election_task = asyncio.create_task(self._election.run(lead), name="election")
        log.info(
            "event=controlplane_started listen=%s etcd=%s embedded=%s",
            settings.listen,
            ",".join(endpoints),
            self._etcd is not None,
        )

    async def _write_admin_config(self, ca: pki.KeyPair, users: Users, access_keys: AccessKeys) -> None:
        """The administrator's credentials, so the CLI works at once (as k3s writes its kubeconfig),
        and with them the AWS profile `berth` for the ECS-compatible API (`_write_aws_profile`).

        Written when the file is missing, or holds another cluster's CA (kept as `.old`)."""
        path = self.settings.admin_config
        if path is None:
            return
        if path.exists():
            try:
                if ClientConfig.load(path).ca.encode() == ca.certificate:
                    return
            except BerthError:
                pass
            path.replace(path.with_name(path.name + ".old"))
        bundle = await users.issue_with_key("admin", "admin", "controlplane")
        tls.write_client_config(path, self.settings.advertised, ca, "admin", bundle)
        await self._write_aws_profile(ca, path, access_keys)

    async def _write_aws_profile(self, ca: pki.KeyPair, admin_config: Path, access_keys: AccessKeys) -> None:
        """A new access key for admin, as the AWS profile `berth`, with the cluster CA (next to the
        admin config) as its CA bundle. A failure is one error line: the cluster runs without it."""
        settings = self.settings
        directory = settings.aws_profile_dir
        if directory is None:
            return
        port = settings.ecs_address.rpartition(":")[2]
        if not settings.ecs_address or port == "0":
            log.info("event=aws_profile_skipped reason=ecs_api_off_or_on_an_ephemeral_port")
            return
        endpoint = f"https://{settings.advertised.rpartition(':')[0]}:{port}"
        ca_bundle = admin_config.with_name(admin_config.name + "-ca.pem")
        key: pb.AccessKey | None = None
        try:
            write_private(ca_bundle, ca.certificate)
            key, secret = await access_keys.create("admin", "controlplane")
            write_aws_profile(
                directory, AWS_PROFILE, endpoint, settings.ecs_region, key.id, secret, ca_bundle
            )
        except (BerthError, ProfileError, OSError) as error:
            if key is not None:  # written nowhere: it would only use up one of admin's two keys
                with contextlib.suppress(BerthError):
                    await access_keys.delete(key.id)
            log.error(
                "event=aws_profile_not_written dir=%s profile=%s error=%r", directory, AWS_PROFILE, str(error)
            )
            return
        log.info(
            "event=aws_profile_written dir=%s profile=%s endpoint=%s key=%s",
            directory,
            AWS_PROFILE,
            endpoint,
            key.id,
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
        if self._ecs is not None:
            await self._ecs.stop()
        if self._join_server is not None:
            await self._join_server.stop(grace=1)
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
        if self._usage_collector is not None:
            REGISTRY.unregister(self._usage_collector)
            self._usage_collector = None
        if self._loop_lag_task is not None:
            self._loop_lag_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_lag_task
            self.loop_lag.summary()
        log.info("event=controlplane_stopped")
