"""What Berth writes to disk is private: directories 0700, files 0600, whatever the umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import host
from berth.files import open_private_append, private_dir, tighten, write_private


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def permissive_umask() -> Iterator[None]:
    # The loosest umask there is: modes must not depend on it.
    previous = os.umask(0)
    yield
    os.umask(previous)


def test_a_new_directory_and_its_missing_parents_exist_and_the_directory_is_0700(tmp_path: Path) -> None:
    path = private_dir(tmp_path / "a" / "data")
    assert path.is_dir() and mode(path) == 0o700


def test_an_existing_loose_directory_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.mkdir(mode=0o777)
    os.chmod(path, 0o777)
    private_dir(path)
    assert mode(path) == 0o700


def test_write_private_creates_0600_and_replaces_atomically(tmp_path: Path) -> None:
    path = tmp_path / "file"
    write_private(path, "one")
    assert (path.read_text(), mode(path)) == ("one", 0o600)
    os.chmod(path, 0o644)
    write_private(path, b"two")
    assert (path.read_text(), mode(path)) == ("two", 0o600)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # no temporary left behind


def test_open_private_append_creates_0600_and_tightens_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with open_private_append(path) as file:
        file.write(b"a\n")
    assert mode(path) == 0o600
    os.chmod(path, 0o644)
    with open_private_append(path) as file:
        file.write(b"b\n")
    assert (path.read_bytes(), mode(path)) == (b"a\nb\n", 0o600)


def test_tighten_ignores_a_missing_file(tmp_path: Path) -> None:
    tighten(tmp_path / "absent")
    assert not (tmp_path / "absent").exists()


def test_an_older_agents_loose_node_id_and_data_dir_are_tightened_at_start(tmp_path: Path) -> None:
    data = tmp_path / "agent"
    data.mkdir(mode=0o755)
    (data / "node-id").write_text("node-1\n")
    os.chmod(data / "node-id", 0o644)
    host.prepare_data_dir(data)
    assert (mode(data), mode(data / "node-id")) == (0o700, 0o600)
    assert host.load_node_id(data) == "node-1"
