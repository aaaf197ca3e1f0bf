"""Limits on what callers may create: quotas, the registration rate, load-balancer ports.

Each limit is a control-plane setting (`controlplane.config`) read once at
start-up and handed to the operations; every refusal says which limit was hit
and which `berth-controlplane` option raises it. Quotas are counted from the
replica's cache or a scan when an object is created, so creates racing on
several replicas may overshoot a quota by the number of racing creates; they
bound growth, they are not a reservation system.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from berth.errors import FailedPrecondition, InvalidArgument, ResourceExhausted

# Ports Berth or its dependencies always use on the hosts, whatever the settings.
WELL_KNOWN_RESERVED: dict[int, str] = {
    53: "the agents' DNS server for service names",
    2379: "etcd's standard client port",
    2380: "etcd's standard peer port",
}
PRIVILEGED_BELOW = 1024


@dataclass(frozen=True)
class Quotas:
    """How many objects of each kind may exist (defaults: `berth-controlplane --help`)."""

    clusters: int = 1_000
    services_per_cluster: int = 10_000
    tasks_per_service: int = 10_000
    revisions_per_family: int = 1_000
    nodes: int = 5_000

    def check(self, what: str, count: int, quota: int, option: str) -> None:
        """ResourceExhausted when `count` objects already exist and the quota is `quota`."""
        if count >= quota:
            raise ResourceExhausted(
                f"quota reached: {what} is limited to {quota}; "
                f"remove some or raise it with berth-controlplane {option}"
            )


def port_of(address: str) -> int | None:
    """The port of HOST:PORT or of a URL (http://HOST:PORT), if it has one."""
    text = address if "//" in address else f"//{address}"
    try:
        return urlsplit(text).port
    except ValueError:
        return None


@dataclass(frozen=True)
class PortPolicy:
    """Which host ports a service may be exposed on (`berth service expose`)."""

    # Port -> why Berth keeps it; never exposable.
    reserved: Mapping[int, str] = field(default_factory=lambda: dict(WELL_KNOWN_RESERVED))
    # Ports below 1024 an operator allowed with --lb-allowed-ports.
    allowed_privileged: frozenset[int] = frozenset()

    def check(self, port: int) -> None:
        if not 1 <= port <= 65535:
            raise InvalidArgument(f"port {port} is out of range: use 1-65535")
        why = self.reserved.get(port)
        if why is not None:
            raise FailedPrecondition(f"port {port} is reserved: it is {why}; choose another port")
        if port < PRIVILEGED_BELOW and port not in self.allowed_privileged:
            raise FailedPrecondition(
                f"port {port} is below {PRIVILEGED_BELOW} and not allowed for load balancers "
                "(it could take over a host service such as SSH); choose a port from 1024 up, "
                "or allow it with berth-controlplane --lb-allowed-ports"
            )


def port_policy(
    listen: str,
    metrics_listen: str | None,
    etcd_endpoints: Iterable[str],
    embedded_etcd_ports: Iterable[int],
    extra_reserved: Iterable[int],
    allowed_privileged: Iterable[int],
) -> PortPolicy:
    """The ports this control plane, its etcd and its agents use, as a policy."""
    reserved = dict(WELL_KNOWN_RESERVED)
    for port in extra_reserved:
        reserved[port] = "reserved by berth-controlplane --lb-reserved-ports"
    for endpoint in etcd_endpoints:
        if (etcd_port := port_of(endpoint)) is not None:
            reserved[etcd_port] = f"a port of the cluster's etcd ({endpoint})"
    for port in embedded_etcd_ports:
        reserved[port] = "a port of the control plane's embedded etcd"
    if metrics_listen and (metrics_port := port_of(metrics_listen)) is not None:
        reserved[metrics_port] = "the control plane's metrics port"
    if (api_port := port_of(listen)) is not None:
        reserved[api_port] = "the control plane's API port"
    return PortPolicy(reserved=reserved, allowed_privileged=frozenset(allowed_privileged))


def parse_ports(text: str, option: str) -> list[int]:
    """`80,443` -> [80, 443]; a clear error for anything else."""
    ports = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        if not item.isdecimal() or not 1 <= int(item) <= 65535:
            raise ValueError(f"{option}: {item!r} is not a port (1-65535)")
        ports.append(int(item))
    return ports


class TokenBucket:
    """A rate limit: `rate` actions a second on average, bursts of up to `burst`.

    One per replica, so N replicas admit N times the rate in total.
    """

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._burst = float(max(burst, 1))
        self._clock = clock
        self._tokens = self._burst
        self._last = clock()

    def try_take(self) -> bool:
        """Take one token if there is one; a rate of 0 or less means no limit."""
        if self._rate <= 0:
            return True
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


@dataclass(frozen=True)
class Limits:
    """Every limit the operations enforce, built once from the settings."""

    quotas: Quotas = field(default_factory=Quotas)
    ports: PortPolicy = field(default_factory=PortPolicy)
    # None: registrations are not rate limited.
    registrations: TokenBucket | None = None
