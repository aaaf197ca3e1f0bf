"""Secret names: how a `valueFrom` written for ECS names a Berth secret.

Berth keeps secrets under path-like names of its own. ECS users name them
the way AWS does; every form below maps to one Berth name, both in a task
definition's `secrets[].valueFrom` and in `berth secret put NAME`:

    written (valueFrom or NAME)                                   Berth name
    db-password                                                   db-password
    /app/DB_PASSWORD            (a bare SSM parameter name)       /app/DB_PASSWORD
    DB_PASSWORD                 (a flat SSM parameter name)       DB_PASSWORD
    arn:aws:ssm:REGION:ACCOUNT:parameter/app/DB_PASSWORD          /app/DB_PASSWORD
    arn:aws:ssm:REGION:ACCOUNT:parameter/DB_PASSWORD              DB_PASSWORD
    arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME-AbCdEf      NAME
    arn:aws:secretsmanager:...:secret:NAME-AbCdEf:KEY::           NAME, then the JSON value's KEY

An SSM ARN drops the leading "/" of a hierarchical name (AWS writes
`parameter/app/X` for `/app/X`), so it is put back; a flat name has none.
A Secrets Manager ARN ends its name with "-" and six random characters that
AWS adds; they are dropped. ECS's suffix `:json-key:version-stage:version-id`
is understood: a json-key takes that key of a secret whose value is a JSON
object; Berth keeps one current version of each secret, so a version stage
other than empty or AWSCURRENT, or any version id, is refused. Any partition
(aws, aws-cn, aws-us-gov), region and account are accepted and ignored.

A Berth name is 1-255 characters: letters, digits and `_ . - / + = @`,
without empty, "." or ".." path segments (so "a//b" and "a/../b" are refused)
and without a trailing "/". A ":" is never part of a name, so an ARN can
never be mistaken for one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from berth.errors import InvalidArgument
from berth.names import shown

MAX_NAME_LENGTH = 255
MAX_REFERENCE_LENGTH = 2048  # ECS: an ARN with its suffix stays far below this
_NAME = re.compile(r"[A-Za-z0-9_.\-/+=@]{1,255}")
_ARN = re.compile(r"arn:(aws[a-z-]*):(ssm|secretsmanager):([a-z0-9-]*):([0-9]*):(.*)")
_RANDOM_SUFFIX = re.compile(r"-[A-Za-z0-9]{6}")
_JSON_KEY = re.compile(r"[^\x00-\x1f:]{1,255}")
CURRENT_STAGE = "AWSCURRENT"


@dataclass(frozen=True)
class SecretSource:
    """Where a value comes from: the Berth secret's name, and a JSON key of it (empty: all)."""

    name: str
    json_key: str = ""


def check_name(name: str) -> str:
    """A Berth secret name, valid as it stands (see the module docstring), or InvalidArgument."""
    if (
        not _NAME.fullmatch(name)
        or name.endswith("/")
        or any(part in ("", ".", "..") for part in name.lstrip("/").split("/"))
    ):
        raise InvalidArgument(
            f"secret name {shown(name[:300])} is invalid: use 1-{MAX_NAME_LENGTH} letters, digits and "
            "'_.-/+=@', path segments not empty, '.' or '..', or an SSM / Secrets Manager ARN"
        )
    return name


def parse_reference(written: str) -> SecretSource:
    """The secret a `valueFrom` (or `berth secret put NAME`) names, or InvalidArgument."""
    if len(written) > MAX_REFERENCE_LENGTH:
        raise InvalidArgument(f"a secret reference is at most {MAX_REFERENCE_LENGTH} characters")
    if not written.startswith("arn:"):
        return SecretSource(check_name(written))
    matched = _ARN.fullmatch(written)
    if matched is None:
        raise InvalidArgument(
            f"{shown(written[:300])} is not an SSM parameter or Secrets Manager ARN "
            "(arn:aws:ssm:REGION:ACCOUNT:parameter/NAME or arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME)"
        )
    service, resource = matched.group(2), matched.group(5)
    if service == "ssm":
        return SecretSource(_ssm_name(written, resource))
    return _secrets_manager(written, resource)


def _ssm_name(written: str, resource: str) -> str:
    kind, _, name = resource.partition("/")
    if kind != "parameter" or not name:
        raise InvalidArgument(f"{shown(written[:300])}: an SSM ARN names parameter/NAME")
    return check_name(f"/{name}" if "/" in name else name)


def _secrets_manager(written: str, resource: str) -> SecretSource:
    parts = resource.split(":")
    if parts[0] != "secret" or len(parts) < 2 or len(parts) > 5 or not parts[1]:
        raise InvalidArgument(
            f"{shown(written[:300])}: a Secrets Manager ARN names "
            "secret:NAME[-SUFFIX][:json-key:version-stage:version-id]"
        )
    name = parts[1]
    if _RANDOM_SUFFIX.fullmatch(name[-7:]) and len(name) > 7:
        name = name[:-7]
    json_key, stage, version_id = [*parts[2:], "", "", ""][:3]
    if stage not in ("", CURRENT_STAGE) or version_id:
        raise InvalidArgument(
            f"{shown(written[:300])}: Berth keeps only the current version of a secret: "
            f"leave version-stage empty (or {CURRENT_STAGE}) and version-id empty"
        )
    if json_key and not _JSON_KEY.fullmatch(json_key):
        raise InvalidArgument(f"{shown(written[:300])}: the json-key is invalid")
    return SecretSource(check_name(name), json_key)


def storage_name(written: str) -> str:
    """The name `berth secret put NAME` stores under: any form above, without a json-key."""
    source = parse_reference(written)
    if source.json_key:
        raise InvalidArgument(
            f"{shown(written[:300])} selects the JSON key {source.json_key!r}: put the whole JSON "
            f"value under {source.name} instead"
        )
    return source.name
