"""The cluster's volume-driver policy (`--allow-volume-driver NAME`, repeatable, and
`--allow-network-volumes`; by default neither).

A Docker volume's driver runs with the node's privileges: the local driver hands its
`type`, `o` and `device` to mount(2), so `type=overlay,o=lowerdir=/` mounts the node's
root, and `type=nfs,o=addr=127.0.0.1` makes the node's kernel mount whatever server the
task names (its loopback, a management network). By default a task definition may use
Docker's local driver only without options, as a tmpfs with bounded options, or as a bind
whose `device` the host-path policy judges (`berth.taskdef_storage.local_use` sorts them).

- `--allow-network-volumes`: the local driver's nfs, nfs4, cifs and smb3 types.
- `--allow-volume-driver NAME`: that driver with any options; `local` lifts the local
  driver's limits (any type and options; a bind's device is still judged by the host-path
  policy). Either trusts task definitions with what the driver can do on the node.

EFS volumes are network volumes the default allows: the file system is the user's explicit
AWS intent and the agent builds the server's address itself (`FS_ID.efs.REGION.amazonaws.com`),
so a task definition cannot point the mount anywhere else.
"""

from __future__ import annotations

from berth.names import shown
from berth.taskdef_storage import DRIVER_NAME, LOCAL_DRIVER, LocalUse, local_use
from berth.v1 import resources_pb2 as pb

DRIVER_FLAG = "--allow-volume-driver"
NETWORK_FLAG = "--allow-network-volumes"
_DEFAULT = (
    "the default allows only the local driver without options, type tmpfs or a bind of an allowed host path"
)


def normalize_drivers(names: list[str]) -> tuple[str, ...]:
    """The flag's values; raises ValueError naming the flag for a bad one."""
    for name in names:
        if not DRIVER_NAME.fullmatch(name):
            raise ValueError(f"{DRIVER_FLAG} {name!r} is not a Docker volume driver name")
    return tuple(dict.fromkeys(names))


def volume_driver_refusal(
    td: pb.TaskDefinition, drivers: tuple[str, ...] = (), network: bool = False
) -> str | None:
    """Why the policy refuses this task definition, naming the flag that would allow it; None: it does not."""
    for i, volume in enumerate(td.volumes):
        if not volume.HasField("docker_volume_configuration"):
            continue
        config = volume.docker_volume_configuration
        where = f"volumes[{i}].dockerVolumeConfiguration"
        driver = config.driver or LOCAL_DRIVER
        if driver in drivers:
            continue
        use, detail = local_use(config)
        if use is LocalUse.OTHER_DRIVER:
            return (
                f"{where}.driver {driver} is refused by the volume-driver policy: a volume plugin acts with "
                f"the node's privileges ({_DEFAULT}; start the control plane with {DRIVER_FLAG} {driver})"
            )
        if use is LocalUse.NETWORK and not network:
            return (
                f"{where}.driverOpts type {shown(config.driver_opts['type'])} is refused by the "
                "volume-driver policy: a network volume makes the node's kernel mount any server the "
                f"task names (start the control plane with {NETWORK_FLAG})"
            )
        if use is LocalUse.OTHER_OPTIONS:
            return (
                f"{where}.driverOpts {detail} is refused by the volume-driver policy: mount(2) options "
                f"that reach the node ({_DEFAULT}; start the control plane with {DRIVER_FLAG} {LOCAL_DRIVER})"
            )
    return None
