"""The CLI's table renderer prints data exactly as it is: rich markup in a value
(brackets in a placement expression) must not be interpreted."""

from __future__ import annotations

import contextlib
import io
import json
import unicodedata

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.text import Text

from berth.cli.client import fail
from berth.cli.output import DataConsole, emit, emit_one, printable, say
from berth.ecs import shapes
from berth.ecs.arns import Arns
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


# -- control characters never reach the terminal ------------------------------

HOSTILE = "\n\r\t\x00\x1b\x07\x7f\x85\x9b\u2028\u2029\u202e\ud800[]"
texts = st.text(alphabet=st.one_of(st.characters(), st.sampled_from(HOSTILE)), max_size=60)
# Protobuf strings are valid UTF-8: no lone surrogates.
WIRE_HOSTILE = HOSTILE.replace("\ud800", "")
wire_chars = st.one_of(st.characters(codec="utf-8"), st.sampled_from(WIRE_HOSTILE))
wire_texts = st.text(alphabet=wire_chars, max_size=60)
UNSAFE_CATEGORIES = ("Cc", "Cs", "Zl", "Zp")
FORGED = "x\n level=error event=forged \x1b]0;title\x07 [bold]red\x1b[31m"


# Unicode's Bidi_Control property (PropList.txt), written out here independently of berth.safetext:
# each can reorder what a terminal shows.
BIDI_CONTROLS = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


def controls(text: str) -> list[str]:
    return [c for c in text if unicodedata.category(c) in UNSAFE_CATEGORIES or c in BIDI_CONTROLS]


@settings(max_examples=800, deadline=None)
@given(texts)
def test_printable_has_no_control_characters_and_keeps_printable_text(text: str) -> None:
    shown = printable(text)
    assert not controls(shown)
    # Character by character: safe ones unchanged, each unsafe one one visible escape.
    assert shown == "".join(printable(c) for c in text)
    for c in text:
        if not controls(c):
            assert printable(c) == c
        else:
            assert printable(c).startswith("\\") and printable(c).isprintable()


@settings(max_examples=300, deadline=None)
@given(wire_texts)
def test_a_table_row_is_one_line_without_control_characters(reason: str) -> None:
    task = pb.Task(id="t1", last_status=pb.STOPPED, stopped_reason=reason)
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        emit("table", [task], [("ID", lambda t: t.id), ("REASON", lambda t: t.stopped_reason)], "tasks")
    out = buffer.getvalue()
    assert not controls(out.replace("\n", ""))
    assert out.splitlines()[0].split() == ["ID", "REASON"]
    if len(printable(reason)) < 80:  # short enough not to fold at the console's width
        assert len(out.splitlines()) == 2, out


def test_a_forged_reason_is_shown_escaped_in_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    task = pb.Task(id="t1", last_status=pb.STOPPED, stopped_reason=FORGED)
    emit("table", [task], [("ID", lambda t: t.id), ("REASON", lambda t: t.stopped_reason)], "tasks")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and not controls(lines[1])
    assert lines[1].split(maxsplit=1) == ["t1", printable(FORGED)]
    assert "\\x1b]0;title\\x07" in lines[1] and "[bold]red" in lines[1]


def test_describe_views_and_messages_escape_control_characters(capsys: pytest.CaptureFixture[str]) -> None:
    console = DataConsole()
    console.print(f"reason:           {FORGED}")
    say(f"task {FORGED} is stopping")
    say(f"error: {FORGED}", err=True)
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        f"reason:           {printable(FORGED)}",
        f"task {printable(FORGED)} is stopping",
    ]
    assert captured.err.splitlines() == [f"error: {printable(FORGED)}"]


def test_styled_text_with_control_characters_is_shown_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    DataConsole().print(Text.assemble((FORGED, "bold"), " tail"))
    (line,) = capsys.readouterr().out.splitlines()
    assert not controls(line) and line.startswith("x\\n level=error") and line.endswith("[31m tail")


def test_json_and_yaml_keep_the_data_exact(capsys: pytest.CaptureFixture[str]) -> None:
    task = pb.Task(id="t1", stopped_reason=FORGED)
    emit("json", [task], [], "tasks")
    assert json.loads(capsys.readouterr().out)["tasks"][0]["stoppedReason"] == FORGED
    emit("yaml", [task], [], "tasks")
    assert yaml.safe_load(capsys.readouterr().out)["tasks"][0]["stoppedReason"] == FORGED


def test_json_and_yaml_print_the_ecs_shape_when_given(capsys: pytest.CaptureFixture[str]) -> None:
    task = pb.Task(id="t1", cluster="c", task_definition="web:1", stopped_reason=FORGED)
    emit("json", [task], [], "tasks", lambda t: shapes.task(Arns(), t))
    shown = json.loads(capsys.readouterr().out)
    assert shown == {"tasks": [shapes.task(Arns(), task)]}
    assert shown["tasks"][0]["stoppedReason"] == FORGED
    emit_one("yaml", task, lambda: None, lambda t: shapes.task(Arns(), t))
    assert yaml.safe_load(capsys.readouterr().out) == shapes.task(Arns(), task)


def test_fail_prints_one_escaped_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    exit_ = fail(f"service {FORGED} not found")
    assert exit_.exit_code == 1
    assert capsys.readouterr().err == f"error: service {printable(FORGED)} not found\n"
