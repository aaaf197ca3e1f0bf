"""ECS's storage fields of a task definition: parse, bound, check, describe.

Task-level `volumes` (a host path, a Docker volume with
`dockerVolumeConfiguration`, or neither: an empty volume the task's containers
share) and the containers' `mountPoints` and `volumesFrom`.
`parse_volumes` and `ContainerStorage` are the JSON schema and fill the
protobuf messages; `check_storage` checks a message's meaning, whichever client
sent it; `host_paths` lists every path of the node a definition binds (a volume's
`host.sourcePath`, and the `device` of a local-driver volume: what the control
plane's --allow-host-path policy judges) and `local_use` sorts a Docker volume's
driver and options into what the control plane's volume-driver policy judges (by
default only a plain local volume, a bounded tmpfs or a bind of such a device, so
those paths are every path of the node a definition can mount; the drivers and
options an operator allows beyond that are theirs to trust); `volumes_to_ecs`
and `to_ecs` write them back in ECS's shape for the describe round trip.

What Berth does with AWS's own volume kinds, and why:

- `efsVolumeConfiguration` is accepted, with a note, and mounted the way ECS's own
  agent mounts EFS without Amazon's mount helper: plain NFSv4.1 from
  `<fileSystemId>.efs.<region>.amazonaws.com:<rootDirectory>` through Docker's local
  driver, the region being the agent's (`--aws-region`, else AWS_REGION; a node
  without one fails the task's start saying so). An EFS file system is reachable
  only from its VPC, so this works for nodes on EC2 in that VPC, and nowhere else.
  EFS is allowed by the default volume-driver policy although it is a network file
  system: the server is the user's explicit AWS intent and Berth builds its address
  (`fs-...efs.REGION.amazonaws.com`) itself, so a task cannot point it elsewhere.
  `transitEncryption: ENABLED` is refused: it needs Amazon's helper (TLS around NFS),
  and mounting plain NFS instead would silently downgrade what the file asks for.
  IAM authorization is not applied, and the note says so (a file system whose policy
  requires IAM then refuses the mount: it fails closed).
  An `accessPointId` is refused: mounting without the access point would hand the
  task the file system's root and its own identity instead of the access point's
  directory and enforced user, a wider grant than the file asks for.
- `fsxWindowsFileServerConfiguration` is refused: Berth runs Linux hosts.
- `configuredAtLaunch: true` is refused: such a volume is attached by ECS (Amazon
  EBS) when a task is launched, and Berth has nothing to attach. `false` is the default,
  and accepted.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field, ValidationError

from berth.ecs_schema import EcsModel, one_line
from berth.errors import InvalidArgument
from berth.names import shown
from berth.v1 import resources_pb2 as pb

# The JSON fields this module owns: of a container definition, and of the document.
CONTAINER_FIELDS = frozenset({"mountPoints", "volumesFrom"})
DOCUMENT_FIELDS = frozenset({"volumes"})

MAX_PATH_LENGTH = 4096  # PATH_MAX
MAX_VOLUMES = 100  # per task definition
MAX_MOUNT_POINTS = 100  # per container
MAX_VOLUMES_FROM = 10  # per container (a task has at most 10 containers)
MAX_VOLUME_NAME_LENGTH = 255  # ECS
MAX_DRIVER_LENGTH = 128
MAX_OPTIONS = 64  # driverOpts and labels, each
MAX_OPTION_KEY_LENGTH = 255
MAX_OPTION_VALUE_LENGTH = 4096

# ECS: up to 255 letters, digits, '_' and '-'.
_VOLUME_NAME = re.compile(r"[A-Za-z0-9_-]{1,255}")
# A shared volume keeps its own name on the node, and Docker's names start with a letter or digit.
_DOCKER_VOLUME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")
# "local", "rexray/ebs", "vieux/sshfs:latest".
DRIVER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}")
_OPTION_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")
_CONTAINER_NAME = re.compile(r"[A-Za-z0-9_-]{1,255}")
_BERTH_LABELS = "berth."
# Berth names its task volumes berth-TASK_ID-NAME: a shared volume must not name one.
RESERVED_VOLUME_PREFIX = "berth-"
LOCAL_DRIVER = "local"
# The local driver's network file systems: the node's kernel mounts a server the task names.
NETWORK_TYPES = frozenset({"nfs", "nfs4", "cifs", "smb3"})
# The local driver's network and memory file systems: their `device` is no path of the node.
_REMOTE_TYPES = NETWORK_TYPES | {"tmpfs"}
# The local driver's options (anything else the driver refuses itself).
_LOCAL_OPTION_KEYS = frozenset({"type", "o", "device"})
# mount(2) flags a bind may carry: none names a path or another file system.
_BIND_FLAGS = frozenset(
    {"bind", "rbind", "ro", "rw", "nosuid", "nodev", "noexec", "noatime", "nodiratime", "relatime"}
    | {"private", "rprivate", "slave", "rslave", "shared", "rshared"}
)
# tmpfs options with a bounded meaning (no path): size and inode count, mode and owner.
_TMPFS_OPTIONS = frozenset({"size", "nr_inodes", "mode", "uid", "gid"})
_TMPFS_REST = "nr_inodes, mode, uid, gid"
MAX_TMPFS_BYTES = 64 << 30
_TMPFS_SIZE = re.compile(r"([0-9]{1,15})([kmg]?)")
_TMPFS_NUMBER = re.compile(r"[0-9]{1,10}")

# An EFS file system id: "fs-" and 8 or 17 hex digits (a little slack for the future).
_EFS_FILE_SYSTEM_ID = re.compile(r"fs-[0-9a-f]{8,40}")
TRANSIT_ENCRYPTION_REFUSAL = (
    "Berth mounts EFS as plain NFS (TLS needs Amazon's efs-utils mount helper, which Berth does not run): "
    "set DISABLED, or mount the file system yourself"
)
ACCESS_POINT_REFUSAL = (
    "an EFS access point needs Amazon's efs-utils mount helper, which Berth does not run, and "
    "mounting without it would grant more than the access point does: set rootDirectory to the "
    "access point's directory instead"
)
FSX_REFUSAL = "FSx for Windows File Server volumes need Windows hosts: Berth runs Linux hosts"
CONFIGURED_AT_LAUNCH_REFUSAL = (
    "a volume configured at launch is attached by ECS (Amazon EBS) when a task runs: "
    "Berth has nothing to attach; declare a host or Docker volume instead"
)
AUTOPROVISION_NOTE = "dockerVolumeConfiguration.autoprovision is only used with scope shared (ignored)"


class _MountPoint(EcsModel):
    source_volume: str = Field(alias="sourceVolume", max_length=MAX_VOLUME_NAME_LENGTH)
    container_path: str = Field(alias="containerPath", max_length=MAX_PATH_LENGTH)
    read_only: bool = Field(default=False, alias="readOnly")


class _VolumeFrom(EcsModel):
    source_container: str = Field(alias="sourceContainer", max_length=255)
    read_only: bool = Field(default=False, alias="readOnly")


class ContainerStorage(EcsModel):
    """A container's `mountPoints` and `volumesFrom`: types and bounds (meaning: check_storage)."""

    mount_points: list[_MountPoint] = Field(
        default_factory=list, alias="mountPoints", max_length=MAX_MOUNT_POINTS
    )
    volumes_from: list[_VolumeFrom] = Field(
        default_factory=list, alias="volumesFrom", max_length=MAX_VOLUMES_FROM
    )

    @classmethod
    def take(cls, raw: dict[str, Any]) -> tuple[ContainerStorage, dict[str, Any]]:
        """Split a container definition: these fields (validated), and every other field."""
        mine = {key: value for key, value in raw.items() if key in CONTAINER_FIELDS}
        rest = {key: value for key, value in raw.items() if key not in CONTAINER_FIELDS}
        return cls.model_validate(mine), rest

    def apply(self, c: pb.ContainerDefinition, where: str) -> None:
        """Write these fields into the container definition (container paths normalized)."""
        c.mount_points.extend(
            pb.MountPoint(
                source_volume=m.source_volume,
                container_path=normal_path(f"{where}.mountPoints[{i}].containerPath", m.container_path),
                read_only=m.read_only,
            )
            for i, m in enumerate(self.mount_points)
        )
        c.volumes_from.extend(
            pb.VolumeFrom(source_container=v.source_container, read_only=v.read_only)
            for v in self.volumes_from
        )


