"""Facts about this host: its data directory, capacity and usage from psutil."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import psutil

from berth.clock import now
from berth.files import private_dir, tighten
from berth.v1 import resources_pb2 as pb


def prepare_data_dir(data_dir: Path) -> None:
    """Create the data directory 0700 and tighten what an older agent left there."""
    private_dir(data_dir)
    tighten(data_dir / "node-id")


def load_node_id(data_dir: Path) -> str:
    """The node id an agent before certificates kept (its certificate names the node now)."""
    path = data_dir / "node-id"
    try:
        return path.read_text(errors="replace").strip()[:128] if path.exists() else ""
    except OSError:
        return ""


def default_name() -> str:
    label = re.sub(r"[^a-z0-9-]", "-", socket.gethostname().lower()).strip("-")[:63]
    return label or "node"


def default_route_interface(route_table: Path = Path("/proc/net/route")) -> str | None:
    """The interface holding the IPv4 default route (lowest metric), from /proc/net/route."""
    best: tuple[int, str] | None = None
    lines = route_table.read_text().splitlines()[1:] if route_table.exists() else []
    for line in lines:
        fields = line.split()
        if len(fields) < 8 or fields[1] != "00000000" or fields[7] != "00000000":
            continue
        flags, metric = int(fields[3], 16), int(fields[6])
        if flags & 0x1 and (best is None or metric < best[0]):  # RTF_UP
            best = (metric, fields[0])
    return best[1] if best else None


def _ipv4_of(interface: str | None) -> str | None:
    if interface is None:
        return None
    for address in psutil.net_if_addrs().get(interface, []):
        if address.family == socket.AF_INET and not address.address.startswith("127."):
            return str(address.address)
    return None


def default_address(route_table: Path = Path("/proc/net/route")) -> str:
    """The address other hosts, and this host's containers, reach this one at.

    The IPv4 address of the interface holding the default route; without a
    default route, docker0's address (containers on the default bridge reach
    it); else any non-loopback IPv4 address; loopback only as a last resort
    (containers cannot reach the host's loopback: VIPs and DNS then fail).
    """
    for interface in (default_route_interface(route_table), "docker0"):
        address = _ipv4_of(interface)
        if address is not None:
            return address
    for addresses in psutil.net_if_addrs().values():
        for candidate in addresses:
            if candidate.family == socket.AF_INET and not candidate.address.startswith("127."):
                return str(candidate.address)
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


def own_addresses() -> list[str]:
    """Every IPv4 and IPv6 address of this host's interfaces (scope suffixes dropped)."""
    return [
        str(address.address).split("%", 1)[0]
        for addresses in psutil.net_if_addrs().values()
        for address in addresses
        if address.family in (socket.AF_INET, socket.AF_INET6)
    ]
