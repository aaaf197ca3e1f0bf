"""How a task assignment becomes Docker containers (pure): names, labels, limits, ports, DNS,
and ECS's process and security settings (user, hostname, ulimits, linuxParameters, ...).

`container_specs` turns one assignment into one `ContainerSpec` per container
definition; `ContainerSpec.create_kwargs` is exactly what the driver hands to
the SDK's `containers.create(image, **kwargs)`. The labels written here are
what a restarted agent later adopts its containers by.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.runtime.docker_volumes import container_mounts
from agent.runtime.driver import (
    DEFAULT_STOP_TIMEOUT,
    LABEL_CLUSTER,
    LABEL_CONTAINER,
    LABEL_ESSENTIAL,
    LABEL_HOST_PORTS,
    LABEL_MANAGED,
    LABEL_NODE,
    LABEL_SERVICE,
    LABEL_START_ORDER,
    LABEL_STOP_TIMEOUT,
    LABEL_TASK_DEFINITION,
    LABEL_TASK_ID,
    StartFailed,
)
from berth.names import protocol_name
from berth.taskdef_docker import link_target
from berth.taskdef_lifecycle import dependency_order
from berth.taskdef_logging import AWS_DRIVERS, AWS_LOG_ROTATION, ENGINE_DRIVERS
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
    # ECS's process and security settings; empty or unset: the image's and the engine's defaults.
    user: str = ""
    working_dir: str = ""
    hostname: str = ""
    read_only: bool = False
    ulimits: tuple[tuple[str, int, int], ...] = ()  # (name, soft, hard); -1 = unlimited
    extra_hosts: tuple[str, ...] = ()  # "hostname:address"
    dns_search: tuple[str, ...] = ()
    sysctls: dict[str, str] = field(default_factory=dict)
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    init: bool = False
    shm_size_mib: int = 0
    tmpfs: dict[str, str] = field(default_factory=dict)  # container path -> mount options
    devices: tuple[str, ...] = ()  # "host:container:rwm"
    privileged: bool = False
    # The SDK's log_config ({"type", "config"}); None: the engine's default driver.
    log_config: dict[str, Any] | None = None
    # Plain Docker options (berth.taskdef_docker): stdin kept open, a TTY, links as
    # {Docker container name: alias}, the PID and IPC namespaces ("" = the container's own).
    stdin_open: bool = False
    tty: bool = False
    links: dict[str, str] = field(default_factory=dict)
    pid_mode: str = ""
    ipc_mode: str = ""
    # ECS's mountPoints and volumesFrom (agent.runtime.docker_volumes):
    # "SOURCE:PATH:ro|rw" and "CONTAINER:ro|rw".
    binds: tuple[str, ...] = ()
    volumes_from: tuple[str, ...] = ()

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
        options.update(self._process_options())
        if self.log_config is not None:
            config = dict(self.log_config["config"])
            options["log_config"] = {"type": self.log_config["type"], "config": config}
        if self.binds:
            options["volumes"] = list(self.binds)
        if self.volumes_from:
            options["volumes_from"] = list(self.volumes_from)
        options.update(self._docker_options())
        return options

    def _docker_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {}
        for key, value in (
            ("stdin_open", self.stdin_open),
            ("tty", self.tty),
            ("pid_mode", self.pid_mode),
            ("ipc_mode", self.ipc_mode),
        ):
            if value:
                options[key] = value
        if self.links:
            options["links"] = dict(self.links)
        return options

    def _process_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {}
        for key, value in (
            ("user", self.user),
            ("working_dir", self.working_dir),
            ("hostname", self.hostname),
            ("read_only", self.read_only),
            ("init", self.init),
            ("privileged", self.privileged),
        ):
            if value:
                options[key] = value
        if self.ulimits:
            options["ulimits"] = [{"name": n, "soft": s, "hard": h} for n, s, h in self.ulimits]
        for key, items in (
            ("extra_hosts", self.extra_hosts),
            ("dns_search", self.dns_search),
            ("cap_add", self.cap_add),
            ("cap_drop", self.cap_drop),
            ("devices", self.devices),
        ):
            if items:
                options[key] = list(items)
        if self.sysctls:
            options["sysctls"] = dict(self.sysctls)
        if self.tmpfs:
            options["tmpfs"] = dict(self.tmpfs)
        if self.shm_size_mib:
            options["shm_size"] = f"{self.shm_size_mib}m"
        return options


def docker_log_config(
    c: pb.ContainerDefinition, secret_options: Mapping[str, str] | None = None
) -> dict[str, Any] | None:
    """The SDK's `log_config` for a container: its engine driver with its options and its
    secretOptions (`secret_options`: their values, resolved for this node by the control plane,
    by option key); json-file with bounded rotation for awslogs and awsfirelens (Berth's own log
    path); None, the engine's default driver, without a logConfiguration.

    StartFailed when a secretOption has no value: the control plane sends every one or says
    why not (secrets_error), so this is a mismatched control plane, and nothing starts."""
    if not c.HasField("log_configuration"):
        return None
    config = c.log_configuration
    if config.log_driver in AWS_DRIVERS:
        return {"type": "json-file", "config": dict(AWS_LOG_ROTATION)}
    if config.log_driver not in ENGINE_DRIVERS:  # refused at registration; a record written otherwise
        return None
    options = dict(config.options)
    resolved = secret_options or {}
    for option in config.secret_options:
        if option.name not in resolved:
            raise StartFailed(
                f"ResourceInitializationError: container {c.name}: the control plane sent no value "
                f"for the log option {option.name} (secretOptions)"
            )
        options[option.name] = resolved[option.name]
    return {"type": config.log_driver, "config": dict(sorted(options.items()))}


def _tmpfs_options(mount: pb.TmpfsMount) -> str:
    return ",".join([f"size={mount.size}m", *mount.mount_options])


def _device(device: pb.DeviceMapping) -> str:
    # ECS: no permissions listed means all three.
    permissions = set(device.permissions) or {"read", "write", "mknod"}
    letters = "".join(
        letter for letter, name in (("r", "read"), ("w", "write"), ("m", "mknod")) if name in permissions
    )
    return f"{device.host_path}:{device.container_path or device.host_path}:{letters}"


def _process_settings(
    definition: pb.ContainerDefinition, dns_servers: Sequence[str], bridged: bool
) -> dict[str, Any]:
    """ContainerSpec's fields for ECS's process and security settings of one container."""
    linux = definition.linux_parameters
    return {
        "user": definition.user,
        "working_dir": definition.working_directory,
        "hostname": definition.hostname,
        "read_only": definition.readonly_root_filesystem,
        "ulimits": tuple((u.name, u.soft_limit, u.hard_limit) for u in definition.ulimits),
        "extra_hosts": tuple(f"{h.hostname}:{h.ip_address}" for h in definition.extra_hosts),
        # The task's own resolvers replace the node's Berth DNS, as ECS's dnsServers replace the VPC's.
        # Off the bridge the node's Berth DNS is not given (host: the node's resolv.conf), but the
        # task's own resolvers are: the engine writes them into the container's resolv.conf in host
        # mode too (a container without a network may have none: berth.taskdef_namespaces).
        "dns": tuple(definition.dns_servers) or (tuple(dns_servers) if bridged else ()),
        "dns_search": tuple(definition.dns_search_domains),
        "sysctls": {s.namespace: s.value for s in definition.system_controls},
        "cap_add": tuple(linux.capabilities_add),
        "cap_drop": tuple(linux.capabilities_drop),
        "init": linux.init_process_enabled,
        "shm_size_mib": linux.shared_memory_size,
        "tmpfs": {t.container_path: _tmpfs_options(t) for t in linux.tmpfs},
        "devices": tuple(_device(d) for d in linux.devices),
        "privileged": definition.privileged,
        # Berth's own options first: the task's (allowed by --allow-privileged) add to them.
        "security_opt": SECURITY_OPTIONS + tuple(definition.docker_security_options),
    }


def _namespace(mode: str, holder: str, is_holder: bool, shareable: str) -> str:
    """Docker's pid_mode/ipc_mode for ECS's: "task" shares the first container's namespace."""
    if mode == "task":
        return shareable if is_holder else f"container:{holder}"
    return mode  # "", "host" or (IPC) "none"


