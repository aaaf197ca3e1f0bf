"""What a container's settings need of the namespaces it runs in, checked at registration.

A setting that the engine would refuse at start, or would silently ignore, in the namespaces a
task definition asks for is refused here, saying why (verified on Docker 20.10 with runc 1.1):

    namespaces                          refused                                 why
    pidMode or ipcMode task             containerDefinitions[0] not essential   the namespace is
                                                                                its: it must live
                                                                                as long as the task
    no network (networkMode none,       portMappings, dnsServers,               nothing to map,
    or disableNetworking)               dnsSearchDomains, extraHosts            resolve or reach
    networkMode host                    net.* systemControls                    runc refuses: the
                                                                                node's own settings
    ipcMode host                        IPC systemControls, sharedMemorySize    runc refuses / the
                                                                                node's /dev/shm
    ipcMode none                        sharedMemorySize                        no /dev/shm at all
    ipcMode task, containers after      IPC systemControls, sharedMemorySize    the namespace is the
    the first                                                                   first container's

IPC systemControls are kernel.shm*, kernel.msg*, kernel.sem and fs.mqueue.*. Set them (and
sharedMemorySize) on the first container with ipcMode task: they apply to the whole task, as
ECS's do. In host network mode a container's dnsServers, dnsSearchDomains and extraHosts work
(the engine writes them into the container's own resolv.conf and hosts file). Links have their
own rules (berth.taskdef_docker).
"""

from __future__ import annotations

from berth.errors import InvalidArgument
from berth.v1 import resources_pb2 as pb

_IPC_SYSCTL_PREFIXES = ("kernel.shm", "kernel.msg", "kernel.sem", "fs.mqueue.")


def _is_ipc_sysctl(name: str) -> bool:
    return name.startswith(_IPC_SYSCTL_PREFIXES)


def _check_task_namespaces(td: pb.TaskDefinition) -> None:
    if not td.container_definitions:
        return
    first = td.container_definitions[0]
    for field, mode in (("pidMode", td.pid_mode), ("ipcMode", td.ipc_mode)):
        if mode == "task" and not first.essential:
            raise InvalidArgument(
                f"{field} task needs containerDefinitions[0] ({first.name}) to be essential: the task's "
                "namespace is the first container's, and the others lose it when that container "
                "exits; list an essential container first"
            )


def _networkless(td: pb.TaskDefinition, c: pb.ContainerDefinition) -> str | None:
    """Why this container has no network; None: it has one."""
    if c.disable_networking:
        return "the container has disableNetworking:"
    if td.network_mode == pb.NETWORK_MODE_NONE:
        return "networkMode none has"
    return None


def _check_network(where: str, td: pb.TaskDefinition, c: pb.ContainerDefinition) -> None:
    reason = _networkless(td, c)
    if reason is not None:
        for field, present, purpose in (
            ("portMappings", bool(c.port_mappings), "map ports on"),
            ("dnsServers", bool(c.dns_servers), "resolve on"),
            ("dnsSearchDomains", bool(c.dns_search_domains), "resolve on"),
            ("extraHosts", bool(c.extra_hosts), "reach hosts on"),
        ):
            if present:
                raise InvalidArgument(f"{where}.{field}: {reason} no network to {purpose}")
    if td.network_mode == pb.NETWORK_MODE_HOST:
        for control in c.system_controls:
            if control.namespace.startswith("net."):
                raise InvalidArgument(
                    f"{where}.systemControls: {control.namespace} cannot be set with networkMode host: "
                    "the container shares the node's network namespace, and the engine refuses to "
                    "change the node's settings"
                )


def _check_ipc(where: str, td: pb.TaskDefinition, index: int, c: pb.ContainerDefinition) -> None:
    ipc_sysctls = [s.namespace for s in c.system_controls if _is_ipc_sysctl(s.namespace)]
    shm = c.linux_parameters.shared_memory_size
    if td.ipc_mode == "host":
        if ipc_sysctls:
            raise InvalidArgument(
                f"{where}.systemControls: {ipc_sysctls[0]} cannot be set with ipcMode host: the "
                "container shares the node's IPC namespace, and the engine refuses to change the "
                "node's settings"
            )
        if shm:
            raise InvalidArgument(
                f"{where}.linuxParameters.sharedMemorySize cannot be set with ipcMode host: the "
                "container uses the node's /dev/shm"
            )
    elif td.ipc_mode == "none":
        if shm:
            raise InvalidArgument(
                f"{where}.linuxParameters.sharedMemorySize cannot be set with ipcMode none: the "
                "container has no /dev/shm"
            )
    elif td.ipc_mode == "task" and index > 0:
        first = td.container_definitions[0].name
        offending = [f"systemControls: {name}" for name in ipc_sysctls]
        if shm:
            offending.append("linuxParameters.sharedMemorySize")
        if offending:
            raise InvalidArgument(
                f"{where}.{offending[0]} cannot be set here with ipcMode task: the task's IPC namespace and "
                f"its /dev/shm are containerDefinitions[0]'s ({first}); set it there, and it applies "
                "to every container of the task"
            )


def check_namespaces(td: pb.TaskDefinition) -> None:
    """Refuse what the engine would refuse at start, or silently ignore, in the namespaces this
    task definition asks for (every client: the gRPC API too)."""
    _check_task_namespaces(td)
    for index, c in enumerate(td.container_definitions):
        where = f"containerDefinitions[{index}]"
        _check_network(where, td, c)
        _check_ipc(where, td, index, c)
