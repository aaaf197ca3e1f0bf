"""`--placement-strategy` / `--placement-constraints` in the AWS CLI's shorthand.

    --placement-strategy type=spread,field=attribute:zone
    --placement-strategy type=binpack,field=memory
    --placement-constraints type=distinctInstance
    --placement-constraints 'type=memberOf,expression=attribute:zone in [a, b]'

The control plane validates the meaning; this only splits the text.
"""

from __future__ import annotations

import re

import typer

from berth.cli.client import fail
from berth.names import shown
from berth.v1 import resources_pb2 as pb

# The options `service create` and `task run` share, in the shorthand above.
PlacementStrategyOption = typer.Option(
    None,
    "--placement-strategy",
    metavar="STRATEGY",
    help="type=binpack|spread|random[,field=...]; repeatable, in order (default: spread by instanceId)",
)
PlacementConstraintsOption = typer.Option(
    None,
    "--placement-constraints",
    metavar="CONSTRAINT",
    help="type=distinctInstance or type=memberOf,expression=...; repeatable",
)

_SHORTHAND = re.compile(r"type=(?P<type>[A-Za-z]+)(?:,(?P<key>field|expression)=(?P<value>.*))?")


def _split(text: str, option: str, key: str) -> tuple[str, str]:
    match = _SHORTHAND.fullmatch(text.strip())
    if not match or (match["key"] and match["key"] != key):
        raise fail(f"{option} {shown(text)} is invalid: write type=TYPE[,{key}=VALUE]")
    return match["type"], (match["value"] or "").strip().strip("\"'")


def strategies(values: list[str] | None) -> list[pb.PlacementStrategy]:
    return [
        pb.PlacementStrategy(type=t, field=f)
        for t, f in (_split(v, "--placement-strategy", "field") for v in values or [])
    ]


def constraints(values: list[str] | None) -> list[pb.PlacementConstraint]:
    return [
        pb.PlacementConstraint(type=t, expression=e)
        for t, e in (_split(v, "--placement-constraints", "expression") for v in values or [])
    ]
