"""ECS's process and security settings of a container definition: parse, bound, check.

`user`, `workingDirectory`, `hostname`, `readonlyRootFilesystem`, `ulimits`,
`dockerLabels`, `extraHosts`, `dnsServers`, `dnsSearchDomains`,
`systemControls`, `linuxParameters`, `privileged` and `dockerSecurityOptions`.
`ProcessSettings` is the JSON schema (types and bounds) and
`ProcessSettings.apply` fills the protobuf message; `check_process_settings`
checks a message's meaning, whichever client sent it. What only a cluster
policy may allow (privileged, devices, security options, capabilities Docker
does not grant by default, real-time ulimits, and the task's pidMode/ipcMode
host) is refused at registration by `privilege_refusal`, the one owner of
that policy.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from pydantic import Field

from berth.ecs_schema import EcsModel
from berth.errors import InvalidArgument
from berth.names import shown
from berth.v1 import resources_pb2 as pb

# The JSON fields this module owns (the container parser hands them over).
FIELDS = {
    "user": "user",
    "workingDirectory": "working_directory",
    "hostname": "hostname",
    "readonlyRootFilesystem": "readonly_root_filesystem",
    "ulimits": "ulimits",
    "dockerLabels": "docker_labels",
    "extraHosts": "extra_hosts",
    "dnsServers": "dns_servers",
    "dnsSearchDomains": "dns_search_domains",
    "systemControls": "system_controls",
    "linuxParameters": "linux_parameters",
    "privileged": "privileged",
    "dockerSecurityOptions": "docker_security_options",
}

MAX_PATH_LENGTH = 4096  # PATH_MAX
MAX_USER_LENGTH = 255
MAX_HOSTNAME_LENGTH = 63  # a label's limit; the kernel keeps at most 64 bytes
MAX_DNS_NAME_LENGTH = 253
MAX_LIST = 100  # ulimits, labels, extra hosts, sysctls, tmpfs mounts, devices, each
MAX_DNS_SERVERS = 3  # resolv.conf uses at most three nameservers
MAX_DNS_SEARCH_DOMAINS = 6  # resolv.conf's search list
MAX_LABEL_KEY_LENGTH = 255
MAX_LABEL_VALUE_LENGTH = 4096
MAX_SYSCTL_VALUE_LENGTH = 255
MAX_SECURITY_OPTIONS = 20
MAX_SECURITY_OPTION_LENGTH = 255
MAX_SHM_MIB = 4_194_304  # as a container's memory
MAX_TMPFS_MIB = 4_194_304
MAX_ULIMIT = 2**31 - 1  # ECS: an Integer
MAX_NOFILE = 1_048_576  # the kernel's default nr_open: a higher nofile makes the start fail

# ECS's ulimit names.
ULIMIT_NAMES = frozenset(
    {
        "core",
        "cpu",
        "data",
        "fsize",
        "locks",
        "memlock",
        "msgqueue",
        "nice",
        "nofile",
        "nproc",
        "rss",
        "rtprio",
        "rttime",
        "sigpending",
        "stack",
    }
)
# Real-time scheduling lets a task starve the node: only with --allow-privileged.
PRIVILEGED_ULIMITS = frozenset({"rtprio", "rttime"})
# ECS's capability names (KernelCapabilities).
CAPABILITIES = frozenset(
    {
        "ALL",
        "AUDIT_CONTROL",
        "AUDIT_WRITE",
        "BLOCK_SUSPEND",
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "IPC_LOCK",
        "IPC_OWNER",
        "KILL",
        "LEASE",
        "LINUX_IMMUTABLE",
        "MAC_ADMIN",
        "MAC_OVERRIDE",
        "MKNOD",
        "NET_ADMIN",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_RAW",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_CHROOT",
        "SYS_MODULE",
        "SYS_NICE",
        "SYS_PACCT",
        "SYS_PTRACE",
        "SYS_RAWIO",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "SYSLOG",
        "WAKE_ALARM",
    }
)
# What Docker grants every container: adding one of these changes nothing, so
# needs no policy; adding any other one does (--allow-privileged).
DOCKER_DEFAULT_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "NET_RAW",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)
# Sysctls Docker lets a container set: those namespaced per container.
_SYSCTL_NAMESPACE = re.compile(r"[a-z0-9_]+(\.[a-z0-9_-]+)+")
_NAMESPACED_SYSCTLS = frozenset(
    {
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    }
)
# ECS's tmpfs mountOptions; those in _TMPFS_VALUED take "=value".
_TMPFS_FLAGS = frozenset(
    {
        "defaults",
        "ro",
        "rw",
        "suid",
        "nosuid",
        "dev",
        "nodev",
        "exec",
        "noexec",
        "sync",
        "async",
        "dirsync",
        "mand",
        "nomand",
        "atime",
        "noatime",
        "diratime",
        "nodiratime",
        "relatime",
        "norelatime",
        "strictatime",
        "nostrictatime",
    }
)
_TMPFS_VALUED = frozenset({"mode", "uid", "gid", "nr_inodes", "nr_blocks"})
_TMPFS_VALUE = re.compile(r"[0-9A-Za-z]{1,32}")
_DEVICE_PERMISSIONS = ("read", "write", "mknod")
# user, uid, user:group, uid:gid, user:gid, uid:group.
_USER_PART = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}"
_USER = re.compile(rf"{_USER_PART}(:{_USER_PART})?")
_HOSTNAME = re.compile(
    r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_SECURITY_OPTION = re.compile(
    r"(no-new-privileges(:true)?|(apparmor|label|seccomp)[:=][A-Za-z0-9_./:=-]{1,200})"
)
_BERTH_LABELS = "berth."


class _Ulimit(EcsModel):
    name: str = Field(max_length=32)
    soft_limit: int = Field(alias="softLimit", ge=-1, le=MAX_ULIMIT)
    hard_limit: int = Field(alias="hardLimit", ge=-1, le=MAX_ULIMIT)


class _HostEntry(EcsModel):
    hostname: str = Field(max_length=MAX_DNS_NAME_LENGTH)
    ip_address: str = Field(alias="ipAddress", max_length=64)


class _SystemControl(EcsModel):
    namespace: str = Field(max_length=255)
    value: str = Field(max_length=MAX_SYSCTL_VALUE_LENGTH)


class _Capabilities(EcsModel):
    add: list[str] = Field(default_factory=list, max_length=len(CAPABILITIES))
    drop: list[str] = Field(default_factory=list, max_length=len(CAPABILITIES))


class _Tmpfs(EcsModel):
    container_path: str = Field(alias="containerPath", max_length=MAX_PATH_LENGTH)
    size: int = Field(ge=1, le=MAX_TMPFS_MIB)
    mount_options: list[str] = Field(
        default_factory=list, alias="mountOptions", max_length=len(_TMPFS_FLAGS) + 5
    )


class _Device(EcsModel):
    host_path: str = Field(alias="hostPath", max_length=MAX_PATH_LENGTH)
    container_path: str = Field(default="", alias="containerPath", max_length=MAX_PATH_LENGTH)
    permissions: list[str] = Field(default_factory=list, max_length=3)


class _LinuxParameters(EcsModel):
    capabilities: _Capabilities | None = None
    init_process_enabled: bool = Field(default=False, alias="initProcessEnabled")
    shared_memory_size: int | None = Field(default=None, alias="sharedMemorySize", ge=1, le=MAX_SHM_MIB)
    tmpfs: list[_Tmpfs] = Field(default_factory=list, max_length=MAX_LIST)
    devices: list[_Device] = Field(default_factory=list, max_length=MAX_LIST)


class ProcessSettings(EcsModel):
    """The JSON schema of the fields in FIELDS: types and bounds (meaning: check_process_settings)."""

    user: str = Field(default="", max_length=MAX_USER_LENGTH)
    working_directory: str = Field(default="", alias="workingDirectory", max_length=MAX_PATH_LENGTH)
    hostname: str = Field(default="", max_length=MAX_HOSTNAME_LENGTH)
    readonly_root_filesystem: bool = Field(default=False, alias="readonlyRootFilesystem")
    ulimits: list[_Ulimit] = Field(default_factory=list, max_length=len(ULIMIT_NAMES))
    docker_labels: dict[str, str] = Field(default_factory=dict, alias="dockerLabels", max_length=MAX_LIST)
    extra_hosts: list[_HostEntry] = Field(default_factory=list, alias="extraHosts", max_length=MAX_LIST)
    dns_servers: list[str] = Field(default_factory=list, alias="dnsServers", max_length=MAX_DNS_SERVERS)
    dns_search_domains: list[str] = Field(
        default_factory=list, alias="dnsSearchDomains", max_length=MAX_DNS_SEARCH_DOMAINS
    )
    system_controls: list[_SystemControl] = Field(
        default_factory=list, alias="systemControls", max_length=MAX_LIST
    )
    linux_parameters: _LinuxParameters | None = Field(default=None, alias="linuxParameters")
    privileged: bool = False
    docker_security_options: list[str] = Field(
        default_factory=list, alias="dockerSecurityOptions", max_length=MAX_SECURITY_OPTIONS
    )

    @classmethod
    def take(cls, raw: dict[str, Any]) -> tuple[ProcessSettings, dict[str, Any]]:
        """Split a container definition: these settings (validated), and every other field."""
        mine = {key: value for key, value in raw.items() if key in FIELDS}
        rest = {key: value for key, value in raw.items() if key not in FIELDS}
        return cls.model_validate(mine), rest

    def apply(self, c: pb.ContainerDefinition, where: str) -> None:
        """Write these settings into the container definition (addresses normalized)."""
        c.user = self.user
        c.working_directory = self.working_directory
        c.hostname = self.hostname
        c.readonly_root_filesystem = self.readonly_root_filesystem
        c.ulimits.extend(
            pb.Ulimit(name=u.name, soft_limit=u.soft_limit, hard_limit=u.hard_limit) for u in self.ulimits
        )
        c.docker_labels.update(self.docker_labels)
        c.extra_hosts.extend(
            pb.HostEntry(
                hostname=h.hostname,
                ip_address=_address(h.ip_address, f"{where}.extraHosts[{h.hostname}].ipAddress"),
            )
            for h in self.extra_hosts
        )
        c.dns_servers.extend(_address(a, f"{where}.dnsServers") for a in self.dns_servers)
        c.dns_search_domains.extend(self.dns_search_domains)
        c.system_controls.extend(
            pb.SystemControl(namespace=s.namespace, value=s.value) for s in self.system_controls
        )
        c.privileged = self.privileged
        c.docker_security_options.extend(self.docker_security_options)
        linux = self.linux_parameters
        if linux is None:
            return
        c.linux_parameters.CopyFrom(
            pb.LinuxParameters(
                capabilities_add=linux.capabilities.add if linux.capabilities else [],
                capabilities_drop=linux.capabilities.drop if linux.capabilities else [],
                init_process_enabled=linux.init_process_enabled,
                shared_memory_size=linux.shared_memory_size or 0,
                tmpfs=[
                    pb.TmpfsMount(container_path=t.container_path, size=t.size, mount_options=t.mount_options)
                    for t in linux.tmpfs
                ],
                devices=[
                    pb.DeviceMapping(
                        host_path=d.host_path, container_path=d.container_path, permissions=d.permissions
                    )
                    for d in linux.devices
                ],
            )
        )


def _address(text: str, where: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise InvalidArgument(f"{where}: {shown(text)} is not an IPv4 or IPv6 address") from None


def _clean(text: str) -> bool:
    return text.isprintable() and "\0" not in text


def _absolute_path(where: str, path: str) -> None:
    if (
        not path.startswith("/")
        or len(path) > MAX_PATH_LENGTH
        or not _clean(path)
        or any(c in path for c in ":,\n")
        or "/../" in f"{path}/"
    ):
        raise InvalidArgument(
            f"{where} {shown(path)} is invalid: use an absolute path without '..', ':', ',' "
            f"or control characters, up to {MAX_PATH_LENGTH} characters"
        )


def _check_limit(where: str, limit: int) -> None:
    if not -1 <= limit <= MAX_ULIMIT:
        raise InvalidArgument(f"{where} {limit} is out of range: use -1 (unlimited) to {MAX_ULIMIT}")


def _check_ulimits(where: str, c: pb.ContainerDefinition) -> None:
    seen: set[str] = set()
    for u in c.ulimits:
        here = f"{where}.ulimits[{shown(u.name)}]"
        if u.name not in ULIMIT_NAMES:
            raise InvalidArgument(
                f"{where}.ulimits: {shown(u.name)} is not one of {', '.join(sorted(ULIMIT_NAMES))}"
            )
        if u.name in seen:
            raise InvalidArgument(f"{here} is set twice")
        seen.add(u.name)
        _check_limit(f"{here}.softLimit", u.soft_limit)
        _check_limit(f"{here}.hardLimit", u.hard_limit)
        soft = float("inf") if u.soft_limit == -1 else u.soft_limit
        hard = float("inf") if u.hard_limit == -1 else u.hard_limit
        if soft > hard:
            raise InvalidArgument(f"{here}: softLimit must not exceed hardLimit")
        if u.name == "nofile" and (u.hard_limit == -1 or u.hard_limit > MAX_NOFILE):
            raise InvalidArgument(f"{here}.hardLimit must be at most {MAX_NOFILE} (the kernel's nr_open)")


def _check_labels(where: str, c: pb.ContainerDefinition) -> None:
    if len(c.docker_labels) > MAX_LIST:
        raise InvalidArgument(
            f"{where}.dockerLabels has {len(c.docker_labels)} labels: the limit is {MAX_LIST}"
        )
    for key, value in c.docker_labels.items():
        if not key or len(key) > MAX_LABEL_KEY_LENGTH or not _clean(key) or any(ch.isspace() for ch in key):
            raise InvalidArgument(
                f"{where}.dockerLabels: key {shown(key)} is invalid: use 1-{MAX_LABEL_KEY_LENGTH} "
                "characters without spaces or control characters"
            )
        if key.lower().startswith(_BERTH_LABELS):
            raise InvalidArgument(
                f"{where}.dockerLabels: key {shown(key)} is reserved: "
                "labels starting with 'berth.' are Berth's own"
            )
        if len(value) > MAX_LABEL_VALUE_LENGTH or not _clean(value):
            raise InvalidArgument(
                f"{where}.dockerLabels[{shown(key)}]: the value must be at most {MAX_LABEL_VALUE_LENGTH} "
                "characters, without control characters"
            )


def _check_names(where: str, c: pb.ContainerDefinition) -> None:
    if c.user and (len(c.user) > MAX_USER_LENGTH or not _USER.fullmatch(c.user)):
        raise InvalidArgument(
            f"{where}.user {shown(c.user)} is invalid: use user, uid, user:group or uid:gid "
            "(letters, digits, '_', '.', '-')"
        )
    if c.working_directory:
        _absolute_path(f"{where}.workingDirectory", c.working_directory)
    if c.hostname and (len(c.hostname) > MAX_HOSTNAME_LENGTH or not _HOSTNAME.fullmatch(c.hostname)):
        raise InvalidArgument(
            f"{where}.hostname {shown(c.hostname)} is invalid: use up to {MAX_HOSTNAME_LENGTH} letters, "
            "digits, '-' and '.'"
        )
    if len(c.extra_hosts) > MAX_LIST:
        raise InvalidArgument(f"{where}.extraHosts has {len(c.extra_hosts)} entries: the limit is {MAX_LIST}")
    for entry in c.extra_hosts:
        if len(entry.hostname) > MAX_DNS_NAME_LENGTH or not _HOSTNAME.fullmatch(entry.hostname):
            raise InvalidArgument(
                f"{where}.extraHosts: hostname {shown(entry.hostname)} is invalid: use up to "
                f"{MAX_DNS_NAME_LENGTH} letters, digits, '-' and '.'"
            )
        _address(entry.ip_address, f"{where}.extraHosts[{entry.hostname}].ipAddress")
    if len(c.dns_servers) > MAX_DNS_SERVERS:
        raise InvalidArgument(
            f"{where}.dnsServers: at most {MAX_DNS_SERVERS} servers (resolv.conf uses no more)"
        )
    for server in c.dns_servers:
        _address(server, f"{where}.dnsServers")
    if len(c.dns_search_domains) > MAX_DNS_SEARCH_DOMAINS:
        raise InvalidArgument(f"{where}.dnsSearchDomains: at most {MAX_DNS_SEARCH_DOMAINS} domains")
    for domain in c.dns_search_domains:
        if len(domain) > MAX_DNS_NAME_LENGTH or not _HOSTNAME.fullmatch(domain):
            raise InvalidArgument(
                f"{where}.dnsSearchDomains: {shown(domain)} is invalid: use up to {MAX_DNS_NAME_LENGTH} "
                "letters, digits, '-' and '.'"
            )


def _check_sysctls(where: str, c: pb.ContainerDefinition) -> None:
    if len(c.system_controls) > MAX_LIST:
        raise InvalidArgument(
            f"{where}.systemControls has {len(c.system_controls)} entries: the limit is {MAX_LIST}"
        )
    seen: set[str] = set()
    for control in c.system_controls:
        name = control.namespace
        if (
            len(name) > 255
            or not _SYSCTL_NAMESPACE.fullmatch(name)
            or not (name.startswith("net.") or name in _NAMESPACED_SYSCTLS)
        ):
            raise InvalidArgument(
                f"{where}.systemControls: {shown(name)} is not a sysctl a container may set: "
                "use net.* or kernel.shm*, kernel.msg*, kernel.sem (namespaced per container)"
            )
        if name in seen:
            raise InvalidArgument(f"{where}.systemControls: {name} is set twice")
        seen.add(name)
        value = control.value
        if not value.strip() or len(value) > MAX_SYSCTL_VALUE_LENGTH or not _clean(value):
            raise InvalidArgument(
                f"{where}.systemControls[{name}].value must be 1-{MAX_SYSCTL_VALUE_LENGTH} characters, "
                "without control characters"
            )


def _check_linux(where: str, c: pb.ContainerDefinition) -> None:
    if not c.HasField("linux_parameters"):
        return
    linux = c.linux_parameters
    where = f"{where}.linuxParameters"
    for field, names in (("add", linux.capabilities_add), ("drop", linux.capabilities_drop)):
        if len(names) > len(CAPABILITIES):
            raise InvalidArgument(f"{where}.capabilities.{field} has too many entries")
        for name in names:
            if name not in CAPABILITIES:
                raise InvalidArgument(
                    f"{where}.capabilities.{field}: {shown(name)} is not an ECS capability name "
                    "(e.g. NET_ADMIN, SYS_PTRACE, ALL; without CAP_)"
                )
    if linux.shared_memory_size > MAX_SHM_MIB:
        raise InvalidArgument(f"{where}.sharedMemorySize is too large: use 1-{MAX_SHM_MIB} MiB")
    if len(linux.tmpfs) > MAX_LIST:
        raise InvalidArgument(f"{where}.tmpfs has {len(linux.tmpfs)} mounts: the limit is {MAX_LIST}")
    paths: set[str] = set()
    for mount in linux.tmpfs:
        _absolute_path(f"{where}.tmpfs.containerPath", mount.container_path)
        if mount.container_path in paths:
            raise InvalidArgument(f"{where}.tmpfs: {mount.container_path} is mounted twice")
        paths.add(mount.container_path)
        if not 1 <= mount.size <= MAX_TMPFS_MIB:
            raise InvalidArgument(f"{where}.tmpfs[{mount.container_path}].size: use 1-{MAX_TMPFS_MIB} MiB")
        if len(mount.mount_options) > len(_TMPFS_FLAGS) + len(_TMPFS_VALUED):
            raise InvalidArgument(f"{where}.tmpfs[{mount.container_path}].mountOptions has too many entries")
        for option in mount.mount_options:
            key, equals, value = option.partition("=")
            valid = (not equals and key in _TMPFS_FLAGS) or (
                bool(equals) and key in _TMPFS_VALUED and _TMPFS_VALUE.fullmatch(value) is not None
            )
            if not valid:
                raise InvalidArgument(
                    f"{where}.tmpfs[{mount.container_path}].mountOptions: {shown(option)} is not a tmpfs "
                    "option (e.g. noexec, nosuid, mode=1777, uid=1000)"
                )
    if len(linux.devices) > MAX_LIST:
        raise InvalidArgument(f"{where}.devices has {len(linux.devices)} entries: the limit is {MAX_LIST}")
    for device in linux.devices:
        _absolute_path(f"{where}.devices.hostPath", device.host_path)
        if device.container_path:
            _absolute_path(f"{where}.devices.containerPath", device.container_path)
        for permission in device.permissions:
            if permission not in _DEVICE_PERMISSIONS:
                raise InvalidArgument(
                    f"{where}.devices: permission {shown(permission)} is not one of read, write, mknod"
                )


def _check_security_options(where: str, c: pb.ContainerDefinition) -> None:
    if len(c.docker_security_options) > MAX_SECURITY_OPTIONS:
        raise InvalidArgument(f"{where}.dockerSecurityOptions: at most {MAX_SECURITY_OPTIONS} options")
    for option in c.docker_security_options:
        if len(option) > MAX_SECURITY_OPTION_LENGTH or not _SECURITY_OPTION.fullmatch(option):
            raise InvalidArgument(
                f"{where}.dockerSecurityOptions: {shown(option)} is not supported: use no-new-privileges, "
                "apparmor:PROFILE, label:VALUE or seccomp:PROFILE"
            )


def check_process_settings(where: str, c: pb.ContainerDefinition) -> None:
    """Check one container's process and security settings (every client: the gRPC API too)."""
    _check_names(where, c)
    _check_ulimits(where, c)
    _check_labels(where, c)
    _check_sysctls(where, c)
    _check_linux(where, c)
    _check_security_options(where, c)


