"""`berth logs` rendering (berth.cli.logs): --since parsing, escaping, per-task prefixes, kept notes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import typer

from berth.cli.logs import kept_note, parse_since, render
from berth.v1 import resources_pb2 as pb

NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
TASK_ID = "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d"


@pytest.mark.parametrize(
    ("text", "seconds_back"),
    [("10m", 600), ("45s", 45), ("1h30m", 5400), ("2d", 172800), ("1d2h3m4s", 93784), ("0s", 0)],
)
def test_since_durations(text: str, seconds_back: int) -> None:
    assert parse_since(text, NOW).seconds == int(NOW.timestamp()) - seconds_back


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-05-01T10:00:00Z", datetime(2026, 5, 1, 10, tzinfo=UTC)),
        ("2026-05-01T12:00:00+02:00", datetime(2026, 5, 1, 10, tzinfo=UTC)),
        ("2026-05-01T10:00:00.5Z", datetime(2026, 5, 1, 10, 0, 0, 500000, tzinfo=UTC)),
    ],
)
def test_since_rfc3339(text: str, expected: datetime) -> None:
    assert parse_since(text, NOW).ToDatetime(tzinfo=UTC) == expected


@pytest.mark.parametrize("text", ["", "10", "ten minutes", "10x", "2026-05-01T10:00:00", "yesterday\x1b[2J"])
def test_bad_since_is_refused_in_words(text: str) -> None:
    with pytest.raises(typer.BadParameter) as raised:
        parse_since(text, NOW)
    assert "\x1b" not in str(raised.value)
    assert "RFC 3339" in str(raised.value)


def test_lines_are_escaped_and_prefixed_by_short_task_id_only_when_asked() -> None:
    chunk = pb.LogChunk(
        task_id=TASK_ID,
        lines=["plain", "\x1b]0;owned\x07title", "forged\rline", "bidi \u202e txt", "tab\there"],
    )
    assert render(chunk, prefixed=False) == [
        "plain",
        "\\x1b]0;owned\\x07title",
        "forged\\rline",
        "bidi \\u202e txt",
        "tab\\there",
    ]
    assert render(chunk, prefixed=True)[0] == "1a2b3c4d5e6f | plain"
    assert all(line.startswith("1a2b3c4d5e6f | ") for line in render(chunk, prefixed=True))


def test_kept_note_says_these_are_the_kept_last_lines() -> None:
    note = kept_note(pb.LogChunk(task_id=TASK_ID, container="web", lines=["a", "b"], kept=True))
    assert note == (
        "task 1a2b3c4d5e6f has stopped; its containers are gone: these are the last 2 lines "
        "of container web kept when it stopped"
    )
    assert "no output of it was kept" in kept_note(pb.LogChunk(task_id=TASK_ID, kept=True))