class _Host(EcsModel):
    source_path: str | None = Field(default=None, alias="sourcePath", max_length=MAX_PATH_LENGTH)


class _DockerVolumeConfiguration(EcsModel):
    scope: Literal["task", "shared"] = "task"
    autoprovision: bool = False
    driver: str = Field(default="", max_length=MAX_DRIVER_LENGTH)
    driver_opts: dict[str, str] = Field(default_factory=dict, alias="driverOpts", max_length=MAX_OPTIONS)
    labels: dict[str, str] = Field(default_factory=dict, max_length=MAX_OPTIONS)


class _EfsAuthorization(EcsModel):
    access_point_id: str = Field(default="", alias="accessPointId", max_length=64)
    iam: Literal["ENABLED", "DISABLED"] | None = None


class _EfsVolumeConfiguration(EcsModel):
    file_system_id: str = Field(alias="fileSystemId", max_length=64)
    root_directory: str = Field(default="", alias="rootDirectory", max_length=MAX_PATH_LENGTH)
    transit_encryption: Literal["ENABLED", "DISABLED"] | None = Field(default=None, alias="transitEncryption")
    transit_encryption_port: int = Field(default=0, alias="transitEncryptionPort", ge=0, le=65535)
    authorization_config: _EfsAuthorization | None = Field(default=None, alias="authorizationConfig")


