"""What every `berth` command group shares: how its help is rendered, and the
options more than one command takes (`--cluster`; `-o` lives with the renderer
in `output.py`)."""

from __future__ import annotations

import typer


def command_group(help: str, *, root: bool = False) -> typer.Typer:
    """A Typer app for `berth` (root=True) or one of its groups. Every app is
    made here, so every command's help is rendered the same way.

    Help is plain text (`rich_markup_mode=None`), on purpose: our help uses the
    usual CLI notation for optional parts (`HOST_PORT[:SERVICE_PORT][/udp]`) and
    ECS expressions with brackets (`attribute:zone in [a, b]`), which rich
    markup reads as tags. typer 0.29 with rich 15 crashed on `[/udp]` with a
    MarkupError; other versions silently drop the bracketed text. Whether typer
    turns markup on by default has changed between its releases, so we say it
    explicitly: in plain mode every character is printed as written, whatever
    the versions of typer and rich.
    """
    return typer.Typer(
        help=help,
        no_args_is_help=True,
        rich_markup_mode=None,
        # A user sees one line (client.fail), never a traceback dressed up by rich.
        pretty_exceptions_enable=False,
        # --install-completion / --show-completion belong to the root command only.
        add_completion=root,
    )


# One definition for every command that works inside a cluster.
ClusterOption = typer.Option("default", "--cluster", "-c", metavar="CLUSTER", help="cluster name")
