"""Berth's one exception tree, and its mapping onto gRPC status codes.

Errors from the libraries underneath (etcd, Docker, gRPC) are translated into
these at the boundary, so callers never have to know which library failed.
"""

from __future__ import annotations

import grpc


class BerthError(Exception):
    """Base of every error Berth raises on purpose; the message is for humans."""

    grpc_code = grpc.StatusCode.INTERNAL


class InvalidArgument(BerthError):
    """The request is malformed; the message says what to fix."""

    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(BerthError):
    grpc_code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(BerthError):
    grpc_code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(BerthError):
    """The request is valid but the cluster's state does not allow it now."""

    grpc_code = grpc.StatusCode.FAILED_PRECONDITION


class Conflict(BerthError):
    """An optimistic-concurrency check lost; retrying on fresh state is safe."""

    grpc_code = grpc.StatusCode.ABORTED


class Unavailable(BerthError):
    """A dependency (etcd, the control plane) cannot be reached right now."""

    grpc_code = grpc.StatusCode.UNAVAILABLE


class ResourceExhausted(BerthError):
    """A quota or rate limit was reached; the message names the setting that raises it."""

    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unauthenticated(BerthError):
    """No valid client certificate (the TLS handshake lets only members through)."""

    grpc_code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(BerthError):
    """A known caller asked for something its identity or role does not allow."""

    grpc_code = grpc.StatusCode.PERMISSION_DENIED


# Why a cluster cannot be deleted yet: distinct types, so the ECS API can name
# ECS's own exception for each (ClusterContains...Exception).
class ClusterHasServices(FailedPrecondition):
    """The cluster still has services (active or draining)."""


class ClusterHasTasks(FailedPrecondition):
    """The cluster still has tasks that are not STOPPED."""


class ClusterHasNodes(FailedPrecondition):
    """The cluster still has nodes (container instances) registered."""


class ServiceNotActive(FailedPrecondition):
    """The service is being deleted (DRAINING): it takes no more changes."""
