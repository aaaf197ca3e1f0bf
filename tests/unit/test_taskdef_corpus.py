"""The corpus of real ECS task definitions (tests/data/taskdefs/corpus, sources in SOURCES.md):
every file parses as found, with exactly the notes a user should read; its ECS shape (what
`describe -o json` prints) shows every field as written, the AWS-only ones too, and parses back
to the same definition."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from berth.taskdef import parse_register_document, to_ecs_document
from tests.taskdef_corpus import (
    CORPUS,
    EXPECTED_NOTES,
    FILES,
    PENDING,
    aws_only_differences,
    cases,
    describe_differences,
    registered_document,
)


def test_the_corpus_has_enough_files_each_with_a_source_and_expected_notes() -> None:
    assert len(FILES) >= 24
    assert len(FILES) - len(PENDING) >= 20  # issue 11: at least 20 real files register unchanged
    sources = (CORPUS / "SOURCES.md").read_text()
    for path in FILES:
        assert f"`{path.name}`" in sources, f"{path.name} has no source in SOURCES.md"
    assert sorted(EXPECTED_NOTES) == [path.name for path in FILES]
    assert set(PENDING) <= set(EXPECTED_NOTES)


@pytest.mark.parametrize("path", cases())
def test_a_corpus_file_registers_as_found_with_the_expected_notes(path: Path) -> None:
    td, notes = parse_register_document(json.loads(path.read_text()))
    assert notes == EXPECTED_NOTES[path.name]
    # describe shows every field as written (after Berth's normalisations) ...
    written, shown = registered_document(path), to_ecs_document(td)
    assert describe_differences(written, shown) == []
    # ... the AWS-only fields Berth keeps, exactly.
    assert aws_only_differences(written, shown) == []
    # describe -o json prints this shape; registering it again gives the same definition.
    again, _ = parse_register_document(json.loads(json.dumps(to_ecs_document(td))))
    assert again == td


def test_describe_differences_finds_a_field_shown_otherwise_or_not_at_all() -> None:
    written = {
        "family": "app",
        "cpu": 256,
        "taskRoleArn": "arn:aws:iam::1:role/app",
        "volumes": [],
        "containerDefinitions": [{"name": "web", "memory": "64", "environment": [], "links": None}],
    }
    shown = {"family": "app", "cpu": "256", "taskRoleArn": "arn:aws:iam::1:role/app"} | {
        "containerDefinitions": [{"name": "web", "memory": 64, "essential": True}]
    }
    assert describe_differences(written, shown) == []
    assert describe_differences(written | {"executionRoleArn": "arn:x"}, shown) == [
        "taskDefinition.executionRoleArn is not shown"
    ]
    assert describe_differences(written, shown | {"taskRoleArn": "arn:y"}) == [
        'taskDefinition.taskRoleArn: written "arn:aws:iam::1:role/app", shown "arn:y"'
    ]
    changed = shown | {"containerDefinitions": [{"name": "web", "memory": 65}]}
    assert describe_differences(written, changed) == [
        'taskDefinition.containerDefinitions[0].memory: written "64", shown 65'
    ]


def test_aws_only_differences_finds_a_kept_field_shown_otherwise() -> None:
    written = {
        "taskRoleArn": "arn:aws:iam::1:role/app",
        "containerDefinitions": [{"name": "web", "repositoryCredentials": {"credentialsParameter": "a"}}],
    }
    assert aws_only_differences(written, written) == []
    shown = written | {"containerDefinitions": [{"name": "web"}]}
    assert aws_only_differences(written, shown) == ["containerDefinitions[0].repositoryCredentials"]
    assert aws_only_differences(written, {"containerDefinitions": [{"name": "web"}]}) == [
        "taskRoleArn",
        "containerDefinitions[0].repositoryCredentials",
    ]
