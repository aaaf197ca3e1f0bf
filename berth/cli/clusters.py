"""`berth cluster ...`"""

from __future__ import annotations

import typer

from berth.cli.client import CliContext, api_errors
from berth.cli.options import TagOption, command_group, tags
from berth.cli.output import OutputOption, age, emit, say
from berth.ecs import shapes
from berth.ecs.arns import Arns
from berth.v1 import operator_pb2 as api

app = command_group("Clusters: named groups of services and tasks.")


@app.command("create")
def create(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="NAME", help="a DNS label"),
    tag: list[str] = TagOption,
) -> None:
    """Create a cluster."""
    cli: CliContext = ctx.obj
    with api_errors(cli):
        cluster = cli.stub.CreateCluster(api.CreateClusterRequest(name=name, tags=tags(tag)))
    say(f"cluster {cluster.name} created")


@app.command("list")
def list_(ctx: typer.Context, output: str = OutputOption) -> None:
    """List clusters (-o json|yaml: ECS's Cluster objects, with their counts)."""
    cli: CliContext = ctx.obj
    with api_errors(cli):
        clusters = cli.stub.ListClusters(api.ListClustersRequest()).descriptions
        arns = cli.arns() if output != "table" else Arns()
    emit(
        output,
        clusters,
        [("NAME", lambda d: d.cluster.name), ("AGE", lambda d: age(d.cluster.created_at))],
        "clusters",
        lambda d: shapes.cluster(arns, d),
    )


@app.command("delete")
def delete(ctx: typer.Context, name: str = typer.Argument(..., metavar="NAME")) -> None:
    """Delete a cluster that has no services."""
    cli: CliContext = ctx.obj
    with api_errors(cli):
        cli.stub.DeleteCluster(api.DeleteClusterRequest(name=name))
    say(f"cluster {name} deleted")
