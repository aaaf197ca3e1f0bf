"""Text from the wire made safe to show: control characters become visible escapes.

Task ids, names, reasons and events come from agents and operators. Printed
raw, a newline forges a log line or a table row, and ESC/OSC sequences drive
the reader's terminal (colours, cursor, window title, hyperlinks). Every sink
that shows such text (the daemons' logs, the CLI's human views) passes it
through `escape_controls`: printable text is left exactly as it is; C0, DEL,
C1, line and paragraph separators, bidirectional overrides and lone
surrogates become Python-style escapes (`\\n`, `\\x1b`, `\\u202e`).
"""

from __future__ import annotations

import re

# Cc (C0, DEL, C1); U+2028/U+2029 (str.splitlines breaks on them); the
# bidirectional marks, embeddings, overrides and isolates that can reorder what
# a reader sees ("Trojan Source"); lone surrogates (unencodable on output).
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)


def _escape(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape", "backslashreplace").decode("ascii")


def escape_controls(text: str) -> str:
    """`text` with every unsafe character replaced by its escape; anything else kept."""
    return _UNSAFE.sub(_escape, text)


def has_controls(text: str) -> bool:
    return _UNSAFE.search(text) is not None
