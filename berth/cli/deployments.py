"""A service's deployment settings on the command line (`service create` and
`service update` options into `DeploymentOptions`) and its deployments as
`service describe` shows them."""

from __future__ import annotations

import typer

from berth.cli.client import fail
from berth.cli.output import age
from berth.v1 import operator_pb2 as api
from berth.v1 import resources_pb2 as pb

# Client-side bounds (ECS's, as the control plane enforces them), checked only to
# say what to fix in the option's own words; the control plane validates every
# request again, and the pair (minimum below maximum) against the stored settings.
MIN_HEALTHY_RANGE = (0, 100)
MAX_PERCENT_RANGE = (100, 200)
DEREGISTRATION_RANGE = (0, 3600)

# One definition per option, shared by `create` and `update`; None means "not given".
MinHealthyOption = typer.Option(
    None,
    "--min-healthy-percent",
    metavar="PERCENT",
    help="healthy tasks kept during a deployment, in % of the desired count (0-100; default 100)",
)
MaxPercentOption = typer.Option(
    None,
    "--max-percent",
    metavar="PERCENT",
    help="tasks allowed during a deployment, in % of the desired count (100-200; default 200)",
)
CircuitBreakerOption = typer.Option(
    None,
    "--circuit-breaker/--no-circuit-breaker",
    help="fail a deployment whose tasks keep failing (default: on)",
    show_default=False,
)
RollbackOption = typer.Option(
    None,
    "--rollback/--no-rollback",
    help="when the circuit breaker fails a deployment, return to the last steady one (default: on)",
    show_default=False,
)
DeregistrationDelayOption = typer.Option(
    None,
    "--deregistration-delay",
    metavar="SECONDS",
    help="a task leaves the endpoints this long before it is stopped (0-3600; default 5)",
)
RebalanceOption = typer.Option(
    None,
    "--rebalance/--no-rebalance",
    help="move tasks onto hosts that return or join when the placement spreads (default: on)",
    show_default=False,
)


def _bounded(option: str, value: int | None, bounds: tuple[int, int]) -> int | None:
    low, high = bounds
    if value is not None and not low <= value <= high:
        raise fail(f"{option} {value} is out of range: use {low}-{high}")
    return value


def deployment_options(
    *,
    min_healthy_percent: int | None = None,
    max_percent: int | None = None,
    circuit_breaker: bool | None = None,
    rollback: bool | None = None,
    deregistration_delay: int | None = None,
    rebalance: bool | None = None,
) -> api.DeploymentOptions:
    """The options the user gave, and only those (an absent field keeps the service's setting)."""
    options = api.DeploymentOptions()
    minimum = _bounded("--min-healthy-percent", min_healthy_percent, MIN_HEALTHY_RANGE)
    maximum = _bounded("--max-percent", max_percent, MAX_PERCENT_RANGE)
    delay = _bounded("--deregistration-delay", deregistration_delay, DEREGISTRATION_RANGE)
    if minimum is not None:
        options.minimum_healthy_percent = minimum
    if maximum is not None:
        options.maximum_percent = maximum
    if circuit_breaker is not None:
        options.circuit_breaker = circuit_breaker
    if rollback is not None:
        options.rollback = rollback
    if delay is not None:
        options.deregistration_delay = delay
    if rebalance is not None:
        options.rebalance = rebalance
    return options


def _on(flag: bool) -> str:
    return "on" if flag else "off"


def configuration_line(config: pb.DeploymentConfiguration) -> str:
    breaker = _on(config.circuit_breaker)
    if config.circuit_breaker:
        breaker += f" (rollback {_on(config.rollback)})"
    return (
        f"min healthy {config.minimum_healthy_percent}%, max {config.maximum_percent}%, "
        f"circuit breaker {breaker}, deregistration delay {config.deregistration_delay}s, "
        f"rebalance {_on(config.rebalance)}"
    )


def status_word(deployment: pb.Deployment) -> str:
    """PRIMARY or ACTIVE (ECS's words)."""
    if deployment.status == pb.DEPLOYMENT_ACTIVE:
        return "ACTIVE"
    return pb.DeploymentStatus.Name(deployment.status) if deployment.status else "-"


def rollout_word(deployment: pb.Deployment) -> str:
    return pb.RolloutState.Name(deployment.rollout_state) if deployment.rollout_state else "-"


def counts_of(description: api.ServiceDescription, deployment_id: int) -> api.DeploymentCounts | None:
    for counts in description.deployment_counts:
        if counts.id == deployment_id:
            return counts
    return None


def deployment_lines(description: api.ServiceDescription) -> list[str]:
    """One line per deployment (PRIMARY first), and its rollout reason on the next."""
    lines = []
    for d in description.service.deployments:
        counts = counts_of(description, d.id) or api.DeploymentCounts(id=d.id)
        # Only the circuit breaker rolls back: the one left behind FAILED (said even once dropped).
        rollback = f", rollback from FAILED deployment {d.rolled_back_from}" if d.rolled_back_from else ""
        lines.append(
            f"  {d.id:>3}  {status_word(d):<7}  {d.task_definition}  {rollout_word(d)}{rollback}  "
            f"desired {counts.desired_count}, running {counts.running_count}, "
            f"pending {counts.pending_count}, healthy {counts.healthy_count}, "
            f"failed {counts.failed_count}  age {age(d.created_at)}"
        )
        if d.rollout_state_reason:
            lines.append(f"       {d.rollout_state_reason}")
    return lines
