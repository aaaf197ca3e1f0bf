"""Renders API objects as a table, JSON or YAML (`-o table|json|yaml`).

Human views (tables, describe views, messages and errors) show data through
`printable`: a stop reason or name carrying a newline, ESC/OSC sequences or
other control characters is shown with them escaped (`\n`, `\x1b`), never
sent to the terminal. JSON and YAML print the data exactly (their encoders
escape control characters themselves).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import typer
import yaml
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console
from rich.table import Table
from rich.text import Text

from berth.names import protocol_name
from berth.safetext import escape_controls, has_controls
from berth.v1 import resources_pb2 as pb

FORMATS = ("table", "json", "yaml")

Column = tuple[str, Callable[[Any], str]]


def check_format(value: str) -> str:
    if value not in FORMATS:
        raise typer.BadParameter(f"use one of {', '.join(FORMATS)}")
    return value


# Every read command takes the same -o option.
OutputOption = typer.Option(
    "table", "-o", "--output", metavar="FORMAT", callback=check_format, help="table, json or yaml"
)


def printable(text: str) -> str:
    """`text` safe for a terminal: control characters escaped, the rest unchanged."""
    return escape_controls(text)


def say(text: str, err: bool = False) -> None:
    """Print one message line (data in it made printable), on stdout or stderr."""
    print(printable(text), file=sys.stderr if err else sys.stdout)


class DataConsole:
    """Prints data (names, reasons, expressions, events) as it is, minus control
    characters: no markup, so `attribute:zone in [a, b]` keeps its brackets; no
    emoji codes, so `:zone:` stays text; no highlighting. Every human-readable
    view prints through this one."""

    def __init__(self) -> None:
        self._console = Console(width=200, markup=False, emoji=False, highlight=False)

    def print(self, *objects: str | Text | Table) -> None:
        self._console.print(*(_printable(o) for o in objects))


def _printable(item: str | Text | Table) -> str | Text | Table:
    if isinstance(item, str):
        return printable(item)
    if isinstance(item, Text) and has_controls(item.plain):
        # Escaping shifts the styled spans: keep the text, drop the styles.
        return Text(printable(item.plain))
    return item  # a Table: its cells are made printable when it is built (emit)


def data_console() -> DataConsole:
    return DataConsole()


def to_data(message: Message) -> dict[str, Any]:
    return MessageToDict(message, always_print_fields_with_no_presence=True)


Shape = Callable[[Any], dict[str, Any]]


def print_data(output: str, data: Any) -> None:
    """`data` as JSON or YAML (output is "json" or "yaml")."""
    if output == "json":
        print(json.dumps(data, indent=2))
    else:
        print(yaml.safe_dump(data, sort_keys=False), end="")


def emit(
    output: str, items: Sequence[Message], columns: Sequence[Column], key: str, shape: Shape | None = None
) -> None:
    """A table, or `{key: [...]}` as JSON or YAML: each item through `shape` (its ECS
    object, berth.ecs.shapes) when given, else the message's own JSON mapping."""
    if output in ("json", "yaml"):
        print_data(output, {key: [shape(m) if shape else to_data(m) for m in items]})
    else:
        table = Table(box=None, header_style="bold", pad_edge=False)
        for title, _ in columns:
            table.add_column(title, overflow="fold")
        for item in items:
            # Text, not str: rich would read a str cell as markup and drop "[a, b]".
            table.add_row(*(Text(printable(render(item))) for _, render in columns))
        data_console().print(table)


def emit_one(output: str, message: Message, describe: Callable[[], None], shape: Shape | None = None) -> None:
    if output in ("json", "yaml"):
        print_data(output, shape(message) if shape else to_data(message))
    else:
        describe()


def age(stamp: Timestamp) -> str:
    if not stamp.seconds:
        return "-"
    seconds = max(0, int(time.time() - stamp.seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def utc_time(stamp: Timestamp) -> str:
    """A moment as a UTC time to the second ("2026-11-27T14:20:03Z"): for records read days later."""
    if not stamp.seconds:
        return "-"
    return datetime.fromtimestamp(stamp.seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_name(value: pb.TaskStatus.ValueType) -> str:
    return pb.TaskStatus.Name(value) if value else "-"


def ports(task: pb.Task) -> str:
    return (
        ",".join(
            f"{b.host_port}->{b.container_port}/{protocol_name(b.protocol)}" for b in task.network_bindings
        )
        or "-"
    )


def exit_code(task: pb.Task) -> str:
    return str(task.exit_code) if task.has_exit_code else "-"