class _Volume(EcsModel):
    name: str = Field(max_length=MAX_VOLUME_NAME_LENGTH)
    host: _Host | None = None
    docker_volume_configuration: _DockerVolumeConfiguration | None = Field(
        default=None, alias="dockerVolumeConfiguration"
    )
    efs_volume_configuration: _EfsVolumeConfiguration | None = Field(
        default=None, alias="efsVolumeConfiguration"
    )
    # AWS's own: typed loosely here, refused below with the reason.
    fsx_windows_file_server_configuration: dict[str, Any] | None = Field(
        default=None, alias="fsxWindowsFileServerConfiguration"
    )
    configured_at_launch: bool = Field(default=False, alias="configuredAtLaunch")


def _without_nulls(value: Any, depth: int = 3) -> Any:
    """Explicit nulls read as absent (describe output is full of them), down to `depth` levels;
    deeper input is left to the schema."""
    if depth <= 0:
        return value
    if isinstance(value, dict):
        return {k: _without_nulls(v, depth - 1) for k, v in value.items() if v is not None}
    return value


def parse_volumes(raw: Any, notes: list[str]) -> list[pb.Volume]:
    """The document's `volumes` as messages (paths normalized); notes for the user go to `notes`."""
    if not isinstance(raw, list):
        raise InvalidArgument("volumes must be a JSON array of objects")
    if len(raw) > MAX_VOLUMES:
        raise InvalidArgument(f"volumes has {len(raw)} entries: the limit is {MAX_VOLUMES}")
    volumes = []
    for i, item in enumerate(raw):
        where = f"volumes[{i}]"
        if not isinstance(item, dict):
            raise InvalidArgument(f"{where}: expected a JSON object")
        try:
            model = _Volume.model_validate(_without_nulls(item))
        except ValidationError as error:
            raise one_line(error, where) from None
        volumes.append(_volume_to_proto(model, where, notes))
    return volumes


