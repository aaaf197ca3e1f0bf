"""What the ECS door's handlers work with, and the checks every handler shares.

A handler is `async (backend, params) -> answer`: it reads the request's
parameters (already checked against ECS's model by `protocol.check_input`),
calls the same `controlplane.operations` the gRPC API calls, and shapes the
result with `berth.ecs.shapes`, the functions the CLI's `-o json` prints with.

Berth's own errors may simply leave a handler: the server answers every one in ECS's
words (`errors.translate`). A handler catches one only where it means something
particular there: a NotFound that is a missing service (`call(..., not_found=...)`), or a
reference that becomes a `failures` entry instead of an error.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from berth import tags as tag_rules
from berth.ecs.arns import Arns
from berth.errors import BerthError
from berth.v1 import resources_pb2 as pb
from controlplane.cache import ClusterCache
from controlplane.ecs.errors import translate
from controlplane.ecs.protocol import EcsError, invalid
from controlplane.operations import Operations

Params = dict[str, Any]
Answer = dict[str, Any]

# Launch types whose tasks Berth runs on its own hosts: Fargate's task definitions and
# services are accepted unchanged, so leaving AWS needs no rewrite; they run as EC2's do,
# and are shown as EC2 (so a launchType filter of anything else matches nothing).
LAUNCH_TYPES = ("EC2", "FARGATE", "EXTERNAL")


@dataclass(frozen=True)
class Backend:
    ops: Operations
    cache: ClusterCache
    arns: Arns


Handler = Callable[[Backend, Params], Awaitable[Answer]]


@dataclass(frozen=True)
class Operation:
    """One served ECS operation: the Berth role it needs, its handler, and its parameters.

    `supported` parameters do what ECS documents; `ignored` ones are accepted and have no
    effect on Berth (README lists them, with why); any other parameter ECS's model knows is
    refused by name, so a request never silently means less than it says."""

    role: str
    handler: Handler
    supported: frozenset[str]
    ignored: frozenset[str] = frozenset()
    # When the role depends on what the request acts on (tagging a cluster needs admin, as
    # creating one does): the role for these (checked) parameters.
    role_for: Callable[[Params], str] | None = None

    def required_role(self, params: Params) -> str:
        return self.role_for(params) if self.role_for is not None else self.role


def operation(
    role: str,
    handler: Handler,
    supported: Iterable[str],
    ignored: Iterable[str] = (),
    role_for: Callable[[Params], str] | None = None,
) -> Operation:
    return Operation(role, handler, frozenset(supported), frozenset(ignored), role_for)


def refuse_unsupported(name: str, served: Operation, params: Params) -> None:
    for key in params:
        if key not in served.supported and key not in served.ignored:
            raise invalid(f"Berth does not support the parameter {key} of {name}")


async def call(awaitable: Awaitable[Any], not_found: str = "ClientException") -> Any:
    """Await an operation, turning Berth's errors into ECS's (`not_found`: what NotFound means here)."""
    try:
        return await awaitable
    except BerthError as error:
        raise translate(error, not_found) from None


async def cluster_of(backend: Backend, params: Params) -> str:
    """The request's cluster (a name or an ARN; none: `default`), which must exist."""
    name = backend.arns.cluster_name(params.get("cluster", ""))
    await call(backend.ops.clusters.existing(name), "ClusterNotFoundException")
    return name


def missing(arn: str, reason: str = "MISSING") -> Answer:
    """An entry of ECS's `failures` list."""
    return {"arn": arn, "reason": reason}


def bounded_list(params: Params, key: str, most: int, required: bool = True) -> list[str]:
    values: list[str] = params.get(key, [])
    if required and not values:
        raise invalid(f"{key} must name at least one")
    if len(values) > most:
        raise invalid(f"{key} may name at most {most}, not {len(values)}")
    return values


def tags_of(params: Params) -> list[pb.Tag]:
    """ECS's `tags` ([{key, value}]) read and checked by Berth's one tag policy."""
    return tag_rules.from_document(params.get("tags"))


def check_launch_type(params: Params) -> str:
    launch_type: str = params.get("launchType", "EC2")
    if launch_type not in LAUNCH_TYPES:
        raise invalid(f"launchType must be one of {', '.join(LAUNCH_TYPES)}")
    return launch_type


def wants_tags(params: Params) -> bool:
    return "TAGS" in params.get("include", [])


def unsupported(name: str) -> EcsError:
    return EcsError(
        "UnsupportedFeatureException",
        f"Berth does not serve the ECS operation {name}; see README's ECS-compatible API section "
        "for the operations it serves",
    )
