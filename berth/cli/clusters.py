"""`berth cluster ...`"""

from __future__ import annotations

import typer

from berth.cli.client import CliContext, api_errors
from berth.cli.options import TagOption, command_group, tags
from berth.cli.output import OutputOption, age, emit, say
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
    """List clusters."""
    cli: CliContext = ctx.obj
    with api_errors(cli):
        clusters = cli.stub.ListClusters(api.ListClustersRequest()).clusters
    emit(output, clusters, [("NAME", lambda c: c.name), ("AGE", lambda c: age(c.created_at))], "clusters")


@app.command("delete")
def delete(ctx: typer.Context, name: str = typer.Argument(..., metavar="NAME")) -> None:
    """Delete a cluster that has no services."""
    cli: CliContext = ctx.obj
    with api_errors(cli):
        cli.stub.DeleteCluster(api.DeleteClusterRequest(name=name))
    say(f"cluster {name} deleted")
