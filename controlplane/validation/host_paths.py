"""The cluster's host-path policy (`--allow-host-path PREFIX`, repeatable; none by default),
and `HostPathPolicy`, which judges it with the volume-driver policy (volume_drivers).

A host path reaches the node itself (its files, its Docker socket, its keys), so a task
definition may mount one only under a prefix the operator configured. Judged at
registration, and again when a task is run or a service created or updated with the
definition (so narrowing the flag also holds back old revisions), for every path
`berth.taskdef_storage.host_paths` finds (a volume's `host.sourcePath`, and the `device` of a
local-driver volume that binds one; with the default volume-driver policy nothing else of the
node can be mounted), by path components: `/srv/data` allows `/srv/data` and `/srv/data/app`,
never `/srv/database`. Paths are normalized before they get here (absolute, no '..'), and
prefixes when the control plane starts. Strings only: a symbolic link on the node is the
agent's to refuse when the task starts (agent.runtime.host_path_links).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from berth.errors import InvalidArgument
from berth.taskdef_storage import host_paths, normal_path, path_components
from berth.v1 import resources_pb2 as pb
from controlplane.validation.volume_drivers import volume_driver_refusal

FLAG = "--allow-host-path"


def normalize_prefixes(prefixes: Iterable[str]) -> tuple[str, ...]:
    """The flag's values, normalized; raises ValueError naming the flag for a bad one."""
    normalized = []
    for prefix in prefixes:
        try:
            normalized.append(normal_path(FLAG, prefix.strip()))
        except InvalidArgument as error:
            raise ValueError(str(error)) from None
    return tuple(dict.fromkeys(normalized))


def under(path: str, prefix: str) -> bool:
    """The path is the prefix or inside it, compared by components ('/' allows every path)."""
    allowed = path_components(prefix)
    return path_components(path)[: len(allowed)] == allowed


def host_path_refusal(td: pb.TaskDefinition, allowed: tuple[str, ...]) -> str | None:
    """Why the policy refuses this task definition, naming the flag; None: it does not."""
    for where, path in host_paths(td):
        if not any(under(path, prefix) for prefix in allowed):
            if not allowed:
                return (
                    f"{where} {path} is refused by the host-path policy: the control plane allows no "
                    f"host paths (start it with {FLAG} PREFIX)"
                )
            return (
                f"{where} {path} is refused by the host-path policy: it is under none of "
                f"{', '.join(allowed)} ({FLAG})"
            )
    return None


@dataclass(frozen=True)
class HostPathPolicy:
    """What of the node a task definition may mount: host paths and volume drivers."""

    # Normalized absolute prefixes (normalize_prefixes); empty: no host path at all.
    allowed: tuple[str, ...] = ()
    # Volume drivers allowed with any options (--allow-volume-driver).
    volume_drivers: tuple[str, ...] = ()
    # The local driver's nfs/cifs types (--allow-network-volumes).
    network_volumes: bool = False

    def check(self, td: pb.TaskDefinition) -> None:
        """Raise InvalidArgument naming the policy and its flag (registration, run, service)."""
        reason = volume_driver_refusal(td, self.volume_drivers, self.network_volumes) or host_path_refusal(
            td, self.allowed
        )
        if reason is not None:
            raise InvalidArgument(reason)
