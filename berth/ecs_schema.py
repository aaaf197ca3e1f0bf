"""What the task-definition schemas (berth.taskdef and the taskdef_* modules) share: the
pydantic base every ECS object is read with, and pydantic's complaints as one line naming
the field to fix."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError

from berth.errors import InvalidArgument
from berth.names import shown


class EcsModel(BaseModel):
    """An ECS JSON object: unknown fields refused (a misspelling is never ignored), fields by
    their ECS (camelCase) alias or their Python name, numbers written as strings accepted."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=False)


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
