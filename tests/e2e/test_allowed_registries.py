"""`--allowed-registries`: a task definition whose image comes from another
registry is refused in one line naming the policy, and nothing is written."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from berth.testing.cli import Berth
from berth.testing.daemons import ControlPlaneProcess


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlaneProcess]:
    process = ControlPlaneProcess(
        tmp_path_factory.mktemp("registries") / "data", ["--allowed-registries", "docker.io, GHCR.io"]
    )
    process.start()
    yield process
    process.stop()


def _definitions(tmp_path: Path, image: str) -> str:
    path = tmp_path / "defs.json"
    path.write_text(json.dumps([{"name": "app", "image": image, "memory": 16}]))
    return f"file://{path}"


def test_an_image_from_another_registry_is_refused(plane: ControlPlaneProcess, tmp_path: Path) -> None:
    berth = Berth.of(plane)
    before = plane.operator_records()
    result = berth(
        "taskdef",
        "register",
        "--family",
        "x",
        "--container-definitions",
        _definitions(tmp_path, "evil.example/x"),
    )
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: image 'evil.example/x' is from registry 'evil.example', "
        "not in --allowed-registries (docker.io, ghcr.io)"
    )
    assert plane.operator_records() == before


@pytest.mark.parametrize("image", ["busybox", "library/busybox:1.36", "ghcr.io/org/app:1", "docker.io/x/y"])
def test_images_from_allowed_registries_are_registered(
    plane: ControlPlaneProcess, tmp_path: Path, image: str
) -> None:
    berth = Berth.of(plane)
    berth.ok(
        "taskdef", "register", "--family", "ok", "--container-definitions", _definitions(tmp_path, image)
    )
