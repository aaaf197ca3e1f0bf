"""ECS ARNs for Berth's objects: formatting them, and reading the name-or-ARN that ECS
requests accept wherever they name a cluster, service, task, task definition or container
instance.

    arn:aws:ecs:REGION:ACCOUNT:cluster/NAME
    arn:aws:ecs:REGION:ACCOUNT:task-definition/FAMILY:REVISION
    arn:aws:ecs:REGION:ACCOUNT:service/CLUSTER/NAME     (old style: service/NAME)
    arn:aws:ecs:REGION:ACCOUNT:task/CLUSTER/ID          (old style: task/ID)
    arn:aws:ecs:REGION:ACCOUNT:container-instance/CLUSTER/ID   (old style: container-instance/ID)
    arn:aws:ecs:REGION:ACCOUNT:container/CLUSTER/TASKID/NAME

Every parser is a validation boundary: the value comes off the wire, so it is bounded in
length, full-matched, and anything else (another kind, another region or account) is one
InvalidArgument line, never another exception. Names are checked only as ECS checks them
(letters, digits, '-' and '_'); the operations behind apply Berth's stricter rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from berth.errors import InvalidArgument
from berth.names import MAX_REVISION, shown

# ECS's own bound on an ARN (and on any identifier field that takes one).
MAX_ARN = 1600
DEFAULT_CLUSTER = "default"

# ECS names: up to 255 letters, digits, hyphens and underscores.
_NAME = re.compile(r"[A-Za-z0-9_-]{1,255}")
# Task and node ids (hex, "node-<hex>", or a name an agent was given).
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")
_REVISION = re.compile(r"[1-9][0-9]{0,7}")
_REGION = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?")
_ACCOUNT = re.compile(r"[0-9]{12}")
# arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE, with the resource's kind before its first '/'.
_ARN = re.compile(r"arn:aws:ecs:([^:]*):([^:]*):([a-z-]+)/(.+)", re.DOTALL)

RESOURCE_KINDS = ("cluster", "service", "task-definition", "task")


def is_arn(value: str) -> bool:
    return value.startswith("arn:")


@dataclass(frozen=True)
class Arns:
    """The region and account every ARN of this control plane names."""

    region: str = "local"
    account: str = "000000000000"

    def __post_init__(self) -> None:
        if not _REGION.fullmatch(self.region):
            raise InvalidArgument(
                f"region {shown(self.region)} is invalid: use lowercase letters, digits and '-'"
            )
        if not _ACCOUNT.fullmatch(self.account):
            raise InvalidArgument(f"account {shown(self.account)} is invalid: use 12 digits")

    # -- formatting ------------------------------------------------------------

    def _arn(self, resource: str) -> str:
        return f"arn:aws:ecs:{self.region}:{self.account}:{resource}"

    def cluster(self, name: str) -> str:
        return self._arn(f"cluster/{name}")

    def task_definition(self, family: str, revision: int) -> str:
        return self._arn(f"task-definition/{family}:{revision}")

    def service(self, cluster: str, name: str) -> str:
        return self._arn(f"service/{cluster}/{name}")

    def task(self, cluster: str, task_id: str) -> str:
        return self._arn(f"task/{cluster}/{task_id}")

    def container_instance(self, cluster: str, node_id: str) -> str:
        return self._arn(f"container-instance/{cluster}/{node_id}")

    def container(self, cluster: str, task_id: str, name: str) -> str:
        return self._arn(f"container/{cluster}/{task_id}/{name}")

    # -- parsing ---------------------------------------------------------------

    def _resource(self, value: str, what: str) -> tuple[str, list[str]]:
        """An ARN of this region and account: its kind and its resource path's parts."""
        if len(value) > MAX_ARN:
            raise InvalidArgument(f"{what} is longer than {MAX_ARN} characters")
        found = _ARN.fullmatch(value)
        if found is None:
            raise InvalidArgument(
                f"{what} {shown(value)} is not an ECS ARN (arn:aws:ecs:REGION:ACCOUNT:KIND/...)"
            )
        region, account, kind, path = found.groups()
        if region != self.region or account != self.account:
            raise InvalidArgument(
                f"{what} {shown(value)} names region {shown(region)} and account {shown(account)}; "
                f"this cluster is region {self.region!r}, account {self.account!r}"
            )
        return kind, path.split("/")

    def _kind(self, value: str, what: str, kind: str) -> list[str]:
        found, parts = self._resource(value, what)
        if found != kind:
            raise InvalidArgument(f"{what} {shown(value)} is a {found} ARN, not a {kind} ARN")
        return parts

    def _checked(self, value: str, what: str, pattern: re.Pattern[str]) -> str:
        if len(value) > MAX_ARN or not pattern.fullmatch(value):
            raise InvalidArgument(
                f"{what} {shown(value)} is invalid: use letters, digits, '-' or '_' (at most 255), or an ARN"
            )
        return value

    def cluster_name(self, value: str) -> str:
        """A cluster's name from its name or ARN; "" is the default cluster."""
        if not value:
            return DEFAULT_CLUSTER
        if not is_arn(value):
            return self._checked(value, "cluster", _NAME)
        parts = self._kind(value, "cluster", "cluster")
        if len(parts) != 1:
            raise InvalidArgument(f"cluster {shown(value)} is not a cluster ARN (cluster/NAME)")
        return self._checked(parts[0], "cluster", _NAME)

    def _in_cluster(
        self, value: str, cluster: str, kind: str, what: str, pattern: re.Pattern[str]
    ) -> tuple[str, str]:
        """(cluster, name) from a name, a new-style ARN (KIND/CLUSTER/NAME: its cluster wins)
        or an old-style one (KIND/NAME: the cluster given)."""
        if not is_arn(value):
            return self.cluster_name(cluster), self._checked(value, what, pattern)
        parts = self._kind(value, what, kind)
        if len(parts) == 1:
            return self.cluster_name(cluster), self._checked(parts[0], what, pattern)
        if len(parts) == 2:
            return self._checked(parts[0], "cluster", _NAME), self._checked(parts[1], what, pattern)
        raise InvalidArgument(f"{what} {shown(value)} is not a {kind} ARN ({kind}/CLUSTER/NAME)")

    def service_name(self, value: str, cluster: str) -> tuple[str, str]:
        """(cluster, service name) from a service name or ARN."""
        return self._in_cluster(value, cluster, "service", "service", _NAME)

    def task_id(self, value: str, cluster: str) -> tuple[str, str]:
        """(cluster, task id) from a task id (or prefix) or ARN."""
        return self._in_cluster(value, cluster, "task", "task", _ID)

    def node_id(self, value: str, cluster: str) -> tuple[str, str]:
        """(cluster, node id) from a container instance id or ARN."""
        return self._in_cluster(value, cluster, "container-instance", "container instance", _ID)

    def task_definition_ref(self, value: str) -> str:
        """ "family" or "family:revision" from either, or from a task definition ARN (which
        always names a revision)."""
        if len(value) > MAX_ARN:
            raise InvalidArgument(f"task definition is longer than {MAX_ARN} characters")
        if is_arn(value):
            parts = self._kind(value, "task definition", "task-definition")
            if len(parts) != 1 or ":" not in parts[0]:
                raise InvalidArgument(
                    f"task definition {shown(value)} is not a task definition ARN "
                    "(task-definition/FAMILY:REVISION)"
                )
            return self._family_revision(parts[0], value)
        if ":" in value:
            return self._family_revision(value, value)
        if not _NAME.fullmatch(value):
            raise InvalidArgument(
                f"task definition {shown(value)} is invalid: write FAMILY, FAMILY:REVISION or an ARN"
            )
        return value

    def _family_revision(self, text: str, value: str) -> str:
        family, _, revision = text.partition(":")
        if not _NAME.fullmatch(family) or not _REVISION.fullmatch(revision) or int(revision) > MAX_REVISION:
            raise InvalidArgument(
                f"task definition {shown(value)} is invalid: write FAMILY, FAMILY:REVISION "
                f"(revision 1-{MAX_REVISION}) or an ARN"
            )
        return text

    def resource(self, arn: str) -> tuple[str, str, str]:
        """(kind, cluster, name) of a taggable resource's ARN (new style only, as ECS's
        tagging requires): ("cluster", NAME, NAME), ("service", CLUSTER, NAME),
        ("task", CLUSTER, ID), ("task-definition", "", "FAMILY:REVISION")."""
        kind, parts = self._resource(arn, "resource ARN")
        if kind not in RESOURCE_KINDS:
            raise InvalidArgument(
                f"resource ARN {shown(arn)} is a {kind} ARN; tags go on {', '.join(RESOURCE_KINDS)}"
            )
        if kind == "cluster":
            name = self.cluster_name(arn)
            return kind, name, name
        if kind == "task-definition":
            ref = self.task_definition_ref(arn)
            return kind, "", ref
        if len(parts) != 2:
            raise InvalidArgument(f"resource ARN {shown(arn)} is not a {kind} ARN ({kind}/CLUSTER/NAME)")
        cluster, name = self.service_name(arn, "") if kind == "service" else self.task_id(arn, "")
        return kind, cluster, name
