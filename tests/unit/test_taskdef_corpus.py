"""The corpus of real ECS task definitions (tests/data/taskdefs/corpus, sources in SOURCES.md):
every file parses as found, with exactly the notes a user should read, and its ECS shape
(what `describe -o json` prints) parses back to the same definition."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from berth.taskdef import parse_register_document, to_ecs_document

CORPUS = Path(__file__).resolve().parents[1] / "data" / "taskdefs" / "corpus"
EXPECTED_NOTES: dict[str, list[str]] = json.loads((CORPUS / "expected_notes.json").read_text())
FILES = sorted(path for path in CORPUS.glob("*.json") if path.name != "expected_notes.json")

# Files using fields other branches implement; each mark goes when that branch is merged.
_LOGGING = "logConfiguration from wt-logging"
_STORAGE = "volumes, mountPoints, volumesFrom from wt-storage"
_ORDER = "dependsOn from wt-order"
PENDING: dict[str, str] = {
    "containers-consul-server.json": _LOGGING,
    "containers-gunicorn-fargate.json": _LOGGING,
    "containers-jetty-ec2.json": _LOGGING,
    "containers-kibana-ec2.json": _LOGGING,
    "containers-nginx-ec2.json": _LOGGING,
    "containers-tomcat-ec2.json": _LOGGING,
    "containers-wildfly-fargate.json": _LOGGING,
    "ecs-agent-container-ordering-complete.json": f"{_STORAGE}; {_ORDER}",
    "ecs-agent-container-ordering-healthy.json": f"{_STORAGE}; {_ORDER}",
    "ecs-agent-datavolume.json": _STORAGE,
    "ecs-agent-datavolume2.json": _STORAGE,
    "ecs-agent-firelens-fluentbit.json": f"{_LOGGING}; {_ORDER}",
    "ecs-agent-granular-stop-timeout.json": _ORDER,
    "ecs-agent-logdriver-jsonfile.json": _LOGGING,
    "ecs-agent-task-local-vol.json": _STORAGE,
    "ecs-agent-task-shared-vol-write.json": _STORAGE,
    "firelens-appmesh-envoy.json": f"{_LOGGING}; {_ORDER}",
    "firelens-efs-describe.json": f"{_LOGGING}; {_STORAGE}",
    "firelens-health-check.json": _LOGGING,
    "firelens-init-metadata.json": _LOGGING,
    "firelens-tail-shared-volume.json": f"{_LOGGING}; {_STORAGE}",
}


def _cases() -> list[Any]:
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


def test_the_corpus_has_enough_files_each_with_a_source_and_expected_notes() -> None:
    assert len(FILES) >= 24
    sources = (CORPUS / "SOURCES.md").read_text()
    for path in FILES:
        assert f"`{path.name}`" in sources, f"{path.name} has no source in SOURCES.md"
    assert sorted(EXPECTED_NOTES) == [path.name for path in FILES]
    assert set(PENDING) <= set(EXPECTED_NOTES)


@pytest.mark.parametrize("path", _cases())
def test_a_corpus_file_registers_as_found_with_the_expected_notes(path: Path) -> None:
    td, notes = parse_register_document(json.loads(path.read_text()))
    assert notes == EXPECTED_NOTES[path.name]
    # describe -o json prints this shape; registering it again gives the same definition.
    again, _ = parse_register_document(json.loads(json.dumps(to_ecs_document(td))))
    assert again == td
