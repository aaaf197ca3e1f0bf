"""`berth metric ...`: custom metrics an application pushes for its service (for auto-scaling).

A value is a service total when no task is given (a queue's depth), or one task's own with
`--task` (its requests per second). The control plane keeps them in memory for a few minutes;
`list` shows the newest value of each source and its age. Containers push through their
agent's HTTP endpoint instead (see the README).
"""

from __future__ import annotations

import typer

from berth.cli.client import CliContext, api_errors, fail
from berth.cli.options import ClusterOption, command_group
from berth.cli.output import OutputOption, emit, say
from berth.v1 import operator_pb2 as api

app = command_group("Custom metrics: values applications push for their service.")


def _seconds(age: float) -> str:
    seconds = int(age)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


@app.command("put")
def put(
    ctx: typer.Context,
    service: str = typer.Argument(..., metavar="SERVICE"),
    name: str = typer.Argument(..., metavar="NAME", help="[a-z][a-z0-9_]{0,62}, e.g. queue_depth"),
    value: str = typer.Argument(..., metavar="VALUE", help="a number, |VALUE| <= 1e12 (negative: after --)"),
    cluster: str = ClusterOption,
    task: str = typer.Option("", "--task", metavar="ID", help="one RUNNING task's own value"),
) -> None:
    """Push one value of a custom metric for SERVICE (or, with --task, for one of its tasks)."""
    cli: CliContext = ctx.obj
    try:
        number = float(value.strip())
    except ValueError:
        raise fail(f"VALUE {value[:40]!r} is not a number") from None
    with api_errors(cli):
        cli.stub.PutMetric(
            api.PutMetricRequest(cluster=cluster, service=service, name=name, value=number, task_id=task)
        )
    say(f"metric {name} = {number:g} recorded for service {service}" + (f" task {task}" if task else ""))


@app.command("list")
def list_(
    ctx: typer.Context,
    service: str = typer.Argument(..., metavar="SERVICE"),
    cluster: str = ClusterOption,
    output: str = OutputOption,
) -> None:
    """The newest value of each custom metric of SERVICE, per source (the service, or a task)."""
    cli: CliContext = ctx.obj
    with api_errors(cli):
        samples = cli.stub.ListMetrics(api.ListMetricsRequest(cluster=cluster, service=service)).samples
    emit(
        output,
        samples,
        [
            ("NAME", lambda s: s.name),
            ("SOURCE", lambda s: f"task {s.task_id}" if s.task_id else "service"),
            ("VALUE", lambda s: f"{s.value:g}"),
            ("AGE", lambda s: _seconds(s.age_seconds)),
        ],
        "metrics",
    )
