"""How a service rolls when no deployment configuration is stored: ECS's defaults, and
Berth's own for what ECS has no field for. One home for the control plane (which applies
them), the CLI (which shows them) and the ECS shapes (which return them)."""

from __future__ import annotations

from berth.v1 import resources_pb2 as pb

DEFAULT_MINIMUM_HEALTHY_PERCENT = 100
DEFAULT_MAXIMUM_PERCENT = 200
DEFAULT_DEREGISTRATION_DELAY = 5


def defaults() -> pb.DeploymentConfiguration:
    return pb.DeploymentConfiguration(
        minimum_healthy_percent=DEFAULT_MINIMUM_HEALTHY_PERCENT,
        maximum_percent=DEFAULT_MAXIMUM_PERCENT,
        circuit_breaker=True,
        rollback=True,
        deregistration_delay=DEFAULT_DEREGISTRATION_DELAY,
        rebalance=True,
    )


def configuration(service: pb.Service) -> pb.DeploymentConfiguration:
    """The service's configuration; the defaults for records written before it existed."""
    if service.HasField("deployment_configuration"):
        return service.deployment_configuration
    return defaults()
