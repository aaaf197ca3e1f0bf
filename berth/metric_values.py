"""Custom metrics' names and values: the checks every door (operator API, agent stream, the
agent's HTTP endpoint, the CLI) applies before a value goes anywhere."""

from __future__ import annotations

import math
import re

from berth.errors import InvalidArgument
from berth.names import shown

NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
# Values beyond this are refused: large enough for any count or rate, small enough that a sum
# over many tasks stays exact enough to average.
MAX_ABS_VALUE = 1e12


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise InvalidArgument(
            f"metric name {shown(name)} is invalid: use 1-63 lowercase letters, digits or '_', "
            "starting with a letter"
        )
    return name


def check_value(value: float) -> float:
    if not math.isfinite(value):
        raise InvalidArgument(f"metric value {value!r} is not a finite number")
    if abs(value) > MAX_ABS_VALUE:
        raise InvalidArgument(f"metric value {value!r} is out of range: |value| must be at most 1e12")
    return float(value)


def parse_value(text: str) -> float:
    """A value written as text (CLI argument, HTTP body): a decimal number, checked."""
    stripped = text.strip()
    if not stripped or len(stripped) > 40:
        raise InvalidArgument(f"metric value {shown(text)} is not a number")
    try:
        value = float(stripped)
    except ValueError:
        raise InvalidArgument(f"metric value {shown(text)} is not a number") from None
    return check_value(value)


_TASK_ID = re.compile(r"[0-9a-f]{32}")


def check_task_id(task_id: str) -> str:
    """Empty (a service-level value) or a task id (32 hex digits)."""
    if task_id and not _TASK_ID.fullmatch(task_id):
        raise InvalidArgument(f"task id {shown(task_id)} is invalid: a task id is 32 hex digits")
    return task_id
