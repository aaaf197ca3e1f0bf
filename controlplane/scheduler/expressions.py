"""Parses ECS placement syntax into plain data: memberOf expressions and attribute fields.

    memberOf   "attribute:zone == a"  "attribute:zone != a"
               "attribute:zone in [a, b]"  "attribute:zone not_in [a, b]"
               (clauses joined with " and ")
    strategy   the field of spread:attribute:NAME

Pure text to data; which filter or scorer the data becomes is `policies`'s
business. Errors are `InvalidArgument` with one line saying what to write instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from berth.errors import InvalidArgument

_ATTRIBUTE_PREFIX = "attribute:"

_CLAUSE = re.compile(
    r"^attribute:(?P<name>[A-Za-z0-9_.\-/]+)\s*(?P<op>==|!=|\s+in\s+|\s+not_in\s+)\s*(?P<value>.+)$"
)


@dataclass(frozen=True)
class AttributeClause:
    attribute: str
    operator: str  # "==", "!=", "in", "not_in"
    values: tuple[str, ...]

    def matches(self, actual: str | None) -> bool:
        if self.operator in ("==", "in"):
            return actual is not None and actual in self.values
        return actual is None or actual not in self.values

    def __str__(self) -> str:
        if self.operator in ("in", "not_in"):
            return f"attribute:{self.attribute} {self.operator} [{', '.join(self.values)}]"
        return f"attribute:{self.attribute} {self.operator} {self.values[0]}"


def parse_expression(expression: str) -> tuple[AttributeClause, ...]:
    clauses = []
    for text in re.split(r"\s+and\s+", expression.strip()):
        match = _CLAUSE.match(text.strip())
        if not match:
            raise InvalidArgument(
                f"placement expression {text!r} is invalid: write attribute:NAME == VALUE, "
                "attribute:NAME != VALUE or attribute:NAME in [V1, V2]"
            )
        operator = match["op"].strip()
        raw = match["value"].strip()
        if operator in ("in", "not_in"):
            if not (raw.startswith("[") and raw.endswith("]")):
                raise InvalidArgument(f"placement expression {text!r}: the values of {operator} go in [ ]")
            values = tuple(v.strip() for v in raw[1:-1].split(",") if v.strip())
        else:
            values = (raw,)
        if not values:
            raise InvalidArgument(f"placement expression {text!r} has no value")
        clauses.append(AttributeClause(match["name"], operator, values))
    return tuple(clauses)


def attribute_field(field: str) -> str | None:
    """The NAME of a strategy field "attribute:NAME", or None when the field is not one."""
    if field.startswith(_ATTRIBUTE_PREFIX) and len(field) > len(_ATTRIBUTE_PREFIX):
        return field[len(_ATTRIBUTE_PREFIX) :]
    return None
