"""Symbolic links on the node's paths a task binds: refused when the task starts.

The control plane's host-path policy compares strings (`/srv/data/r` is under `/srv/data`),
but Docker's bind follows the node's symbolic links: a task with a writable mount of an
allowed `/srv/data` can make `/srv/data/r -> /`, and a later definition binding
`/srv/data/r` would get the node's root. So before a task's volumes and containers are
made, every existing component of each path it binds (a volume's host.sourcePath, and a
local-driver volume's bind `device`) is looked at with lstat(2), from `/` down, and a
symbolic link fails the start naming the path as registered (never where the link
points). A missing component ends the walk: Docker creates the rest as directories,
following only the prefix walked here, which has no link.

What remains is a race: a task that can write under the path may swap a directory for a
link between this check and Docker's mount (milliseconds). It needs a task already running
with a writable mount of the same tree, and the winner gets only a start in that window.
Closing it would take the agent holding the checked path open (openat2 with
RESOLVE_NO_SYMLINKS, or O_PATH|O_NOFOLLOW per component) and handing Docker that very
directory (a bind of /proc/self/fd/N into a staging directory of the agent's own),
since Docker's API takes a path string and resolves it again itself.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable

from agent.runtime.driver import StartFailed
from berth.taskdef_storage import host_paths
from berth.v1 import resources_pb2 as pb

# lstat(2), a seam for tests.
Lstat = Callable[[str], os.stat_result]


def link_in(path: str, lstat: Lstat = os.lstat) -> str | None:
    """The first existing component of an absolute normalized path that is a symbolic link
    (itself a prefix of the path), or None: no link, or the walk reached a missing component."""
    current = ""
    for part in path.split("/"):
        if not part:
            continue
        current = f"{current}/{part}"
        try:
            mode = lstat(current).st_mode
        except FileNotFoundError:
            return None
        except OSError:
            # Unreadable (EACCES, ENOTDIR): Docker's own mount then fails, saying why.
            return None
        if stat.S_ISLNK(mode):
            return current
    return None


def check_no_links(td: pb.TaskDefinition, lstat: Lstat = os.lstat) -> None:
    """Raise StartFailed when a node path the task binds goes through a symbolic link."""
    for where, path in host_paths(td):
        link = link_in(path, lstat)
        if link is not None:
            raise StartFailed(_refusal(where, path, link))


def _refusal(where: str, path: str, link: str) -> str:
    which = "it is" if link == path else f"its component {link} is"
    return (
        f"CannotCreateContainerError: {where} {path}: {which} a symbolic link on this node, and Berth "
        "binds no symbolic links (the host-path policy judges the path as written)"
    )
