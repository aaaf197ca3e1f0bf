"""`berth`: the operator CLI. Every command is one gRPC call to the control plane."""

from __future__ import annotations

import typer

from berth.cli import clusters, nodes, services, taskdefs, tasks
from berth.cli.client import DEFAULT_SERVER, CliContext

app = typer.Typer(
    help="Berth: ECS-style container orchestration that runs anywhere.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(clusters.app, name="cluster")
app.add_typer(taskdefs.app, name="taskdef")
app.add_typer(services.app, name="service")
app.add_typer(tasks.app, name="task")
app.add_typer(nodes.app, name="node")


@app.callback()
def root(
    ctx: typer.Context,
    server: str = typer.Option(
        DEFAULT_SERVER, "--server", envvar="BERTH_SERVER", help="control plane address, HOST:PORT"
    ),
) -> None:
    ctx.obj = CliContext(server=server)


if __name__ == "__main__":
    app()
