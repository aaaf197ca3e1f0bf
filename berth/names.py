"""Names: validation of the names operators give things, task-definition
references, and the names Berth itself gives (service DNS names, protocols)."""

from __future__ import annotations

import re

from berth.errors import InvalidArgument
from berth.v1 import resources_pb2 as pb

# A revision is at most 8 digits (99,999,999): anything longer is refused before
# int() sees it (int() refuses numbers over 4300 digits with a ValueError).
MAX_REVISION = 99_999_999

# The cluster that always exists: where names that say none belong, and
# where records written before a field named a cluster belong.
DEFAULT_CLUSTER = "default"

_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
# ECS families allow letters, digits, hyphens and underscores, up to 255.
_FAMILY = re.compile(r"[A-Za-z0-9_-]{1,255}")


def shown(value: str, limit: int = 64) -> str:
    """A value quoted for an error message: escaped (one line) and cut to `limit` characters."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


def check_dns_label(kind: str, name: str) -> str:
    """Return name if it is a DNS label (RFC 1123), else raise a one-line error."""
    if not _DNS_LABEL.fullmatch(name):
        raise InvalidArgument(
            f"{kind} name {shown(name)} is not a DNS label: use 1-63 lowercase letters, digits "
            "or '-', starting and ending with a letter or digit"
        )
    return name


def check_family(family: str) -> str:
    if not _FAMILY.fullmatch(family):
        raise InvalidArgument(
            f"task definition family {shown(family)} is invalid: use 1-255 letters, digits, '-' or '_'"
        )
    return family


def parse_task_definition_ref(ref: str) -> tuple[str, int | None]:
    """Split "family" or "family:revision"; revision None means the newest active one."""
    family, sep, revision = ref.partition(":")
    check_family(family)
    if not sep:
        return family, None
    # ASCII digits only: "²".isdigit() is true and int("²") raises.
    if (
        not (0 < len(revision) <= len(str(MAX_REVISION)) and revision.isascii() and revision.isdigit())
        or not 1 <= int(revision) <= MAX_REVISION
    ):
        raise InvalidArgument(
            f"task definition {shown(ref)} is invalid: write FAMILY or FAMILY:REVISION "
            f"with REVISION from 1 to {MAX_REVISION}"
        )
    return family, int(revision)


# Services are named SERVICE.CLUSTER.berth in every host's DNS.
SERVICE_DOMAIN = "berth"


def service_dns_name(service: str, cluster: str) -> str:
    return f"{service}.{cluster}.{SERVICE_DOMAIN}"


def protocol_name(protocol: int) -> str:
    """The protocol as iptables, conntrack and Docker spell it: "tcp" or "udp"."""
    return "udp" if protocol == pb.UDP else "tcp"


def port_text(port: int, protocol: int) -> str:
    """A port as operators write it: "80" for TCP, "53/udp" for UDP."""
    return f"{port}/udp" if protocol == pb.UDP else str(port)


def node_cluster(node: pb.Node) -> str:
    """The cluster a node belongs to ("" in records written before nodes had one: the default)."""
    return node.cluster or DEFAULT_CLUSTER


# ECS's startedBy: up to 128 letters, digits, hyphens and underscores.
_STARTED_BY = re.compile(r"[A-Za-z0-9_-]{0,128}")


def check_started_by(started_by: str) -> str:
    """A task's startedBy ("" when not given), or a one-line error."""
    if not _STARTED_BY.fullmatch(started_by):
        raise InvalidArgument(
            f"startedBy {shown(started_by)} is invalid: use up to 128 letters, digits, '-' or '_'"
        )
    return started_by
