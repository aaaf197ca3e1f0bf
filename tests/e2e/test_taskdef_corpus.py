"""The corpus of real ECS task definitions (tests/data/taskdefs/corpus, sources in SOURCES.md)
against a real control plane (real etcd, TLS; no Docker): every file registers unchanged through
`berth taskdef register --cli-input-json`, printing exactly the notes a user should read;
`describe -o json` shows every field as written (the AWS-only ones Berth keeps too) and registers
again as the same definition."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from berth.testing.cli import Berth
from berth.testing.daemons import ControlPlaneProcess
from tests.taskdef_corpus import (
    EXPECTED_NOTES,
    aws_only_differences,
    cases,
    describe_differences,
    registered_document,
)

_REGISTERED = re.compile(r"registered ([A-Za-z0-9_-]+):([0-9]+)")


def _register(berth: Berth, path: Path) -> tuple[str, int, list[str]]:
    result = berth.ok("taskdef", "register", "--cli-input-json", f"file://{path}")
    match = _REGISTERED.fullmatch(result.stdout.strip())
    assert match is not None, result.stdout
    return match.group(1), int(match.group(2)), result.stderr.splitlines()


def _describe(berth: Berth, family: str, revision: int) -> dict[str, Any]:
    shown: dict[str, Any] = berth.ok("taskdef", "describe", f"{family}:{revision}", "-o", "json").json()
    return shown


@pytest.mark.parametrize("path", cases())
def test_a_corpus_file_registers_unchanged_and_round_trips(
    controlplane: ControlPlaneProcess, tmp_path: Path, path: Path
) -> None:
    berth = Berth.of(controlplane)
    document = json.loads(path.read_text())
    family, revision, notes = _register(berth, path)
    assert family == (document.get("family") or document["taskDefinition"]["family"])
    assert notes == [f"note: {note}" for note in EXPECTED_NOTES[path.name]]

    first = _describe(berth, family, revision)
    # describe shows every field as written (after Berth's normalisations), and the AWS-only
    # fields Berth keeps exactly as written.
    written = registered_document(path)
    assert describe_differences(written, first) == []
    assert aws_only_differences(written, first) == []
    shown = tmp_path / path.name
    shown.write_text(berth.ok("taskdef", "describe", f"{family}:{revision}", "-o", "json").stdout)
    again_family, again, _ = _register(berth, shown)
    assert (again_family, again) == (family, revision + 1)
    second = _describe(berth, family, again)
    assert second["taskDefinitionArn"].endswith(f":task-definition/{family}:{again}")
    for described in (first, second):
        described.pop("revision"), described.pop("registeredAt"), described.pop("taskDefinitionArn")
    assert second == first