def _volume_to_proto(model: _Volume, where: str, notes: list[str]) -> pb.Volume:
    if model.fsx_windows_file_server_configuration is not None:
        raise InvalidArgument(f"{where}.fsxWindowsFileServerConfiguration is refused: {FSX_REFUSAL}")
    if model.configured_at_launch:
        raise InvalidArgument(f"{where}.configuredAtLaunch is refused: {CONFIGURED_AT_LAUNCH_REFUSAL}")
    volume = pb.Volume(name=model.name)
    source = model.host.source_path if model.host is not None else None
    config = model.docker_volume_configuration
    efs = model.efs_volume_configuration
    if sum(kind for kind in (bool(source), config is not None, efs is not None)) > 1:
        raise InvalidArgument(f"{where}: {_ONE_KIND}")
    if source:
        # An absent or empty sourcePath is ECS's empty volume: nothing of the host is mounted.
        volume.host.source_path = normal_path(f"{where}.host.sourcePath", source)
    if config is not None:
        if config.autoprovision and config.scope == "task":
            notes.append(f"{where}.{AUTOPROVISION_NOTE}")
        volume.docker_volume_configuration.CopyFrom(
            pb.VolumeDockerConfiguration(
                scope=pb.VOLUME_SCOPE_SHARED if config.scope == "shared" else pb.VOLUME_SCOPE_TASK,
                autoprovision=config.autoprovision,
                driver=config.driver,
                driver_opts=config.driver_opts,
                labels=config.labels,
            )
        )
    if efs is not None:
        volume.efs_volume_configuration.CopyFrom(_efs_to_proto(efs, f"{where}.efsVolumeConfiguration"))
        notes.append(efs_note(volume.efs_volume_configuration, f"{where}.efsVolumeConfiguration"))
    return volume


_ONE_KIND = "set one of host.sourcePath, dockerVolumeConfiguration and efsVolumeConfiguration"


def _efs_to_proto(efs: _EfsVolumeConfiguration, where: str) -> pb.VolumeEfsConfiguration:
    authorization = efs.authorization_config
    message = pb.VolumeEfsConfiguration(
        file_system_id=efs.file_system_id,
        root_directory=normal_path(f"{where}.rootDirectory", efs.root_directory)
        if efs.root_directory
        else "",
        transit_encryption_port=efs.transit_encryption_port,
    )
    if efs.transit_encryption is not None:
        # Kept as written (ENABLED or DISABLED), so describe shows it again.
        message.transit_encryption = efs.transit_encryption == "ENABLED"
    if authorization is not None:
        message.authorization_config.iam = authorization.iam == "ENABLED"
        message.authorization_config.access_point_id = authorization.access_point_id
    _check_efs(where, message)  # what the file may not ask for, refused as for a gRPC client
    return message


def efs_note(efs: pb.VolumeEfsConfiguration, where: str) -> str:
    """What Berth does with an EFS volume, said at registration."""
    not_applied = [name for name, asked in (("IAM authorization", efs.authorization_config.iam),) if asked]
    note = (
        f"{where}: Berth mounts {efs.file_system_id}.efs.REGION.amazonaws.com:{efs.root_directory or '/'} "
        "over NFSv4.1 from the node (REGION: the agent's --aws-region or AWS_REGION); the node must "
        "reach the file system's mount targets"
    )
    if not_applied:
        note += f"; not applied: {', '.join(not_applied)}"
    return note


# -- paths -------------------------------------------------------------------


def normal_path(where: str, path: str) -> str:
    """An absolute path without '.', '..' or repeated '/' (refused: '..', relative paths, and
    ':', ',' and control characters, which Docker's mount syntax cannot carry)."""
    if (
        not path.startswith("/")
        or len(path) > MAX_PATH_LENGTH
        or not path.isprintable()
        or any(c in path for c in ":,\0")
        or ".." in path.split("/")
    ):
        raise InvalidArgument(
            f"{where} {shown(path)} is invalid: use an absolute path without '..', ':', ',' "
            f"or control characters, up to {MAX_PATH_LENGTH} characters"
        )
    return "/" + "/".join(part for part in path.split("/") if part not in ("", "."))


