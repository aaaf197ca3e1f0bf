"""requirements.lock satisfies pyproject.toml (CI fails when it is stale), and the
check itself catches each way a lock goes stale."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from types import ModuleType

import pytest
from packaging.requirements import Requirement

from berth.testing.daemons import REPO


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lock_script", REPO / "scripts" / "lock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lock = _load_script()
ENVIRONMENTS = [lock.here(), lock.TARGET]
LOCK = """\
# header
typer==0.29.2 \\
    --hash=sha256:aaaa \\
    --hash=sha256:bbbb
    # via berth (pyproject.toml)
colorama==0.4.6 ; sys_platform == 'win32' \\
    --hash=sha256:cccc
"""


def test_the_committed_lock_satisfies_pyproject() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "lock.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_lock_that_pins_every_requirement_within_its_bounds_passes() -> None:
    assert lock.problems(LOCK, [Requirement("typer>=0.15.4")], ENVIRONMENTS) == []


@pytest.mark.parametrize(
    ("requirement", "complaint"),
    [
        ("typer>=0.30", "the lock pins typer==0.29.2"),
        ("rich>=13", "not pinned"),
        # A pin that only applies on Windows does not satisfy a Linux requirement.
        ("colorama", "not pinned"),
    ],
)
def test_a_stale_lock_fails(requirement: str, complaint: str) -> None:
    found = lock.problems(LOCK, [Requirement(requirement)], ENVIRONMENTS)
    assert found and all(complaint in problem for problem in found), found


def test_requirements_for_other_platforms_need_no_pin() -> None:
    assert lock.problems(LOCK, [Requirement("pywin32 ; sys_platform == 'win32'")], ENVIRONMENTS) == []


def test_a_pin_without_hashes_or_an_exact_version_fails() -> None:
    found = lock.problems(
        "typer==0.29.2\nrich>=13 --hash=sha256:aa\nyaml --hash=sha256:bb\n", [], ENVIRONMENTS
    )
    assert any("typer==0.29.2: no --hash" in problem for problem in found), found
    assert any("rich>=13: a lock line must pin one exact version" in problem for problem in found), found
