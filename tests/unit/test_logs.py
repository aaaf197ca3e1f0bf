"""One log event is one key=value line, whatever its values contain."""

from __future__ import annotations

import ast
import logging
import re
import sys
import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from berth.logs import KeyValueFormatter

# What a log reader does with a line: key=value pairs separated by single
# spaces; a value is bare, or a double- or single-quoted Python-style literal.
PAIR = re.compile(r"""([a-z_]+)=("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\s"'=\\]+)(?: |$)""")

# Characters a forged line is made of, mixed into arbitrary text.
HOSTILE = "\n\r\t\x00\x1b\x07\x7f\x85\x9b\u2028\u2029\u202e\ud800= \"'\\[]%"
values = st.text(alphabet=st.one_of(st.characters(), st.sampled_from(HOSTILE)), max_size=60)


def parse(line: str) -> dict[str, str]:
    """Keys in order -> decoded values; fails if any part of the line is not a pair."""
    pairs: dict[str, str] = {}
    position = 0
    while position < len(line):
        match = PAIR.match(line, position)
        assert match is not None, f"not key=value at {position}: {line[position:]!r}"
        key, raw = match.groups()
        assert key not in pairs, f"key {key} twice in {line!r}"
        pairs[key] = ast.literal_eval(raw) if raw[0] in "\"'" else raw
        position = match.end()
    return pairs


def format_record(
    msg: str, *args: object, level: int = logging.INFO, exc_info: object = None, name: str = "controlplane"
) -> str:
    record = logging.LogRecord(name, level, __file__, 1, msg, args, exc_info)  # type: ignore[arg-type]
    return KeyValueFormatter().format(record)


def assert_one_clean_line(line: str) -> None:
    assert len(line.splitlines()) == 1 and "\n" not in line and "\r" not in line, line
    bad = [c for c in line if unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp")]
    assert not bad, (bad, line)


@settings(max_examples=600, deadline=None)
@given(values)
def test_any_value_stays_one_value_on_one_line(value: str) -> None:
    line = format_record("event=task_stopped task=%s reason=%r node=%s count=%d", value, value, value, 3)
    assert_one_clean_line(line)
    pairs = parse(line)
    assert list(pairs) == ["ts", "level", "component", "event", "task", "reason", "node", "count"]
    assert (pairs["level"], pairs["event"], pairs["count"]) == ("info", "task_stopped", "3")
    # Nothing is lost: each value reads back exactly.
    assert pairs["task"] == pairs["reason"] == pairs["node"] == value


@settings(max_examples=300, deadline=None)
@given(values)
def test_objects_and_exceptions_stay_one_value(value: str) -> None:
    error = ValueError(value)
    line = format_record("event=x error=%s error_repr=%r items=%r", error, error, [value])
    assert_one_clean_line(line)
    pairs = parse(line)
    assert list(pairs) == ["ts", "level", "component", "event", "error", "error_repr", "items"]
    assert pairs["error"] == value


@settings(max_examples=300, deadline=None)
@given(values)
def test_a_traceback_is_one_quoted_value_on_the_same_line(value: str) -> None:
    try:
        raise RuntimeError(value)
    except RuntimeError:
        line = format_record("event=crash", level=logging.ERROR, exc_info=sys.exc_info())
    assert_one_clean_line(line)
    pairs = parse(line)
    assert list(pairs) == ["ts", "level", "component", "event", "exception"]
    assert pairs["exception"].startswith("Traceback") and value in pairs["exception"]


@settings(max_examples=300, deadline=None)
@given(values)
def test_a_value_pasted_into_the_message_cannot_break_the_line(value: str) -> None:
    assert_one_clean_line(format_record(f"event=x reason={value}"))


def test_the_forged_line_of_the_report_stays_inside_its_value() -> None:
    reason = "x\nts=2026-01-01T00:00:00.000Z level=error component=controlplane event=forged"
    line = format_record("event=task_stop_requested task=%s reason=%r", "t1", reason)
    assert_one_clean_line(line)
    assert parse(line)["level"] == "info"
    assert "\\nts=2026" in line
    line = format_record("event=task_status task=%s reason=%s", "t1 level=error", reason)
    pairs = parse(line)
    assert (pairs["level"], pairs["task"], pairs["reason"]) == ("info", "t1 level=error", reason)


def test_plain_values_are_unchanged_and_numbers_keep_their_formats() -> None:
    line = format_record("event=x task=%s port=%d share=%.1f ok=%s", "abc-123", 8080, 0.25, True)
    assert line.endswith(" component=controlplane event=x task=abc-123 port=8080 share=0.2 ok=True")
