"""ECS's placementStrategy / placementConstraints lists as Berth's placement messages.

The scheduler's own compiler (controlplane/scheduler/policies.py) judges them
when the operation runs, so both doors accept exactly the same placements."""

from __future__ import annotations

from typing import Any

from berth.v1 import resources_pb2 as pb
from controlplane.ecs.backend import Params
from controlplane.ecs.protocol import invalid

# ECS allows at most 5 strategies and 10 constraints per service or task.
MAX_STRATEGIES = 5
MAX_CONSTRAINTS = 10


def strategies(params: Params) -> list[pb.PlacementStrategy]:
    raw: list[dict[str, Any]] = params.get("placementStrategy", [])
    if len(raw) > MAX_STRATEGIES:
        raise invalid(f"placementStrategy may have at most {MAX_STRATEGIES} entries")
    return [pb.PlacementStrategy(type=s.get("type", ""), field=s.get("field", "")) for s in raw]


def constraints(params: Params) -> list[pb.PlacementConstraint]:
    raw: list[dict[str, Any]] = params.get("placementConstraints", [])
    if len(raw) > MAX_CONSTRAINTS:
        raise invalid(f"placementConstraints may have at most {MAX_CONSTRAINTS} entries")
    return [pb.PlacementConstraint(type=c.get("type", ""), expression=c.get("expression", "")) for c in raw]
