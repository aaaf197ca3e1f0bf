"""Control-plane settings, read once from the command line and passed down."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from controlplane.backoff import Policy as CrashBackoff
from controlplane.limits import Quotas
from controlplane.store.tls import EtcdTLS


def default_join_listen(listen: str) -> str:
    """The join listener next to the API: the same host, the next port."""
    host, _, port = listen.rpartition(":")
    return f"{host}:{int(port) + 1}" if port.isdigit() and int(port) else f"{host}:0"


def default_ecs_listen(listen: str) -> str:
    """The ECS-compatible API next to the join listener: the same host, port + 2."""
    host, _, port = listen.rpartition(":")
    return f"{host}:{int(port) + 2}" if port.isdigit() and int(port) else f"{host}:0"


@dataclass(frozen=True)
class ControlPlaneSettings:
    listen: str
    data_dir: Path
    # Empty: run the embedded etcd in data_dir.
    etcd_endpoints: list[str] = field(default_factory=list)
    # TLS to an external etcd: its CA, and this replica's client certificate and key.
    etcd_cacert: Path | None = None
    etcd_cert: Path | None = None
    etcd_key: Path | None = None
    key_prefix: str = "/berth/"
    leader_ttl: int = 5
    # Seconds STOPPED tasks (exit code, stop code, reason) are kept before the
    # housekeeper purges them; 3 days, so a failure found on Monday is still
    # explained (ECS keeps them about an hour).
    stopped_task_retention: float = 259200.0
    # Nodes each task samples before a full scan; 0 = always scan all.
    scheduler_sample_size: int = 0
    # Seconds without heartbeats before a node is DOWN and its tasks replaced. 10 s, as
    # Nomad's heartbeat grace: it rides out what real networks and hosts do for a few
    # seconds (a lost packet burst, an etcd leader election, a VM paused for migration, a
    # busy control plane) and still replaces a dead host's tasks within about 12 s.
    # Restarts do not need it (agents say goodbye: agent_restart_grace), nor do mass
    # outages (mass_failure_share); Kubernetes' 40 s is tuned for slower kubelet updates.
    node_grace: float = 10.0
    # Seconds an agent that said it is restarting (SIGTERM) may stay silent before its
    # node is judged (see controlplane.liveness.DEFAULT_RESTART_GRACE for why 60).
    agent_restart_grace: float = 60.0
    # Share of nodes silent within one grace above which the node monitor suspects
    # itself or the network and marks none DOWN (controllers/nodes.py).
    mass_failure_share: float = 0.33
    # Virtual IPs of services come from here; every agent routes it locally.
    service_cidr: str = "10.96.0.0/16"
    metrics_listen: str | None = None
    # Registries task definitions' images may come from (lower case); empty: any.
    allowed_registries: tuple[str, ...] = ()
    # Task definitions may ask for privileged, dockerSecurityOptions, extra
    # capabilities and real-time ulimits (--allow-privileged), or host devices
    # (--allow-devices); both off by default.
    allow_privileged: bool = False
    allow_devices: bool = False
    # Prefixes task definitions may mount host paths under (--allow-host-path); empty: none.
    allowed_host_paths: tuple[str, ...] = ()
    # Volume drivers allowed with any options (--allow-volume-driver), and the local
    # driver's NFS/CIFS (--allow-network-volumes); by default neither.
    allowed_volume_drivers: tuple[str, ...] = ()
    allow_network_volumes: bool = False
    # Ports below 1024 that `berth service expose` may use (none by default).
    lb_allowed_ports: list[int] = field(default_factory=list)
    # More host ports no service may be exposed on (agents' metrics port, ...).
    lb_reserved_ports: list[int] = field(default_factory=list)
    # Seconds a node stays DOWN before its record is removed; 0: never.
    node_gc_after: float = 86400.0
    # New nodes registered per second by one replica (token bucket); 0: no limit.
    register_rate: float = 50.0
    register_burst: int = 1000
    # Quotas (see controlplane.limits.Quotas).
    max_clusters: int = 1_000
    max_services_per_cluster: int = 10_000
    max_tasks_per_service: int = 10_000
    max_revisions_per_family: int = 1_000
    max_nodes: int = 5_000
    # Crash-loop backoff (controlplane/backoff.py): seconds before the second
    # attempt, doubling to the cap; a task up `crash_backoff_reset` ends a streak.
    crash_backoff_first: float = 5.0
    crash_backoff_max: float = 300.0
    crash_backoff_reset: float = 600.0
    # Failed stopped tasks kept per service; older ones are purged early.
    keep_failed_tasks: int = 10
    # The join listener (controlplane/tls.py); empty: --listen's port + 1.
    join_listen: str = ""
    # The cluster CA; None: data_dir / "pki".
    pki_dir: Path | None = None
    # Seconds the replica's and nodes' certificates live (renewed at two thirds).
    certificate_lifetime: float = 30 * 86400.0
    # The administrator's CLI config, written when missing; None: none.
    admin_config: Path | None = None
    # The address clients are told (configs, join instructions); empty: from listen.
    advertise: str = ""
    # The ECS-compatible API (controlplane/ecs): where it listens ("" = off; the default
    # is --listen's host with its port + 2), and the region and account its ARNs name.
    ecs_listen: str = ""
    ecs_region: str = "local"
    ecs_account: str = "000000000000"
    # Serve the ECS API as plain HTTP (--ecs-insecure-http): only behind a TLS proxy or on
    # loopback; by default it is HTTPS with the replica's API certificate.
    ecs_insecure_http: bool = False
    # Where the AWS profile `berth` (controlplane/aws_profile.py) is written with the admin
    # config at first start; None: nowhere (main.py defaults it to ~/.aws only when the admin
    # config goes to its home location, so a test's plane never touches the machine's ~/.aws).
    aws_profile_dir: Path | None = None

    @property
    def quotas(self) -> Quotas:
        return Quotas(
            clusters=self.max_clusters,
            services_per_cluster=self.max_services_per_cluster,
            tasks_per_service=self.max_tasks_per_service,
            revisions_per_family=self.max_revisions_per_family,
            nodes=self.max_nodes,
        )

    @property
    def crash_backoff(self) -> CrashBackoff:
        return CrashBackoff(self.crash_backoff_first, self.crash_backoff_max, self.crash_backoff_reset)

    @property
    def join_address(self) -> str:
        return self.join_listen or default_join_listen(self.listen)

    @property
    def ecs_address(self) -> str:
        """Where the ECS-compatible API listens; "" when it is off (main.py fills in the default)."""
        return self.ecs_listen

    @property
    def etcd_tls(self) -> EtcdTLS | None:
        """TLS to the external etcd when any of its files is given (or the endpoints are https)."""
        if not (self.etcd_cacert or self.etcd_cert or self.etcd_key):
            return None
        return EtcdTLS.from_files(self.etcd_cacert, self.etcd_cert, self.etcd_key)

    @property
    def ca_directory(self) -> Path:
        return self.pki_dir or self.data_dir / "pki"

    @property
    def advertised(self) -> str:
        """Where clients reach this replica: --advertise, else --listen with a wildcard made loopback."""
        if self.advertise:
            return self.advertise
        host, _, port = self.listen.rpartition(":")
        return f"{'127.0.0.1' if host in ('0.0.0.0', '', '[::]') else host}:{port}"

    @property
    def identity(self) -> str:
        """Stable across restarts of the same replica, unique among replicas."""
        return f"{self.listen}@{self.data_dir.resolve()}"
