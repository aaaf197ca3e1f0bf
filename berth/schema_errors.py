"""Pydantic's complaints about a task definition's JSON as one line naming the field to fix
(shared by berth.taskdef and the taskdef_* modules, which berth.taskdef imports)."""

from __future__ import annotations

from pydantic import ValidationError

from berth.errors import InvalidArgument
from berth.names import shown


def one_line(error: ValidationError, where: str) -> InvalidArgument:
    """Turn pydantic's first complaint into one line that names the field to fix."""
    first = error.errors()[0]
    path = where
    for part in first["loc"]:
        # A field name comes from the input: escape it, so the message stays one line.
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.isidentifier() and len(part) <= 64:
            path += f".{part}"
        else:
            path += f"[{shown(part)}]"
    if first["type"] == "extra_forbidden":
        return InvalidArgument(f"{path}: unknown field {shown(str(first['loc'][-1]))}")
    if first["type"] == "missing":
        return InvalidArgument(f"{path}: required field is missing")
    return InvalidArgument(f"{path}: {' '.join(first['msg'].split())}")
