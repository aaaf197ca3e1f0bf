"""Parses placement strategies and constraints (ECS syntax) into filters and scorers.

    strategies:   binpack:cpu  binpack:memory  spread:instanceId  spread:attribute:NAME  random
    constraints:  distinctInstance
                  memberOf "attribute:zone == a"  "attribute:zone != a"
                           "attribute:zone in [a, b]"  (clauses joined with " and ")

Errors are `InvalidArgument` with one line saying what to write instead;
the API validates with these same functions, so a bad expression is refused
before anything is stored.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from berth.errors import InvalidArgument
from berth.v1 import resources_pb2 as pb
from controlplane.scheduler.model import Filter, Scorer

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


def compile_constraints(constraints: Sequence[pb.PlacementConstraint]) -> tuple[Filter, ...]:
    from controlplane.scheduler.filters import AttributeMatch, DistinctInstance

    filters: list[Filter] = []
    for constraint in constraints:
        if constraint.type == "distinctInstance":
            if constraint.expression:
                raise InvalidArgument("placement constraint distinctInstance takes no expression")
            filters.append(DistinctInstance())
        elif constraint.type == "memberOf":
            filters.append(AttributeMatch(parse_expression(constraint.expression), constraint.expression))
        else:
            raise InvalidArgument(
                f"placement constraint type {constraint.type!r} is unknown: use distinctInstance or memberOf"
            )
    return tuple(filters)


def compile_strategy(strategies: Sequence[pb.PlacementStrategy]) -> tuple[Scorer, ...]:
    from controlplane.scheduler.scorers import (
        DEFAULT_SCORERS,
        BinpackCpu,
        BinpackMemory,
        Random,
        Spread,
        SpreadAttribute,
    )

    scorers: list[Scorer] = []
    for strategy in strategies:
        kind, field = strategy.type, strategy.field
        if kind == "binpack" and field in ("memory", ""):
            scorers.append(BinpackMemory())
        elif kind == "binpack" and field == "cpu":
            scorers.append(BinpackCpu())
        elif kind == "spread" and field in ("instanceId", "host", ""):
            scorers.append(Spread())
        elif kind == "spread" and field.startswith("attribute:") and len(field) > len("attribute:"):
            scorers.append(SpreadAttribute(field[len("attribute:") :]))
        elif kind == "random" and not field:
            scorers.append(Random())
        else:
            raise InvalidArgument(
                f"placement strategy {kind}:{field} is invalid: use binpack:cpu, binpack:memory, "
                "spread:instanceId, spread:attribute:NAME or random"
            )
    return tuple(scorers) or DEFAULT_SCORERS