def path_components(path: str) -> tuple[str, ...]:
    """A normalized absolute path's components: '/' is (), '/srv/data' is ('srv', 'data')."""
    return tuple(part for part in path.split("/") if part)


def _check_normal(where: str, path: str) -> None:
    normal = normal_path(where, path)
    if normal != path:
        raise InvalidArgument(f"{where} {shown(path)} is not normalized: write it as {shown(normal)}")


# -- meaning -----------------------------------------------------------------


def _check_options(where: str, options: Any, labels: bool) -> None:
    if len(options) > MAX_OPTIONS:
        raise InvalidArgument(f"{where} has {len(options)} entries: the limit is {MAX_OPTIONS}")
    for key, value in options.items():
        if len(key) > MAX_OPTION_KEY_LENGTH or not _OPTION_KEY.fullmatch(key):
            raise InvalidArgument(
                f"{where}: key {shown(key)} is invalid: use up to {MAX_OPTION_KEY_LENGTH} letters, digits, "
                "'_', '.' and '-', starting with a letter or digit"
            )
        if labels and key.lower().startswith(_BERTH_LABELS):
            raise InvalidArgument(
                f"{where}: key {shown(key)} is reserved: labels starting with 'berth.' are Berth's own"
            )
        if len(value) > MAX_OPTION_VALUE_LENGTH or not value.isprintable():
            raise InvalidArgument(
                f"{where}[{shown(key)}]: the value must be at most {MAX_OPTION_VALUE_LENGTH} characters, "
                "without control characters"
            )


def _check_volume(where: str, volume: pb.Volume) -> None:
    if not _VOLUME_NAME.fullmatch(volume.name):
        raise InvalidArgument(
            f"{where}.name {shown(volume.name)} is invalid: use 1-{MAX_VOLUME_NAME_LENGTH} letters, "
            "digits, '_' and '-'"
        )
    kinds = (
        volume.HasField("host"),
        volume.HasField("docker_volume_configuration"),
        volume.HasField("efs_volume_configuration"),
    )
    if sum(kinds) > 1:
        raise InvalidArgument(f"{where}: {_ONE_KIND}")
    if volume.HasField("host") and volume.host.source_path:
        _check_normal(f"{where}.host.sourcePath", volume.host.source_path)
    if volume.HasField("efs_volume_configuration"):
        _check_efs(f"{where}.efsVolumeConfiguration", volume.efs_volume_configuration)
    if not volume.HasField("docker_volume_configuration"):
        return
    config = volume.docker_volume_configuration
    here = f"{where}.dockerVolumeConfiguration"
    if config.scope not in pb.VolumeScope.values():
        raise InvalidArgument(f"{here}.scope {config.scope} is unknown: use task or shared")
    if config.scope == pb.VOLUME_SCOPE_SHARED and not _DOCKER_VOLUME_NAME.fullmatch(volume.name):
        raise InvalidArgument(
            f"{where}.name {shown(volume.name)} is invalid for scope shared: the node's Docker volume "
            "takes this name, and Docker's names start with a letter or digit"
        )
    if config.scope == pb.VOLUME_SCOPE_SHARED and volume.name.lower().startswith(RESERVED_VOLUME_PREFIX):
        raise InvalidArgument(
            f"{where}.name {shown(volume.name)} is reserved for scope shared: names starting with "
            f"{RESERVED_VOLUME_PREFIX!r} are Berth's own task volumes"
        )
    if config.driver and not DRIVER_NAME.fullmatch(config.driver):
        raise InvalidArgument(
            f"{here}.driver {shown(config.driver)} is invalid: use a Docker volume driver name "
            f"(letters, digits, '_', '.', ':', '/', '-'; up to {MAX_DRIVER_LENGTH})"
        )
    _check_options(f"{here}.driverOpts", config.driver_opts, labels=False)
    _check_options(f"{here}.labels", config.labels, labels=True)
    device = local_device(config)
    if device is not None:
        _check_normal(f"{here}.driverOpts.device", device)


