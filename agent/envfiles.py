"""Environment files on the agent: find, read and parse a task's `environmentFiles`.

Each file named `arn:aws:s3:::BUCKET/KEY.env` is read from the agent's
`--environment-files-dir` as `DIR/BUCKET/KEY.env`. The file is opened one path
segment at a time from a descriptor of DIR, never following a symbolic link
(O_NOFOLLOW), so no link and no rename racing the open can lead outside DIR;
only a regular file of at most MAX_FILE_BYTES is read. A file that is a Berth
secret arrives resolved in the assignment (`environment_file_secrets`, for
this node only); it is parsed the same way and never logged or kept.

Parsing follows ECS's agent: lines are split at "\\n" only (a trailing "\\r"
dropped), never at other Unicode line breaks, so a value cannot carry a second
variable; a line starting with '#' is a comment; a line without '=' is skipped
(Docker's env-file would copy that variable from the agent's own environment,
which a task must never see); a line is split at its first '=' and kept as
written, spaces and quotes included, no escape processing; a line whose name
or value is empty is skipped. Within one file the last line that sets a
variable wins. Berth is stricter than ECS in one way: a name with spaces or
control characters fails the start (it names the line, never echoes it).

Precedence, as in ECS's agent: `environment` (and `secrets`) win over every
file, and among files the first one that sets a variable wins.

Any failure raises StartFailed with one line naming the container, the file
(as registered: BUCKET/KEY, never a host path) and what to fix: the task stops
as TASK_FAILED_TO_START, nothing crashes.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path, PurePosixPath

from agent.runtime.driver import StartFailed
from berth.errors import InvalidArgument
from berth.taskdef_envfiles import relative_path, secret_source
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb

MAX_FILE_BYTES = 256 * 1024
MAX_VARIABLES = 1000  # per container, all its files together
MAX_TOTAL_BYTES = 256 * 1024  # per container: NAME=VALUE of every variable from its files
MAX_NAME_LENGTH = 255
MAX_VALUE_LENGTH = 32_768


def parse(text: str, source: str) -> dict[str, str]:
    """One file's variables, the last line to set one winning (pure); StartFailed on a bad line."""
    variables: dict[str, str] = {}
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.removesuffix("\r")
        if line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.partition("=")
        if not name or not value:
            continue  # ECS's agent skips a line whose name or value is empty
        if len(name) > MAX_NAME_LENGTH or not name.isprintable() or any(ch.isspace() for ch in name):
            # The line is not echoed: a file may be a secret, and a stopped reason is not.
            raise StartFailed(
                f"{source} line {number}: the variable name is invalid: use 1-{MAX_NAME_LENGTH} "
                "characters without spaces or control characters before the '='"
            )
        if len(value) > MAX_VALUE_LENGTH or "\0" in value:
            raise StartFailed(
                f"{source} line {number}: the value must be at most {MAX_VALUE_LENGTH} characters, "
                "without NUL"
            )
        variables[name] = value
    return variables


def merge(files: list[dict[str, str]]) -> dict[str, str]:
    """The variables of a container's files in order, the first file to set one winning (pure)."""
    merged: dict[str, str] = {}
    for variables in files:
        for name, value in variables.items():
            merged.setdefault(name, value)
    return merged


def _open_beneath(root: int, relative: PurePosixPath) -> int:
    """A descriptor of root/relative, each segment opened from its parent without following a
    link; OSError as the kernel says (ELOOP for a link)."""
    parts = relative.parts
    current = root
    try:
        for part in parts[:-1]:
            parent = current
            current = os.open(
                part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent
            )
            if parent != root:
                os.close(parent)
        # O_NONBLOCK: a FIFO placed there must not hang the agent; it is refused by the caller.
        return os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=current)
    finally:
        if current != root:
            os.close(current)


def _why(error: OSError) -> str:
    if error.errno == errno.ENOENT:
        return "does not exist on this host"
    if error.errno in (errno.ELOOP, errno.ENOTDIR):
        return "is, or is under, a symbolic link or a non-directory: links are not followed"
    return f"cannot be opened: {error.strerror or error}"


def read_file(directory: Path, relative: PurePosixPath, source: str) -> str:
    """The text of directory/relative (blocking), opened without following links; StartFailed
    naming the file as registered (BUCKET/KEY), never the host's path."""
    shown = f"the file {relative}"
    try:
        root = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as error:
        raise StartFailed(
            f"{source}: --environment-files-dir cannot be opened: {error.strerror or error}"
        ) from None
    try:
        try:
            fd = _open_beneath(root, relative)
        except (OSError, RuntimeError) as error:
            reason = _why(error) if isinstance(error, OSError) else "cannot be opened"
            raise StartFailed(f"{source}: {shown} {reason}") from None
    finally:
        os.close(root)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StartFailed(f"{source}: {shown} is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except (OSError, RuntimeError) as error:
        raise StartFailed(
            f"{source}: {shown} cannot be read: {getattr(error, 'strerror', None) or error}"
        ) from None
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise StartFailed(f"{source}: {shown} is larger than {MAX_FILE_BYTES // 1024} KiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise StartFailed(f"{source}: {shown} is not UTF-8 text") from None


def _text(directory: Path | None, value: str, resolved: dict[str, str], source: str) -> str:
    try:
        is_secret = secret_source(value) is not None
        relative = None if is_secret else relative_path(value)
    except InvalidArgument as error:  # validated at registration; a record written otherwise
        raise StartFailed(f"{source}: {error}") from None
    if relative is None:
        if value not in resolved:
            raise StartFailed(f"{source}: the control plane sent no value for the secret {value}")
        text = resolved[value]
        if len(text.encode()) > MAX_FILE_BYTES:
            raise StartFailed(f"{source}: the secret is larger than {MAX_FILE_BYTES // 1024} KiB")
        return text
    if directory is None:
        raise StartFailed(f"{source}: an S3 file needs an agent started with --environment-files-dir")
    return read_file(directory, relative, source)


def container_files(
    directory: Path | None, c: pb.ContainerDefinition, resolved: dict[str, str] | None = None
) -> dict[str, str]:
    """One container's variables from its environment files (blocking: run it in a worker thread).

    resolved: the text of its files that are Berth secrets, by the file's value."""
    files = []
    for i, file in enumerate(c.environment_files):
        source = f"container {c.name} environmentFiles[{i}]"
        files.append(parse(_text(directory, file.value, resolved or {}, source), source))
    merged = merge(files)
    if len(merged) > MAX_VARIABLES:
        raise StartFailed(
            f"container {c.name}: its environment files set {len(merged)} variables; "
            f"the limit is {MAX_VARIABLES}"
        )
    total = sum(len(name.encode()) + 1 + len(value.encode()) for name, value in merged.items())
    if total > MAX_TOTAL_BYTES:
        raise StartFailed(
            f"container {c.name}: its environment files set {total // 1024} KiB of variables; "
            f"the limit is {MAX_TOTAL_BYTES // 1024} KiB"
        )
    return merged


def task_files(directory: Path | None, assignment: agent_pb.TaskAssignment) -> dict[str, dict[str, str]]:
    """Each container's variables from its environment files, by container name (blocking)."""
    resolved = {
        group.container: {pair.name: pair.value for pair in group.environment}
        for group in assignment.environment_file_secrets
    }
    return {
        c.name: variables
        for c in assignment.task_definition.container_definitions
        if c.environment_files and (variables := container_files(directory, c, resolved.get(c.name)))
    }


def needs_reading(td: pb.TaskDefinition) -> bool:
    """Some container of the task has environment files (files or secrets)."""
    return any(c.environment_files for c in td.container_definitions)
