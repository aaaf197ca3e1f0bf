"""The cluster's policy on privileged containers (`--allow-privileged`, `--allow-devices`).

Off by default: a task definition asking for `privileged`, `dockerSecurityOptions`,
capabilities beyond Docker's defaults, real-time ulimits, the host's PID or IPC namespace
(pidMode/ipcMode host) or host devices is refused at registration, in one line naming the
flag. berth.taskdef_process.privilege_refusal owns the policy and says why.
"""

from __future__ import annotations

from dataclasses import dataclass

from berth.errors import InvalidArgument
from berth.taskdef_process import privilege_refusal
from berth.v1 import resources_pb2 as pb


@dataclass(frozen=True)
class PrivilegePolicy:
    allow_privileged: bool = False
    allow_devices: bool = False

    def check(self, td: pb.TaskDefinition) -> None:
        reason = privilege_refusal(td, self.allow_privileged, self.allow_devices)
        if reason is not None:
            raise InvalidArgument(reason)
