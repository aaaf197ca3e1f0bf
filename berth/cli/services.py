"""`berth service ...`: keep N copies of a task definition running."""

from __future__ import annotations

import typer
from rich.console import Console

from berth.cli import placement
from berth.cli.client import CliContext, api_errors
from berth.cli.output import age, check_format, emit, emit_one
from berth.v1 import operator_pb2 as api
from berth.v1 import resources_pb2 as pb

app = typer.Typer(help="Services: a desired count of tasks, kept running.", no_args_is_help=True)

ClusterOption = typer.Option("default", "--cluster", "-c", help="cluster name")


@app.command("create")
def create(
    ctx: typer.Context,
    name: str = typer.Option(..., "--name", help="service name (a DNS label)"),
    task_definition: str = typer.Option(..., "--task-definition", help="FAMILY or FAMILY:REVISION"),
    desired_count: int = typer.Option(1, "--desired-count", help="how many tasks to keep running"),
    cluster: str = ClusterOption,
    placement_strategy: list[str] = typer.Option(
        None, "--placement-strategy", help="type=binpack|spread|random[,field=...], repeatable"
    ),
    placement_constraints: list[str] = typer.Option(
        None, "--placement-constraints", help="type=distinctInstance | type=memberOf,expression=..."
    ),
) -> None:
    """Create a service."""
    cli: CliContext = ctx.obj
    request = api.CreateServiceRequest(
        cluster=cluster,
        name=name,
        task_definition=task_definition,
        desired_count=desired_count,
        placement_strategy=placement.strategies(placement_strategy),
        placement_constraints=placement.constraints(placement_constraints),
    )
    with api_errors(cli):
        service = cli.stub.CreateService(request)
    print(
        f"service {service.name} created in cluster {service.cluster} "
        f"({service.task_definition}, desired count {service.desired_count})"
    )


@app.command("list")
def list_(
    ctx: typer.Context,
    cluster: str = ClusterOption,
    output: str = typer.Option("table", "-o", "--output", callback=check_format),
) -> None:
    """List the services of a cluster."""
    cli: CliContext = ctx.obj
    with api_errors(cli):
        services = cli.stub.ListServices(api.ListServicesRequest(cluster=cluster)).services
    emit(
        output,
        services,
        [
            ("NAME", lambda s: s.name),
            ("TASK DEFINITION", lambda s: s.task_definition),
            ("DESIRED", lambda s: str(s.desired_count)),
            ("STATUS", lambda s: pb.ServiceStatus.Name(s.status).removeprefix("SERVICE_")),
            ("AGE", lambda s: age(s.created_at)),
        ],
        "services",
    )


@app.command("describe")
def describe(
    ctx: typer.Context,
    name: str,
    cluster: str = ClusterOption,
    output: str = typer.Option("table", "-o", "--output", callback=check_format),
) -> None:
    """Show a service, its counts and its newest events."""
    cli: CliContext = ctx.obj
    with api_errors(cli):
        description = cli.stub.DescribeService(api.ServiceRef(cluster=cluster, name=name))

    def show() -> None:
        s = description.service
        console = Console(width=200, highlight=False)
        console.print(f"service:          {s.name}", markup=False)
        console.print(f"cluster:          {s.cluster}", markup=False)
        console.print(f"status:           {pb.ServiceStatus.Name(s.status).removeprefix('SERVICE_')}")
        console.print(f"task definition:  {s.task_definition}", markup=False)
        console.print(
            f"desired/running/pending: {s.desired_count}/{description.running_count}"
            f"/{description.pending_count}"
        )
        strategy = ", ".join(f"{p.type}:{p.field}" if p.field else p.type for p in s.placement_strategy)
        constraints = ", ".join(
            f"{c.type}({c.expression})" if c.expression else c.type for c in s.placement_constraints
        )
        console.print(
            f"placement:        {strategy or 'spread:instanceId'}; {constraints or 'no constraints'}",
            markup=False,
        )
        console.print("events (newest first):")
        for event in description.events[:20]:
            console.print(f"  {age(event.created_at):>4} ago  {event.message}", markup=False)

    emit_one(output, description, show)


@app.command("update")
def update(
    ctx: typer.Context,
    name: str,
    desired_count: int = typer.Option(..., "--desired-count"),
    cluster: str = ClusterOption,
) -> None:
    """Change a service's desired count."""
    cli: CliContext = ctx.obj
    with api_errors(cli):
        service = cli.stub.UpdateService(
            api.UpdateServiceRequest(cluster=cluster, name=name, desired_count=desired_count)
        )
    print(f"service {service.name} desired count is now {service.desired_count}")


@app.command("delete")
def delete(ctx: typer.Context, name: str, cluster: str = ClusterOption) -> None:
    """Delete a service: its tasks are stopped, then the service is removed."""
    cli: CliContext = ctx.obj
    with api_errors(cli):
        cli.stub.DeleteService(api.ServiceRef(cluster=cluster, name=name))
    print(f"service {name} is being deleted; its tasks are stopping")
