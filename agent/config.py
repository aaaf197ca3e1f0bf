"""Agent settings, read once from the command line and passed down."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from agent.runtime.docker_spec import DEFAULT_PIDS_LIMIT


@dataclass(frozen=True)
class AgentSettings:
    server: str
    data_dir: Path
    name: str
    address: str
    cpu_units: int
    memory_mib: int
    docker_url: str
    attributes: dict[str, str] = field(default_factory=dict)
    # A safety net under Docker's event stream, not the way exits are found.
    resync_interval: float = 30.0
    docker_concurrency: int = 8
    # Program service VIPs (nftables or iptables) and serve DNS on this host.
    service_network: bool = True
    # Backend for service VIPs: auto (nftables where nft works, else iptables), nftables, iptables.
    netfilter: str = "auto"
    dns_port: int = 53
    # HOST[:PORT] for names that are not Berth's; None: the host's resolver.
    dns_upstream: str | None = None
    # Processes per container (no-fork-bomb guard); 0: the engine's default (unlimited).
    pids_limit: int = DEFAULT_PIDS_LIMIT
    # Where tasks' environmentFiles (arn:aws:s3:::BUCKET/KEY) are read, as DIR/BUCKET/KEY; None: nowhere.
    environment_files_dir: Path | None = None
    # Networks (CIDRs) whose clients the DNS also answers, besides loopback, the
    # host's own addresses and the engine's container networks.
    dns_allow: tuple[str, ...] = ()
    dns_workers: int = 16
    dns_queue: int = 256
    dns_tcp_timeout: float = 3.0
    dns_forward_timeout: float = 2.0
    # Joining (only when the data directory holds no credentials yet).
    join_token: str | None = None
    ca_hash: str | None = None
    # The control plane's join listener, HOST:PORT; default: --server's host, the next port.
    join_server: str | None = None
    # The node's AWS region, for EFS volumes (--aws-region, else AWS_REGION); "": none.
    aws_region: str = ""
    # Where containers push custom metrics (agent/metric_endpoint.py): HOST:PORT or
    # bridge:PORT; None: nowhere.
    metrics_push_listen: str | None = None
    # Seconds between samples of the tasks' CPU and memory (agent/usage.py).
    usage_interval: float = 5.0
    # The cluster this node joins (berth-agent --cluster); it must exist.
    cluster: str = "default"
