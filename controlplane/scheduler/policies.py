"""Compiles a task's placement strategies and constraints (ECS protos) into scorers and filters.

    strategies:   binpack:cpu  binpack:memory  spread:instanceId  spread:attribute:NAME  random
    constraints:  distinctInstance  memberOf EXPRESSION (syntax in `expressions`)

Errors are `InvalidArgument` with one line saying what to write instead;
the API validates with these same functions, so a bad rule is refused
before anything is stored.
"""

from __future__ import annotations

from collections.abc import Sequence

from berth.errors import InvalidArgument
from berth.names import shown
from berth.v1 import resources_pb2 as pb
from controlplane.scheduler.expressions import attribute_field, parse_expression
from controlplane.scheduler.filters import AttributeMatch, DistinctInstance
from controlplane.scheduler.model import Filter, Scorer
from controlplane.scheduler.scorers import (
    DEFAULT_SCORERS,
    BinpackCpu,
    BinpackMemory,
    Random,
    Spread,
    SpreadAttribute,
)

# ECS: at most 5 placement strategies and 10 placement constraints per task or service.
MAX_STRATEGIES = 5
MAX_CONSTRAINTS = 10


def compile_constraints(constraints: Sequence[pb.PlacementConstraint]) -> tuple[Filter, ...]:
    if len(constraints) > MAX_CONSTRAINTS:
        raise InvalidArgument(
            f"{len(constraints)} placement constraints given: the limit is {MAX_CONSTRAINTS}"
        )
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
                f"placement constraint type {shown(constraint.type, 32)} is unknown: "
                "use distinctInstance or memberOf"
            )
    return tuple(filters)


def compile_strategy(strategies: Sequence[pb.PlacementStrategy]) -> tuple[Scorer, ...]:
    """The strategies in order, each breaking the previous one's ties; none means spread."""
    if len(strategies) > MAX_STRATEGIES:
        raise InvalidArgument(f"{len(strategies)} placement strategies given: the limit is {MAX_STRATEGIES}")
    scorers: list[Scorer] = []
    for strategy in strategies:
        kind, field = strategy.type, strategy.field
        attribute = attribute_field(field)
        if kind == "binpack" and field in ("memory", ""):
            scorers.append(BinpackMemory())
        elif kind == "binpack" and field == "cpu":
            scorers.append(BinpackCpu())
        elif kind == "spread" and field in ("instanceId", "host", ""):
            scorers.append(Spread())
        elif kind == "spread" and attribute is not None:
            scorers.append(SpreadAttribute(attribute))
        elif kind == "random" and not field:
            scorers.append(Random())
        else:
            raise InvalidArgument(
                f"placement strategy {shown(f'{kind}:{field}', 48)} is invalid: use binpack:cpu, "
                "binpack:memory, spread:instanceId, spread:attribute:NAME or random"
            )
    return tuple(scorers) or DEFAULT_SCORERS