def privilege_refusal(td: pb.TaskDefinition, allow_privileged: bool, allow_devices: bool) -> str | None:
    """Why the cluster's policy refuses this task definition, naming the flag; None: it does not.

    The whole policy: each container's privileges, then the task's host namespaces."""
    for i, c in enumerate(td.container_definitions):
        where = f"containerDefinitions[{i}]"
        if not allow_privileged:
            if c.privileged:
                return f"{where}.privileged is refused: the control plane runs without --allow-privileged"
            if c.docker_security_options:
                return (
                    f"{where}.dockerSecurityOptions is refused: the control plane runs without "
                    "--allow-privileged"
                )
            extra = sorted(set(c.linux_parameters.capabilities_add) - DOCKER_DEFAULT_CAPABILITIES)
            if extra:
                return (
                    f"{where}.linuxParameters.capabilities.add {', '.join(extra)} is refused: "
                    "capabilities beyond Docker's defaults need --allow-privileged"
                )
            realtime = sorted({u.name for u in c.ulimits} & PRIVILEGED_ULIMITS)
            if realtime:
                return (
                    f"{where}.ulimits {', '.join(realtime)} is refused: real-time scheduling limits "
                    "need --allow-privileged"
                )
        if not allow_devices and c.linux_parameters.devices:
            return (
                f"{where}.linuxParameters.devices is refused: the control plane runs without --allow-devices"
            )
    if not allow_privileged:
        return _host_namespace_refusal(td)
    return None


