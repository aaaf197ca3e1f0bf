"""The corpus of real ECS task definitions (tests/data/taskdefs/corpus, sources in SOURCES.md):
every file parses as found, with exactly the notes a user should read, and its ECS shape
(what `describe -o json` prints) parses back to the same definition."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from berth.taskdef import parse_register_document, to_ecs_document
from tests.taskdef_corpus import CORPUS, EXPECTED_NOTES, FILES, PENDING, cases


def test_the_corpus_has_enough_files_each_with_a_source_and_expected_notes() -> None:
    assert len(FILES) >= 24
    sources = (CORPUS / "SOURCES.md").read_text()
    for path in FILES:
        assert f"`{path.name}`" in sources, f"{path.name} has no source in SOURCES.md"
    assert sorted(EXPECTED_NOTES) == [path.name for path in FILES]
    assert set(PENDING) <= set(EXPECTED_NOTES)


@pytest.mark.parametrize("path", cases())
def test_a_corpus_file_registers_as_found_with_the_expected_notes(path: Path) -> None:
    td, notes = parse_register_document(json.loads(path.read_text()))
    assert notes == EXPECTED_NOTES[path.name]
    # describe -o json prints this shape; registering it again gives the same definition.
    again, _ = parse_register_document(json.loads(json.dumps(to_ecs_document(td))))
    assert again == td