def _check_efs(where: str, efs: pb.VolumeEfsConfiguration) -> None:
    if not _EFS_FILE_SYSTEM_ID.fullmatch(efs.file_system_id):
        raise InvalidArgument(
            f"{where}.fileSystemId {shown(efs.file_system_id)} is invalid: write an EFS file system id "
            "(fs- and hex digits, e.g. fs-0123456789abcdef0)"
        )
    if efs.root_directory:
        _check_normal(f"{where}.rootDirectory", efs.root_directory)
    if efs.transit_encryption_port > 65535:
        raise InvalidArgument(f"{where}.transitEncryptionPort {efs.transit_encryption_port} is not a port")
    if efs.transit_encryption:
        raise InvalidArgument(f"{where}.transitEncryption ENABLED is refused: {TRANSIT_ENCRYPTION_REFUSAL}")
    if efs.authorization_config.access_point_id:
        raise InvalidArgument(f"{where}.authorizationConfig.accessPointId is refused: {ACCESS_POINT_REFUSAL}")


def local_device(config: pb.VolumeDockerConfiguration) -> str | None:
    """The node's path a local-driver volume mounts (a bind, or a block device's file system),
    None when it mounts none of the node's paths (a plain volume, NFS, CIFS, tmpfs).

    Docker's local driver passes `type`, `o` and `device` to mount(2): with type none or
    o=bind, `device` is any path of the node, so it is judged like host.sourcePath."""
    if config.driver not in ("", LOCAL_DRIVER):
        return None
    options = config.driver_opts
    device = options.get("device")
    if device is None:
        return None
    kind = options.get("type", "")
    binds = bool({"bind", "rbind"} & {part.strip() for part in options.get("o", "").split(",")})
    if kind in _REMOTE_TYPES and not binds:
        return None
    return device


class LocalUse(enum.Enum):
    """What a Docker volume's driver and options make the node do (the volume-driver policy's input)."""

    PLAIN = "plain"  # Docker's local driver without options: a directory Docker owns
    TMPFS = "tmpfs"  # memory, with bounded options
    BIND = "bind"  # a bind of `device`, a path the host-path policy judges
    NETWORK = "network"  # the node's kernel mounts a server the task names (nfs, cifs)
    OTHER_OPTIONS = "other options"  # another file system type, or options naming paths
    OTHER_DRIVER = "other driver"  # a volume plugin: whatever it does, with the node's privileges


def local_use(config: pb.VolumeDockerConfiguration) -> tuple[LocalUse, str]:
    """How this volume uses the node, and for OTHER_OPTIONS which option says so (one line)."""
    if config.driver not in ("", LOCAL_DRIVER):
        return LocalUse.OTHER_DRIVER, ""
    options = dict(config.driver_opts)
    if not options:
        return LocalUse.PLAIN, ""
    unknown = sorted(set(options) - _LOCAL_OPTION_KEYS)
    if unknown:
        return LocalUse.OTHER_OPTIONS, f"key {shown(unknown[0])} (the local driver takes type, o and device)"
    kind = options.get("type", "")
    parts = [part.strip() for part in options.get("o", "").split(",") if part.strip()]
    if kind in NETWORK_TYPES:
        return LocalUse.NETWORK, ""
    if kind == "tmpfs":
        for part in parts:
            key, _, value = part.partition("=")
            if key not in _TMPFS_OPTIONS or not _bounded_tmpfs_option(key, value):
                return LocalUse.OTHER_OPTIONS, f"o {shown(part)} (tmpfs takes size up to 64g, {_TMPFS_REST})"
        return LocalUse.TMPFS, ""
    if kind in ("", "none") and {"bind", "rbind"} & set(parts) and "device" in options:
        for part in parts:
            if part not in _BIND_FLAGS:
                return LocalUse.OTHER_OPTIONS, f"o {shown(part)} (a bind takes mount flags only)"
        return LocalUse.BIND, ""
    if kind:
        return LocalUse.OTHER_OPTIONS, f"type {shown(kind)}"
    return LocalUse.OTHER_OPTIONS, "without a type (a bind needs o=bind and a device)"


