"""The corpus of real ECS task definitions (tests/data/taskdefs/corpus, sources in SOURCES.md):
its files, the notes each should register with, the files still waiting for fields other
branches implement (expected to fail until then), and how describe output is compared with the
file registered, for the unit and end-to-end tests alike."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from berth.taskdef import READ_ONLY_DOCUMENT_FIELDS
from berth.taskdef_aws import CONTAINER_FIELDS, DOCUMENT_FIELDS, IGNORED_DOCUMENT_FIELDS

CORPUS = Path(__file__).resolve().parent / "data" / "taskdefs" / "corpus"
EXPECTED_NOTES: dict[str, list[str]] = json.loads((CORPUS / "expected_notes.json").read_text())
FILES = sorted(path for path in CORPUS.glob("*.json") if path.name != "expected_notes.json")

# Files using fields other branches implement; each mark goes when that branch is merged.
PENDING: dict[str, str] = {}


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


def registered_document(path: Path) -> dict[str, Any]:
    """The document a corpus file registers: describe-task-definition output is unwrapped (its
    wrapper's tags belong to the definition), and describe's read-only fields are left out."""
    document: dict[str, Any] = json.loads(path.read_text())
    if set(document) <= {"taskDefinition", "tags"} and "taskDefinition" in document:
        wrapper = document
        document = dict(wrapper["taskDefinition"])
        if wrapper.get("tags") and "tags" not in document:
            document["tags"] = wrapper["tags"]
    return {k: v for k, v in document.items() if k not in READ_ONLY_DOCUMENT_FIELDS}


def _asks_for_nothing(value: Any) -> bool:
    # A zero number (cpu 0) asks for no reservation, as an absent one does.
    zero = type(value) is int and value == 0
    return value is None or value == [] or value == {} or zero


def _same(written: Any, shown: Any) -> bool:
    if isinstance(written, str) and isinstance(shown, int) and not isinstance(shown, bool):
        return written.strip() == str(shown)  # numbers written as strings are numbers
    if isinstance(written, int) and isinstance(shown, str) and not isinstance(written, bool):
        return str(written) == shown  # task cpu/memory are shown as ECS's strings
    if isinstance(written, str) and isinstance(shown, str) and written.startswith("/") and written != "/":
        return written.rstrip("/") == shown  # paths are normalised: "/data/" is "/data"
    return bool(written == shown)


def describe_differences(written: Any, shown: Any, where: str = "taskDefinition") -> list[str]:
    """Where `describe -o json` does not show a field as it was written: every field of the
    input must be there with an equal value. Berth's normalisations: explicit nulls, zeros and
    empty lists or objects ask for nothing (shown absent); numbers written as strings are
    numbers; task cpu and memory are shown as strings; paths lose a trailing "/".
    Fields describe adds (defaults) are not differences."""
    if isinstance(written, dict) and isinstance(shown, dict):
        out = []
        for key, value in written.items():
            if _asks_for_nothing(value) and _asks_for_nothing(shown.get(key)):
                continue
            if key not in shown:
                out.append(f"{where}.{key} is not shown")
            else:
                out.extend(describe_differences(value, shown[key], f"{where}.{key}"))
        return out
    if isinstance(written, list) and isinstance(shown, list) and len(written) == len(shown):
        return [
            difference
            for i, (item, described) in enumerate(zip(written, shown, strict=True))
            for difference in describe_differences(item, described, f"{where}[{i}]")
        ]
    if _same(written, shown):
        return []
    return [f"{where}: written {json.dumps(written)[:200]}, shown {json.dumps(shown)[:200]}"]


def _asking(fields: dict[str, Any]) -> list[str]:
    """The fields that ask for something (nulls and empty lists or objects do not)."""
    return [key for key, value in fields.items() if not _asks_for_nothing(value)]


def aws_only_differences(written: dict[str, Any], shown: dict[str, Any]) -> list[str]:
    """The AWS-only fields Berth keeps as registered that describe does not show exactly so."""
    out = [
        key
        for key in _asking(written)
        if key in DOCUMENT_FIELDS | IGNORED_DOCUMENT_FIELDS and shown.get(key) != written[key]
    ]
    described = shown.get("containerDefinitions", [])
    for i, container in enumerate(written["containerDefinitions"]):
        mine = described[i] if i < len(described) else {}
        out.extend(
            f"containerDefinitions[{i}].{key}"
            for key in _asking(container)
            if key in CONTAINER_FIELDS and mine.get(key) != container[key]
        )
    return out
