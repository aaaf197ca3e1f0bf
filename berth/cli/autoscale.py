"""`berth service autoscale`: set, show or remove a service's target-tracking policy."""

from __future__ import annotations

import math
import time

import typer

from berth.cli.client import CliContext, api_errors, fail
from berth.cli.options import ClusterOption
from berth.cli.output import OutputOption, data_console, emit_one, say
from berth.scaling import policy_line
from berth.v1 import operator_pb2 as api
from berth.v1 import resources_pb2 as pb

_COUNT_LIMIT = 2**32 - 1


def _count(option: str, value: int | None) -> int:
    # The server enforces the quota; this keeps the number inside the protocol's uint32.
    if value is None:
        return 0
    if not 0 <= value <= _COUNT_LIMIT:
        raise fail(f"{option} {value} is out of range")
    return value


def _number(option: str, value: float) -> float:
    if not math.isfinite(value):
        raise fail(f"{option} {value} is not a number")
    return value


def describe_lines(service: pb.Service) -> list[str]:
    """The policy and its last decision, for `berth service describe`."""
    if not service.HasField("scaling_policy"):
        return []
    lines = [f"auto-scaling:     {policy_line(service.scaling_policy)}"]
    state = service.scaling_state
    if state.last_message:
        lines.append(f"last decision:    {state.last_message}")
    if state.last_action_at:
        ago = max(0, round(time.time() - state.last_action_at))
        lines.append(f"last scaled:      {ago} s ago")
    return lines


def autoscale(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="NAME", help="service name"),
    metric: str = typer.Option(
        "", "--metric", metavar="METRIC", help="cpu, memory or custom:NAME", show_default=False
    ),
    target: float | None = typer.Option(
        None, "--target", metavar="VALUE", help="percent of the reservation (cpu, memory) or per task"
    ),
    min_count: int | None = typer.Option(None, "--min", metavar="N", help="fewest tasks (default 1)"),
    max_count: int | None = typer.Option(None, "--max", metavar="N", help="most tasks"),
    scale_out_window: float | None = typer.Option(
        None, "--scale-out-window", metavar="SECONDS", help="scale out to the lowest need of this window [0]"
    ),
    scale_in_window: float | None = typer.Option(
        None, "--scale-in-window", metavar="SECONDS", help="scale in to the highest need of this window [300]"
    ),
    warmup: float | None = typer.Option(
        None, "--warmup", metavar="SECONDS", help="tasks younger than this are left out of the average [60]"
    ),
    tolerance: float | None = typer.Option(
        None, "--tolerance", metavar="FRACTION", help="no change within this of the target [0.1]"
    ),
    max_step: int | None = typer.Option(
        None, "--max-step", metavar="N", help="tasks added per decision at most [max(4, count)]"
    ),
    remove: bool = typer.Option(False, "--remove", help="remove the policy; the desired count stays"),
    cluster: str = ClusterOption,
    output: str = OutputOption,
) -> None:
    """Keep a service's metric near a target by changing its desired count.

    Without options, shows the policy and its last decision. With --metric,
    --target and --max (and optionally the rest), sets or replaces it."""
    cli: CliContext = ctx.obj
    given = [metric, target, min_count, max_count, scale_out_window, scale_in_window, warmup, tolerance]
    setting = any(v not in (None, "") for v in given) or max_step is not None
    if remove:
        if setting:
            raise fail("--remove takes no other policy option")
        with api_errors(cli):
            service = cli.stub.DeleteScalingPolicy(
                api.DeleteScalingPolicyRequest(cluster=cluster, service=name)
            )
        say(f"service {name}: scaling policy removed; desired count stays {service.desired_count}")
        return
    if not setting:
        with api_errors(cli):
            service = cli.stub.DescribeService(api.ServiceRef(cluster=cluster, name=name)).service
        if not service.HasField("scaling_policy") and output == "table":
            say(f"service {name} has no scaling policy")
            return

        def show() -> None:
            console = data_console()
            for line in describe_lines(service):
                console.print(line)
            console.print(f"desired count:    {service.desired_count}")

        emit_one(output, _shown(service), show)
        return
    if not metric or target is None or max_count is None:
        raise fail("give --metric, --target and --max (or --remove, or no option to show the policy)")
    policy = pb.ScalingPolicy(
        metric=metric,
        target=_number("--target", target),
        min_count=_count("--min", 1 if min_count is None else min_count),
        max_count=_count("--max", max_count),
        max_step_out=_count("--max-step", max_step),
    )
    for field, option, value in (
        ("scale_out_window", "--scale-out-window", scale_out_window),
        ("scale_in_window", "--scale-in-window", scale_in_window),
        ("warmup", "--warmup", warmup),
        ("tolerance", "--tolerance", tolerance),
    ):
        if value is not None:
            setattr(policy, field, _number(option, value))
    with api_errors(cli):
        service = cli.stub.PutScalingPolicy(
            api.PutScalingPolicyRequest(cluster=cluster, service=name, policy=policy)
        )
    say(f"service {name}: {policy_line(service.scaling_policy)}")


def _shown(service: pb.Service) -> pb.Service:
    """The part of the service `-o json` shows for its scaling."""
    shown = pb.Service(cluster=service.cluster, name=service.name, desired_count=service.desired_count)
    if service.HasField("scaling_policy"):
        shown.scaling_policy.CopyFrom(service.scaling_policy)
        shown.scaling_state.CopyFrom(service.scaling_state)
    return shown
