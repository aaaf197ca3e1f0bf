"""`berth`: the operator CLI. Every command is one gRPC call to the control plane."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path

import typer

from berth import clientconfig
from berth.cli import (
    access_keys,
    clusters,
    execute,
    jointokens,
    logs,
    metrics,
    nodes,
    secrets,
    services,
    taskdefs,
    tasks,
    top,
    users,
)
from berth.cli.client import CliContext
from berth.cli.options import command_group

app = command_group("Berth: ECS-style container orchestration that runs anywhere.", root=True)
app.add_typer(clusters.app, name="cluster")
app.add_typer(taskdefs.app, name="taskdef")
app.add_typer(services.app, name="service")
app.add_typer(tasks.app, name="task")
app.add_typer(nodes.app, name="node")
app.add_typer(jointokens.app, name="join-token")
app.add_typer(users.app, name="user")
app.add_typer(access_keys.app, name="access-key")
app.add_typer(secrets.app, name="secret")
app.add_typer(metrics.app, name="metric")
app.command("logs")(logs.logs)
app.command("exec")(execute.exec_)
app.command("top")(top.top)


def _print_version(value: bool) -> None:
    if not value:
        return
    try:
        print(f"berth {package_version('berth')}")
    except PackageNotFoundError:  # run from a source tree that was never installed
        print("berth (not installed; version unknown)")
    raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    server: str = typer.Option(
        "",
        "--server",
        envvar="BERTH_SERVER",
        metavar="HOST:PORT",
        help="control plane address; several replicas: HOST:PORT,HOST:PORT (default: the config's)",
        show_default=False,
    ),
    config: Path | None = typer.Option(
        None,
        "--config",
        metavar="PATH",
        help="credentials (default: $BERTH_CONFIG, else ~/.config/berth/config)",
        show_default=False,
    ),
    version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_print_version, help="print the version and exit"
    ),
) -> None:
    ctx.obj = CliContext(server=server, config_path=clientconfig.find(config))


if __name__ == "__main__":
    app()