def _bounded_tmpfs_option(key: str, value: str) -> bool:
    if key != "size":
        return bool(_TMPFS_NUMBER.fullmatch(value))
    size = _TMPFS_SIZE.fullmatch(value.lower())
    if size is None:
        return False
    return int(size.group(1)) << {"": 0, "k": 10, "m": 20, "g": 30}[size.group(2)] <= MAX_TMPFS_BYTES


def _check_container_storage(
    where: str, c: pb.ContainerDefinition, volumes: set[str], containers: set[str]
) -> None:
    if len(c.mount_points) > MAX_MOUNT_POINTS:
        raise InvalidArgument(
            f"{where}.mountPoints has {len(c.mount_points)} entries: the limit is {MAX_MOUNT_POINTS}"
        )
    # A tmpfs (linuxParameters) and a volume on one path: Docker refuses the container.
    paths: set[str] = {t.container_path for t in c.linux_parameters.tmpfs}
    for i, mount in enumerate(c.mount_points):
        here = f"{where}.mountPoints[{i}]"
        if mount.source_volume not in volumes:
            raise InvalidArgument(
                f"{here}.sourceVolume {shown(mount.source_volume)} names no volume of the task definition"
                + (f" (volumes: {', '.join(sorted(volumes))})" if volumes else " (it has no volumes)")
            )
        _check_normal(f"{here}.containerPath", mount.container_path)
        if mount.container_path == "/":
            raise InvalidArgument(f"{here}.containerPath must not be '/' (the container's root)")
        if mount.container_path in paths:
            raise InvalidArgument(f"{here}.containerPath {mount.container_path} is mounted twice")
        paths.add(mount.container_path)
    if len(c.volumes_from) > MAX_VOLUMES_FROM:
        raise InvalidArgument(
            f"{where}.volumesFrom has {len(c.volumes_from)} entries: the limit is {MAX_VOLUMES_FROM}"
        )
    sources: set[str] = set()
    for i, source in enumerate(c.volumes_from):
        here = f"{where}.volumesFrom[{i}].sourceContainer"
        name = source.source_container
        if not _CONTAINER_NAME.fullmatch(name) or name not in containers:
            raise InvalidArgument(f"{here} {shown(name)} names no container of the task definition")
        if name == c.name:
            raise InvalidArgument(f"{here} {shown(name)} is this container itself")
        if name in sources:
            raise InvalidArgument(f"{here} {shown(name)} is listed twice")
        sources.add(name)


def _check_no_cycle(containers: Sequence[pb.ContainerDefinition]) -> None:
    """Docker creates a container from the volumes of containers that already exist, so
    volumesFrom must not go round in a circle."""
    sources = {c.name: [v.source_container for v in c.volumes_from] for c in containers}
    done: set[str] = set()
    for i, c in enumerate(containers):
        path: list[str] = []
        _visit(c.name, sources, done, path, f"containerDefinitions[{i}].volumesFrom")


def _visit(name: str, sources: dict[str, list[str]], done: set[str], path: list[str], where: str) -> None:
    if name in done:
        return
    if name in path:
        circle = " -> ".join([*path[path.index(name) :], name])
        raise InvalidArgument(f"{where} goes round in a circle: {circle}")
    path.append(name)
    for source in sources.get(name, []):
        _visit(source, sources, done, path, where)
    path.pop()
    done.add(name)


