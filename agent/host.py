"""Facts about this host: identity on disk, capacity and usage from psutil."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import psutil

from berth.clock import now
from berth.v1 import resources_pb2 as pb


def load_node_id(data_dir: Path) -> str:
    path = data_dir / "node-id"
    return path.read_text().strip() if path.exists() else ""


def save_node_id(data_dir: Path, node_id: str) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    temporary = data_dir / "node-id.tmp"
    temporary.write_text(node_id + "\n")
    temporary.replace(data_dir / "node-id")


def default_name() -> str:
    label = re.sub(r"[^a-z0-9-]", "-", socket.gethostname().lower()).strip("-")[:63]
    return label or "node"


def default_address() -> str:
    """The first non-loopback IPv4 address, which other hosts can reach."""
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET and not address.address.startswith("127."):
                return str(address.address)
    return "127.0.0.1"


def cpu_units() -> int:
    return (psutil.cpu_count() or 1) * 1024


def memory_mib() -> int:
    return int(psutil.virtual_memory().total // (1024 * 1024))


def sample_metrics() -> pb.NodeMetrics:
    """Blocking (psutil): call from a worker thread."""
    memory = psutil.virtual_memory()
    return pb.NodeMetrics(
        cpu_percent=psutil.cpu_percent(interval=None),
        memory_used_bytes=memory.total - memory.available,
        memory_total_bytes=memory.total,
        sampled_at=now(),
    )
