"""How a task assignment becomes Docker containers (pure): names, labels, limits, ports, DNS.

`container_specs` turns one assignment into one `ContainerSpec` per container
definition; `ContainerSpec.create_kwargs` is exactly what the driver hands to
the SDK's `containers.create(image, **kwargs)`. The labels written here are
what a restarted agent later adopts its containers by.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.runtime.driver import (
    DEFAULT_STOP_TIMEOUT,
    LABEL_CLUSTER,
    LABEL_CONTAINER,
    LABEL_ESSENTIAL,
    LABEL_HOST_PORTS,
    LABEL_MANAGED,
    LABEL_NODE,
    LABEL_SERVICE,
    LABEL_STOP_TIMEOUT,
    LABEL_TASK_DEFINITION,
    LABEL_TASK_ID,
)
from berth.names import protocol_name
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb

# Docker's minimum; ECS uses the same floor for cpu 0.
MIN_CPU_SHARES = 2
# Processes (threads) per container unless the agent is told otherwise: a fork
# bomb in one task must not exhaust the host's pid space.
DEFAULT_PIDS_LIMIT = 4096
# A process can never gain privileges it did not start with (setuid binaries,
# file capabilities): Berth runs no container that needs them.
SECURITY_OPTIONS = ("no-new-privileges:true",)
_NANOSECONDS = 1_000_000_000


def healthcheck(check: pb.HealthCheck) -> dict[str, Any]:
    """ECS's healthCheck as the SDK's `healthcheck` option (durations in nanoseconds)."""
    return {
        "test": list(check.command),
        "interval": check.interval * _NANOSECONDS,
        "timeout": check.timeout * _NANOSECONDS,
        "retries": check.retries,
        "start_period": check.start_period * _NANOSECONDS,
    }


def docker_network_mode(mode: pb.NetworkMode.ValueType) -> str:
    """Docker's network mode for ECS's: awsvpc runs as bridge (Berth gives a task no
    interface of its own); "" leaves the engine's default bridge."""
    if mode == pb.NETWORK_MODE_HOST:
        return "host"
    if mode == pb.NETWORK_MODE_NONE:
        return "none"
    return ""


def container_name(task_id: str, name: str) -> str:
    # Unique per task and container: Docker itself refuses a duplicate start.
    return f"berth-{task_id}-{name}"


@dataclass(frozen=True)
class ContainerSpec:
    """One container to create: what Docker needs, plus what the agent remembers of it."""

    image: str
    name: str  # Docker's container name
    definition_name: str  # the container's name in its task definition
    essential: bool
    stop_timeout: int
    labels: dict[str, str] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)
    # "PORT/PROTOCOL" -> host port, None for one Docker picks.
    ports: dict[str, int | None] = field(default_factory=dict)
    cpu_shares: int = MIN_CPU_SHARES
    command: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    memory_mib: int = 0  # hard limit, 0 = none
    memory_reservation_mib: int = 0  # soft limit, 0 = none
    dns: tuple[str, ...] = ()
    pids_limit: int = DEFAULT_PIDS_LIMIT  # 0 = the engine's default (unlimited)
    security_opt: tuple[str, ...] = SECURITY_OPTIONS
    # The SDK's healthcheck option; None: none of Berth's (the image's own HEALTHCHECK applies).
    healthcheck: dict[str, Any] | None = None
    # Docker's network mode: "" (the engine's bridge), "host" or "none".
    network_mode: str = ""

    def create_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the SDK's `containers.create(image, ...)`; unset options are left out."""
        options: dict[str, Any] = {
            "name": self.name,
            "labels": dict(self.labels),
            "environment": dict(self.environment),
            "ports": dict(self.ports),
            "cpu_shares": self.cpu_shares,
            "detach": True,
            "security_opt": list(self.security_opt),
        }
        if self.network_mode:
            options["network_mode"] = self.network_mode
        if self.pids_limit > 0:
            options["pids_limit"] = self.pids_limit
        if self.dns:
            options["dns"] = list(self.dns)
        if self.command:
            options["command"] = list(self.command)
        if self.entrypoint:
            options["entrypoint"] = list(self.entrypoint)
        if self.memory_mib:
            options["mem_limit"] = f"{self.memory_mib}m"
        if self.memory_reservation_mib:
            options["mem_reservation"] = f"{self.memory_reservation_mib}m"
        if self.healthcheck is not None:
            options["healthcheck"] = {
                key: list(value) if isinstance(value, list) else value
                for key, value in self.healthcheck.items()
            }
        return options


def container_specs(
    assignment: agent_pb.TaskAssignment,
    node_id: str,
    dns_servers: Sequence[str] = (),
    pids_limit: int = DEFAULT_PIDS_LIMIT,
) -> list[ContainerSpec]:
    """The containers of one task on one node, in task-definition order.

    dns_servers: the host's Berth DNS, so containers resolve SERVICE.CLUSTER.berth
    (empty: Docker's default resolver).
    pids_limit: processes per container (0 or less: the engine's default).
    """
    td = assignment.task_definition
    secrets = {
        group.container: {v.name: v.value for v in group.environment}
        for group in assignment.secret_environment
    }
    network_mode = docker_network_mode(td.network_mode)
    # On the host's network a container's ports are the host's own (nothing to publish), and
    # Docker refuses DNS servers there as it does without a network.
    bridged = not network_mode
    specs = []
    for definition in td.container_definitions:
        stop_timeout = definition.stop_timeout or DEFAULT_STOP_TIMEOUT
        host_ports = (
            {
                LABEL_HOST_PORTS: ",".join(
                    f"{p.container_port}/{protocol_name(p.protocol)}" for p in definition.port_mappings
                )
            }
            if network_mode == "host" and definition.port_mappings
            else {}
        )
        specs.append(
            ContainerSpec(
                image=definition.image,
                name=container_name(assignment.task_id, definition.name),
                definition_name=definition.name,
                essential=definition.essential,
                stop_timeout=stop_timeout,
                labels={
                    LABEL_MANAGED: "true",
                    LABEL_TASK_ID: assignment.task_id,
                    LABEL_CONTAINER: definition.name,
                    LABEL_ESSENTIAL: "true" if definition.essential else "false",
                    LABEL_STOP_TIMEOUT: str(stop_timeout),
                    LABEL_CLUSTER: assignment.cluster,
                    LABEL_SERVICE: assignment.service,
                    LABEL_TASK_DEFINITION: f"{td.family}:{td.revision}",
                    LABEL_NODE: node_id,
                }
                | host_ports,
                # The task's secrets (resolved for this node by the control plane) join its environment.
                environment={e.name: e.value for e in definition.environment}
                | secrets.get(definition.name, {}),
                ports=(
                    {
                        f"{p.container_port}/{protocol_name(p.protocol)}": (p.host_port or None)
                        for p in definition.port_mappings
                    }
                    if bridged
                    else {}
                ),
                cpu_shares=max(definition.cpu, MIN_CPU_SHARES),
                command=tuple(definition.command),
                entrypoint=tuple(definition.entry_point),
                memory_mib=definition.memory,
                memory_reservation_mib=definition.memory_reservation,
                dns=tuple(dns_servers) if bridged else (),
                pids_limit=max(pids_limit, 0),
                healthcheck=(
                    healthcheck(definition.health_check) if definition.HasField("health_check") else None
                ),
                network_mode=network_mode,
            )
        )
    return specs
