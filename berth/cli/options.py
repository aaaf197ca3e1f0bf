"""What every `berth` command group shares: how its help is rendered, and the
options more than one command takes (`--cluster`; `-o` lives with the renderer
in `output.py`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer
from typer.core import TyperArgument, TyperCommand

from berth.v1 import resources_pb2 as pb


class _PlainArgument(TyperArgument):
    """An argument whose help shows its name alone (NAME, not NAME <str>).

    Recent typer releases append a type tag to every argument, even one with
    a metavar, and offer no switch for it; our help text already says what
    the argument is. Releases without this method never call it.
    """

    def display_type_rich(self, ctx: Any) -> str | None:
        return None


class _Command(TyperCommand):
    """Every `berth` command: its arguments render as `_PlainArgument`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if type(param) is TyperArgument:
                param.__class__ = _PlainArgument


class _Group(typer.Typer):
    """A Typer app whose commands are `_Command`s unless they ask otherwise."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
        kwargs.setdefault("cls", _Command)
        return super().command(*args, **kwargs)


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
    return _Group(
        help=help,
        no_args_is_help=True,
        rich_markup_mode=None,
        # A user sees one line (client.fail), never a traceback dressed up by rich.
        pretty_exceptions_enable=False,
        # --install-completion / --show-completion belong to the root command only.
        add_completion=root,
    )


def tags(pairs: list[str]) -> list[pb.Tag]:
    """`--tag KEY=VALUE` options as tags (VALUE may be empty); the control plane checks ECS's rules."""
    found = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise typer.BadParameter(f"--tag {pair!r}: write KEY=VALUE")
        found.append(pb.Tag(key=key, value=value))
    return found


TagOption = typer.Option(
    [], "--tag", metavar="KEY=VALUE", help="a resource tag (repeatable; ECS's rules: at most 50)"
)

# One definition for every command that works inside a cluster.
ClusterOption = typer.Option("default", "--cluster", "-c", metavar="CLUSTER", help="cluster name")