def _host_namespace_refusal(td: pb.TaskDefinition) -> str | None:
    """The host's PID namespace lets a task see and signal every process of the node, the
    host's IPC namespace reach its shared memory: as much as `privileged`, so the same flag."""
    for field, mode in (("pidMode", td.pid_mode), ("ipcMode", td.ipc_mode)):
        if mode == "host":
            return (
                f"{field} host is refused: the host's namespaces reach every process of the node; "
                "the control plane runs without --allow-privileged"
            )
    return None


def to_ecs(c: pb.ContainerDefinition) -> dict[str, Any]:
    """These settings of a stored container in ECS's JSON (only those set): the inverse of
    `ProcessSettings.apply`, so a described definition registers again unchanged."""
    out: dict[str, Any] = {}
    for key, value in (
        ("user", c.user),
        ("workingDirectory", c.working_directory),
        ("hostname", c.hostname),
    ):
        if value:
            out[key] = value
    if c.readonly_root_filesystem:
        out["readonlyRootFilesystem"] = True
    if c.ulimits:
        out["ulimits"] = [
            {"name": u.name, "softLimit": u.soft_limit, "hardLimit": u.hard_limit} for u in c.ulimits
        ]
    if c.docker_labels:
        out["dockerLabels"] = dict(sorted(c.docker_labels.items()))
    if c.extra_hosts:
        out["extraHosts"] = [{"hostname": h.hostname, "ipAddress": h.ip_address} for h in c.extra_hosts]
    if c.dns_servers:
        out["dnsServers"] = list(c.dns_servers)
    if c.dns_search_domains:
        out["dnsSearchDomains"] = list(c.dns_search_domains)
    if c.system_controls:
        out["systemControls"] = [{"namespace": s.namespace, "value": s.value} for s in c.system_controls]
    if c.privileged:
        out["privileged"] = True
    if c.docker_security_options:
        out["dockerSecurityOptions"] = list(c.docker_security_options)
    if c.HasField("linux_parameters"):
        linux = c.linux_parameters
        parameters: dict[str, Any] = {}
        if linux.capabilities_add or linux.capabilities_drop:
            parameters["capabilities"] = {
                "add": list(linux.capabilities_add),
                "drop": list(linux.capabilities_drop),
            }
        if linux.init_process_enabled:
            parameters["initProcessEnabled"] = True
        if linux.shared_memory_size:
            parameters["sharedMemorySize"] = linux.shared_memory_size
        if linux.tmpfs:
            parameters["tmpfs"] = [
                {"containerPath": t.container_path, "size": t.size, "mountOptions": list(t.mount_options)}
                for t in linux.tmpfs
            ]
        if linux.devices:
            parameters["devices"] = [
                {
                    "hostPath": d.host_path,
                    "containerPath": d.container_path,
                    "permissions": list(d.permissions),
                }
                for d in linux.devices
            ]
        out["linuxParameters"] = parameters
    return out
