"""Control-plane settings, read once from the command line and passed down."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ControlPlaneSettings:
    listen: str
    data_dir: Path
    # Empty: run the embedded etcd in data_dir.
    etcd_endpoints: list[str] = field(default_factory=list)
    key_prefix: str = "/berth/"
    leader_ttl: int = 5
    # How long STOPPED tasks stay listed (ECS keeps them about an hour).
    stopped_task_retention: float = 3600.0
    # Nodes each task samples before a full scan; 0 = always scan all.
    scheduler_sample_size: int = 0
    # Seconds without heartbeats before a node is DOWN and its tasks replaced.
    node_grace: float = 3.0
    # Virtual IPs of services come from here; every agent routes it locally.
    service_cidr: str = "10.96.0.0/16"
    metrics_listen: str | None = None
    # Registries task definitions' images may come from (lower case); empty: any.
    allowed_registries: tuple[str, ...] = ()

    @property
    def identity(self) -> str:
        """Stable across restarts of the same replica, unique among replicas."""
        return f"{self.listen}@{self.data_dir.resolve()}"