def check_storage(td: pb.TaskDefinition) -> None:
    """Check volumes, mount points and volumesFrom (every client: the gRPC API too)."""
    if len(td.volumes) > MAX_VOLUMES:
        raise InvalidArgument(f"volumes has {len(td.volumes)} entries: the limit is {MAX_VOLUMES}")
    names: set[str] = set()
    for i, volume in enumerate(td.volumes):
        _check_volume(f"volumes[{i}]", volume)
        if volume.name in names:
            raise InvalidArgument(f"volumes[{i}].name {volume.name} is used by another volume")
        names.add(volume.name)
    containers = {c.name for c in td.container_definitions}
    for i, c in enumerate(td.container_definitions):
        _check_container_storage(f"containerDefinitions[{i}]", c, names, containers)
    _check_no_cycle(td.container_definitions)


def host_paths(td: pb.TaskDefinition) -> list[tuple[str, str]]:
    """Every path of the node this definition binds, as (field, path): host.sourcePath, and
    the device of a local-driver volume that binds one (see local_device). With the default
    volume-driver policy (see local_use) nothing else of the node can be mounted; a driver or
    local options the operator allows beyond it may reach more, on the operator's trust."""
    found = []
    for i, volume in enumerate(td.volumes):
        if volume.HasField("host") and volume.host.source_path:
            found.append((f"volumes[{i}].host.sourcePath", volume.host.source_path))
        if volume.HasField("docker_volume_configuration"):
            device = local_device(volume.docker_volume_configuration)
            if device is not None:
                found.append((f"volumes[{i}].dockerVolumeConfiguration.driverOpts.device", device))
    return found


# -- describe ----------------------------------------------------------------


def volumes_to_ecs(td: pb.TaskDefinition) -> list[dict[str, Any]]:
    """The task's volumes in ECS's JSON: the inverse of parse_volumes."""
    out = []
    for volume in td.volumes:
        item: dict[str, Any] = {"name": volume.name}
        if volume.HasField("host") and volume.host.source_path:
            item["host"] = {"sourcePath": volume.host.source_path}
        if volume.HasField("docker_volume_configuration"):
            config = volume.docker_volume_configuration
            docker: dict[str, Any] = {"scope": "shared" if config.scope == pb.VOLUME_SCOPE_SHARED else "task"}
            if config.autoprovision:
                docker["autoprovision"] = True
            if config.driver:
                docker["driver"] = config.driver
            if config.driver_opts:
                docker["driverOpts"] = dict(sorted(config.driver_opts.items()))
            if config.labels:
                docker["labels"] = dict(sorted(config.labels.items()))
            item["dockerVolumeConfiguration"] = docker
        if volume.HasField("efs_volume_configuration"):
            item["efsVolumeConfiguration"] = _efs_to_ecs(volume.efs_volume_configuration)
        out.append(item)
    return out


def _efs_to_ecs(efs: pb.VolumeEfsConfiguration) -> dict[str, Any]:
    out: dict[str, Any] = {"fileSystemId": efs.file_system_id}
    if efs.root_directory:
        out["rootDirectory"] = efs.root_directory
    if efs.HasField("transit_encryption"):
        out["transitEncryption"] = "ENABLED" if efs.transit_encryption else "DISABLED"
    if efs.transit_encryption_port:
        out["transitEncryptionPort"] = efs.transit_encryption_port
    if efs.HasField("authorization_config"):
        out["authorizationConfig"] = {"iam": "ENABLED" if efs.authorization_config.iam else "DISABLED"}
    return out


def to_ecs(c: pb.ContainerDefinition) -> dict[str, Any]:
    """A container's mountPoints and volumesFrom in ECS's JSON (only those set)."""
    out: dict[str, Any] = {}
    if c.mount_points:
        out["mountPoints"] = [
            {"sourceVolume": m.source_volume, "containerPath": m.container_path, "readOnly": m.read_only}
            for m in c.mount_points
        ]
    if c.volumes_from:
        out["volumesFrom"] = [
            {"sourceContainer": v.source_container, "readOnly": v.read_only} for v in c.volumes_from
        ]
    return out
