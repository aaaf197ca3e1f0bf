"""Environment files on the agent: find, read and parse a task's `environmentFiles`.

Each file named `arn:aws:s3:::BUCKET/KEY.env` is read from the agent's
`--environment-files-dir` as `DIR/BUCKET/KEY.env`. The path is resolved
(symbolic links followed) and must stay under DIR; only a regular file of at
most MAX_FILE_BYTES is read. A file that is a Berth secret arrives resolved
in the assignment (`environment_file_secrets`, for this node only); it is
parsed the same way and never logged or kept. Parsing follows ECS: one `VARIABLE=VALUE` per
line, split at the first '='; blank lines and lines starting with '#' are
skipped; no quote or escape processing. A line without '=' is skipped as
ECS's agent skips it (Docker's env-file would copy that variable from the
agent's own environment, which a task must never see).

Precedence, as in ECS: `environment` (and `secrets`) win over every file, and
among files the first one that sets a variable wins.

Any failure raises StartFailed with one line naming the container, the file
and what to fix: the task stops as TASK_FAILED_TO_START, nothing crashes.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from agent.runtime.driver import StartFailed
from berth.errors import InvalidArgument
from berth.taskdef_envfiles import relative_path, secret_source
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb

MAX_FILE_BYTES = 256 * 1024
MAX_VARIABLES = 1000  # per container, all its files together
MAX_NAME_LENGTH = 255
MAX_VALUE_LENGTH = 32_768


def parse(text: str, source: str) -> list[tuple[str, str]]:
    """The (name, value) pairs of one file's text, in order (pure); StartFailed on a bad line."""
    pairs = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.partition("=")
        if (
            not name
            or len(name) > MAX_NAME_LENGTH
            or not name.isprintable()
            or any(ch.isspace() for ch in name)
        ):
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
        pairs.append((name, value))
    return pairs


def merge(files: list[list[tuple[str, str]]]) -> dict[str, str]:
    """The variables of a container's files in order, the first file to set one winning (pure)."""
    merged: dict[str, str] = {}
    for pairs in files:
        for name, value in pairs:
            merged.setdefault(name, value)
    return merged


def _read(path: Path, source: str) -> str:
    try:
        # O_NONBLOCK: a FIFO placed there must not hang the agent; it is refused below.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise StartFailed(f"{source}: the file {path} does not exist on this host") from None
    except OSError as error:
        raise StartFailed(f"{source}: the file {path} cannot be opened: {error.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StartFailed(f"{source}: {path} is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise StartFailed(f"{source}: the file {path} cannot be read: {error.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise StartFailed(f"{source}: the file {path} is larger than {MAX_FILE_BYTES // 1024} KiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise StartFailed(f"{source}: the file {path} is not UTF-8 text") from None


def locate(directory: Path, value: str, source: str) -> Path:
    """The file an ARN names under directory, resolved; StartFailed if it leaves the directory."""
    try:
        relative = relative_path(value)
    except InvalidArgument as error:  # validated at registration; a record written otherwise
        raise StartFailed(f"{source}: {error}") from None
    root = directory.resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise StartFailed(f"{source}: {relative} leads outside --environment-files-dir")
    return path


def _text(directory: Path | None, value: str, resolved: dict[str, str], source: str) -> str:
    try:
        is_secret = secret_source(value) is not None
    except InvalidArgument as error:  # validated at registration; a record written otherwise
        raise StartFailed(f"{source}: {error}") from None
    if is_secret:
        if value not in resolved:
            raise StartFailed(f"{source}: the control plane sent no value for the secret {value}")
        text = resolved[value]
        if len(text.encode()) > MAX_FILE_BYTES:
            raise StartFailed(f"{source}: the secret is larger than {MAX_FILE_BYTES // 1024} KiB")
        return text
    if directory is None:
        raise StartFailed(f"{source}: an S3 file needs an agent started with --environment-files-dir")
    return _read(locate(directory, value, source), source)


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
