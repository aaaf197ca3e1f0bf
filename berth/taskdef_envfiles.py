"""ECS's `environmentFiles` of a container definition: parse, bound, check, describe.

ECS loads each file from S3 (`{"value": "arn:aws:s3:::BUCKET/KEY.env", "type":
"s3"}`). Berth reads no S3. A `value` is either

- an S3 object ARN: an agent started with `--environment-files-dir DIR` reads
  `DIR/BUCKET/KEY.env` on its own host (`agent.envfiles`), so operators put the
  files there (synced from S3, or written by configuration management); or
- a Berth secret reference, written as in `secrets[].valueFrom` (a Berth name,
  an SSM parameter or Secrets Manager ARN; `berth.secretnames`): the secret's
  value is the file's text, resolved by the control plane for the task's node
  only, like the container's `secrets`.

`type` stays ECS's only value, "s3". The value is kept as written, so describe
shows it and it registers again unchanged. `relative_path` is the one place
that turns an ARN into a path, and it only yields normalised relative paths:
no empty, "." or ".." segments.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any, Literal

from pydantic import Field

from berth.ecs_schema import EcsModel
from berth.errors import InvalidArgument
from berth.names import shown
from berth.secretnames import SecretSource, parse_reference
from berth.v1 import resources_pb2 as pb

FIELD = "environmentFiles"
MAX_FILES = 10  # ECS: up to ten environment files
MAX_ARN_LENGTH = 1024
_S3 = re.compile(r"arn:aws(?:-cn|-us-gov)?:s3:")
_ARN = re.compile(r"arn:aws(?:-cn|-us-gov)?:s3:::([^/]*)/(.*)")
# S3's bucket names: 3-63 lowercase letters, digits, '.' and '-', starting and ending alphanumeric.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# One segment of an object key, conservatively: S3's "safe" characters.
_SEGMENT = re.compile(r"[A-Za-z0-9_.\-+=@,!()]{1,255}")


class _EnvironmentFile(EcsModel):
    value: str = Field(max_length=MAX_ARN_LENGTH)
    type: Literal["s3"]


class EnvironmentFiles(EcsModel):
    """The JSON schema of `environmentFiles`: types and bounds (meaning: check_environment_files)."""

    files: list[_EnvironmentFile] = Field(
        default_factory=list, alias="environmentFiles", max_length=MAX_FILES
    )

    @classmethod
    def take(cls, raw: dict[str, Any]) -> tuple[EnvironmentFiles, dict[str, Any]]:
        """Split a container definition: its environmentFiles (validated), and every other field."""
        rest = {key: value for key, value in raw.items() if key != FIELD}
        return cls.model_validate({FIELD: raw.get(FIELD, [])}), rest

    def apply(self, c: pb.ContainerDefinition) -> None:
        c.environment_files.extend(pb.EnvironmentFile(value=f.value, type=f.type) for f in self.files)


def relative_path(value: str) -> PurePosixPath:
    """BUCKET/KEY of an S3 ARN, normalised and relative, or InvalidArgument."""
    matched = _ARN.fullmatch(value) if len(value) <= MAX_ARN_LENGTH else None
    if matched is None:
        raise InvalidArgument(
            f"{shown(value[:300])} is not an S3 object ARN: write arn:aws:s3:::BUCKET/PATH/FILE.env"
        )
    bucket, key = matched.group(1), matched.group(2)
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise InvalidArgument(f"{shown(value[:300])}: the bucket name {shown(bucket[:100])} is invalid")
    segments = key.split("/")
    if any(not _SEGMENT.fullmatch(part) or part in (".", "..") for part in segments):
        raise InvalidArgument(
            f"{shown(value[:300])}: the object key must be path segments of letters, digits and "
            "'_.-+=@,!()', none empty, '.' or '..'"
        )
    if not key.endswith(".env") or segments[-1] == ".env":
        raise InvalidArgument(f"{shown(value[:300])}: the file must have the .env extension, as in ECS")
    return PurePosixPath(bucket, *segments)


def secret_source(value: str) -> SecretSource | None:
    """The Berth secret a value names, or None for an S3 ARN (a file on the agent's host);
    InvalidArgument if it is neither."""
    if _S3.match(value):
        return None
    try:
        return parse_reference(value)
    except InvalidArgument as error:
        if value.startswith("arn:"):
            raise
        raise InvalidArgument(
            f"{shown(value[:300])} is neither an S3 object ARN (arn:aws:s3:::BUCKET/PATH/FILE.env) nor "
            "a Berth secret (a secret name, or an SSM parameter / Secrets Manager ARN)"
        ) from error


def names_secrets(c: pb.ContainerDefinition) -> bool:
    """Some of the container's environment files are Berth secrets."""
    return any(_S3.match(f.value) is None for f in c.environment_files)


def check_environment_files(where: str, c: pb.ContainerDefinition) -> None:
    """Check one container's environmentFiles (every client: the gRPC API too)."""
    if len(c.environment_files) > MAX_FILES:
        raise InvalidArgument(
            f"{where}.environmentFiles has {len(c.environment_files)} files: "
            f"the limit is {MAX_FILES}, as in ECS"
        )
    for i, file in enumerate(c.environment_files):
        here = f"{where}.environmentFiles[{i}]"
        if file.type != "s3":
            raise InvalidArgument(f"{here}.type {shown(file.type[:64])} is invalid: the only type is s3")
        try:
            if secret_source(file.value) is None:
                relative_path(file.value)
        except InvalidArgument as error:
            raise InvalidArgument(f"{here}.value: {error}") from None


def notes(where: str, c: pb.ContainerDefinition) -> list[str]:
    """Where each file will be read, said at registration."""
    said = []
    for i, file in enumerate(c.environment_files):
        source = secret_source(file.value)
        said.append(
            f"{where}.environmentFiles[{i}]: Berth reads no S3; each agent reads "
            f"--environment-files-dir/{relative_path(file.value)} on its own host when the task starts"
            if source is None
            else f"{where}.environmentFiles[{i}]: read from the Berth secret {source.name}"
            f"{f' (its JSON key {source.json_key})' if source.json_key else ''} when the task starts"
        )
    return said


def to_ecs(c: pb.ContainerDefinition) -> dict[str, Any]:
    """The environmentFiles as registered, in ECS's JSON."""
    if not c.environment_files:
        return {}
    return {FIELD: [{"value": f.value, "type": f.type} for f in c.environment_files]}
