"""The corpus of real ECS task definitions (tests/data/taskdefs/corpus, sources in SOURCES.md):
its files, the notes each should register with, and the files still waiting for fields other
branches implement (expected to fail until then), for the unit and end-to-end tests alike."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

CORPUS = Path(__file__).resolve().parent / "data" / "taskdefs" / "corpus"
EXPECTED_NOTES: dict[str, list[str]] = json.loads((CORPUS / "expected_notes.json").read_text())
FILES = sorted(path for path in CORPUS.glob("*.json") if path.name != "expected_notes.json")

# Files using fields other branches implement; each mark goes when that branch is merged.
_ORDER = "dependsOn from wt-order"
PENDING: dict[str, str] = {
    "ecs-agent-container-ordering-complete.json": _ORDER,
    "ecs-agent-container-ordering-healthy.json": _ORDER,
    "ecs-agent-firelens-fluentbit.json": _ORDER,
    "ecs-agent-granular-stop-timeout.json": _ORDER,
    "firelens-appmesh-envoy.json": _ORDER,
}


def cases() -> list[Any]:
    return [
        pytest.param(
            path,
            id=path.stem,
            marks=(
                [pytest.mark.xfail(strict=True, reason=f"needs {PENDING[path.name]}")]
                if path.name in PENDING
                else []
            ),
        )
        for path in FILES
    ]
