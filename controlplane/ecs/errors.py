"""Berth's errors in ECS's words: which exception type an ECS client sees for each.

The operations raise Berth's one exception tree (berth.errors); the gRPC door
turns it into status codes, this door into ECS's error types. A `NotFound` means
different things in different calls (ECS says ClusterNotFoundException,
ServiceNotFoundException or "The referenced task was not found."), so the
handler names the type it stands for; everything else maps the same everywhere.
"""

from __future__ import annotations

from berth import errors
from controlplane.ecs.protocol import EcsError

# Most specific first: the Cluster* refusals are FailedPrecondition subclasses.
_TYPES: tuple[tuple[type[errors.BerthError], str, int], ...] = (
    (errors.ClusterHasServices, "ClusterContainsServicesException", 400),
    (errors.ClusterHasTasks, "ClusterContainsTasksException", 400),
    (errors.ClusterHasNodes, "ClusterContainsContainerInstancesException", 400),
    (errors.ServiceNotActive, "ServiceNotActiveException", 400),
    (errors.InvalidArgument, "InvalidParameterException", 400),
    (errors.AlreadyExists, "InvalidParameterException", 400),
    (errors.FailedPrecondition, "ClientException", 400),
    (errors.PermissionDenied, "AccessDeniedException", 400),
    (errors.ResourceExhausted, "LimitExceededException", 400),
    # Lost an optimistic-concurrency race after the store's retries: safe to retry.
    (errors.Conflict, "UpdateInProgressException", 400),
    (errors.Unauthenticated, "UnrecognizedClientException", 403),
    (errors.Unavailable, "ServerException", 500),
)


def translate(error: errors.BerthError, not_found: str = "ClientException") -> EcsError:
    """The ECS error a client gets for `error`; `not_found`: the type a NotFound stands for here."""
    if isinstance(error, errors.NotFound):
        return EcsError(not_found, str(error))
    for kind, error_type, status in _TYPES:
        if isinstance(error, kind):
            return EcsError(error_type, str(error), status)
    return EcsError("ServerException", str(error), 500)
