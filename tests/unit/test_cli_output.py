"""The CLI's table renderer prints data exactly as it is: rich markup in a value
(brackets in a placement expression) must not be interpreted."""

from __future__ import annotations

import pytest

from berth.cli.output import emit
from berth.v1 import resources_pb2 as pb

REASONS = [
    # Shown as "... attribute:zone in '" before the renderer stopped reading markup.
    "2 nodes did not match memberOf attribute:zone in [a, b]",
    # Used to crash the whole command with rich.errors.MarkupError.
    "port 53[/udp] is taken",
    # Emoji codes are data too.
    "attribute:smile: is unknown",
]


@pytest.mark.parametrize("reason", REASONS)
def test_a_reason_is_printed_whole(reason: str, capsys: pytest.CaptureFixture[str]) -> None:
    task = pb.Task(id="t1", last_status=pb.PENDING, pending_reason=reason)
    emit("table", [task], [("ID", lambda t: t.id), ("REASON", lambda t: t.pending_reason)], "tasks")
    out = capsys.readouterr().out
    assert reason in out, out


def test_cells_with_markup_keep_their_columns(capsys: pytest.CaptureFixture[str]) -> None:
    tasks = [pb.Task(id="[bold]x[/bold]", pending_reason="[a]"), pb.Task(id="y", pending_reason="-")]
    emit("table", tasks, [("ID", lambda t: t.id), ("REASON", lambda t: t.pending_reason)], "tasks")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "REASON"]
    assert lines[1].split() == ["[bold]x[/bold]", "[a]"]
    assert lines[2].split() == ["y", "-"]
