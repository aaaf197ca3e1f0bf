"""One logging set-up for both daemons: one key=value line per event, on stderr.

Values in log lines often come from the wire (task ids, names, stop reasons),
so the formatter never lets one forge another line or another key:

- each %-argument is rendered as one value: `%s` of text containing spaces,
  `=`, quotes, backslashes or control characters is double-quoted with
  backslash escapes (`reason="a b\\nc"`); `%r` is Python's repr, which is
  quoted and escaped already (non-strings' reprs are quoted as above);
- whatever is left in the final message (a value pasted into the message
  itself) has its control characters escaped, so an event is always one line;
- a traceback goes on the same line, as the quoted value `exception="..."`.

Callers therefore pass values as arguments (`log.info("event=x task=%s", id)`),
never formatted into the message.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Mapping
from typing import Any

from berth.safetext import escape_controls, has_controls

# Anything that would end a bare value early or make it look quoted.
_NEEDS_QUOTES = re.compile(r"[\s=\"'\\]")


def quote_value(text: str) -> str:
    """`text` as one key=value value: bare when that is unambiguous, else double-quoted."""
    if text and not _NEEDS_QUOTES.search(text) and not has_controls(text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escape_controls(escaped)}"'


class _Value:
    """One %-argument, rendered so it stays one value whatever it contains."""

    __slots__ = ("_value",)

    def __init__(self, value: object) -> None:
        self._value = value

    def __str__(self) -> str:
        return quote_value(str(self._value))

    def __repr__(self) -> str:
        text = repr(self._value)
        # A str's repr is one quoted, escaped token already.
        return text if isinstance(self._value, str) else quote_value(text)


def _safe(arg: object) -> object:
    # Numbers are left alone so %d and %.1f keep working; they cannot forge anything.
    return arg if isinstance(arg, int | float) else _Value(arg)


def _safe_args(args: Any) -> Any:
    if isinstance(args, Mapping):
        return {key: _safe(value) for key, value in args.items()}
    return tuple(_safe(arg) for arg in args)


def render_message(record: logging.LogRecord) -> str:
    """The record's message with its arguments made safe, on one line."""
    message = str(record.msg)
    if record.args:
        try:
            message = message % _safe_args(record.args)
        except (TypeError, ValueError, KeyError):
            # A format the wrappers do not suit (say %d of a Decimal): plain, then escaped.
            message = record.getMessage()
    return escape_controls(message)


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = (
            f"ts={stamp}.{int(record.msecs):03d}Z level={record.levelname.lower()} "
            f"component={quote_value(record.name)} {render_message(record)}"
        )
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += f" exception={quote_value(record.exc_text)}"
        if record.stack_info:
            line += f" stack={quote_value(self.formatStack(record.stack_info))}"
        return line


def configure(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