def _docker_options(
    assignment: agent_pb.TaskAssignment, index: int, definition: pb.ContainerDefinition
) -> dict[str, Any]:
    """ContainerSpec's fields for ECS's plain Docker options of one container."""
    td = assignment.task_definition
    holder = container_name(assignment.task_id, td.container_definitions[0].name)
    links = {}
    for link in definition.links:
        target, alias = link_target(link)
        links[container_name(assignment.task_id, target)] = alias
    return {
        "stdin_open": definition.interactive,
        "tty": definition.pseudo_terminal,
        "links": links,
        # Docker keeps a container's own PID namespace private already; IPC needs "shareable".
        "pid_mode": _namespace(td.pid_mode, holder, index == 0, ""),
        "ipc_mode": _namespace(td.ipc_mode, holder, index == 0, "shareable"),
    }


def container_specs(
    assignment: agent_pb.TaskAssignment,
    node_id: str,
    dns_servers: Sequence[str] = (),
    pids_limit: int = DEFAULT_PIDS_LIMIT,
    file_environment: Mapping[str, Mapping[str, str]] | None = None,
) -> list[ContainerSpec]:
    """The containers of one task on one node, in task-definition order.

    dns_servers: the host's Berth DNS, so containers resolve SERVICE.CLUSTER.berth
    (empty: Docker's default resolver).
    pids_limit: processes per container (0 or less: the engine's default).
    file_environment: each container's variables from its environment files (agent.envfiles),
    by container name; its `environment` and `secrets` win over them, as in ECS.
    """
    td = assignment.task_definition
    secrets = {
        group.container: {v.name: v.value for v in group.environment}
        for group in assignment.secret_environment
    }
    log_secrets = {
        group.container: {v.name: v.value for v in group.environment}
        for group in assignment.log_secret_options
    }
    network_mode = docker_network_mode(td.network_mode)
    # On the host's network a container's ports are the host's own (nothing to publish), and it
    # resolves with the node's resolv.conf unless it names its own dnsServers.
    bridged = not network_mode
    specs = []
    # With dependsOn: each container's place in the start order, so a stop can go in reverse.
    ordered = any(d.depends_on for d in td.container_definitions)
    rank = {index: place for place, index in enumerate(dependency_order(td.container_definitions))}
    for index, definition in enumerate(td.container_definitions):
        # disableNetworking: this container alone runs without a network. ECS hands it to Docker as
        # Config.NetworkDisabled; Berth uses network_mode "none" instead, on purpose: the same
        # isolation (its own namespace, loopback only), but the engine still writes /etc/hosts
        # (NetworkDisabled leaves it empty), and inspect says NetworkMode "none" rather than
        # "default", so what runs is what an operator (and Berth's adoption) reads.
        own_network = "none" if definition.disable_networking else network_mode
        own_bridged = bridged and not definition.disable_networking
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
                # The task's dockerLabels never override Berth's own (berth.* keys are refused at
                # registration; Berth's are written last all the same).
                labels=dict(definition.docker_labels)
                | {
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
                | ({LABEL_START_ORDER: str(rank[index])} if ordered else {})
                | host_ports,
                # The task's secrets (resolved for this node by the control plane) join its environment.
                environment=dict((file_environment or {}).get(definition.name, {}))
                | {e.name: e.value for e in definition.environment}
                | secrets.get(definition.name, {}),
                ports=(
                    {
                        f"{p.container_port}/{protocol_name(p.protocol)}": (p.host_port or None)
                        for p in definition.port_mappings
                    }
                    if own_bridged
                    else {}
                ),
                cpu_shares=max(definition.cpu, MIN_CPU_SHARES),
                command=tuple(definition.command),
                entrypoint=tuple(definition.entry_point),
                memory_mib=definition.memory,
                memory_reservation_mib=definition.memory_reservation,
                pids_limit=max(pids_limit, 0),
                healthcheck=(
                    healthcheck(definition.health_check) if definition.HasField("health_check") else None
                ),
                network_mode=own_network,
                log_config=docker_log_config(definition, log_secrets.get(definition.name)),
                **_process_settings(definition, dns_servers, own_bridged),
                **_docker_options(assignment, index, definition),
                **container_mounts(definition, td, assignment.task_id, container_name),
            )
        )
    return specs
