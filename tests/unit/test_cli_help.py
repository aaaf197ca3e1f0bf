"""Every `berth` command and group renders its --help: walks the whole CLI tree,
so a command added tomorrow is covered without touching this file."""

from __future__ import annotations

import re
import shutil
import subprocess
from importlib.metadata import version
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from berth.cli.main import app


def _walk(command: Any, path: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The path of this command and of every command below it (groups have `.commands`)."""
    paths = [path]
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        paths.extend(_walk(sub, (*path, name)))
    return paths


COMMANDS = _walk(typer.main.get_command(app), ())


def test_the_walk_finds_groups_and_their_commands() -> None:
    # Guards the walk itself: a walk that found only the root would make every check below vacuous.
    assert ("service", "create") in COMMANDS
    assert ("service", "expose") in COMMANDS
    assert ("task", "list") in COMMANDS
    assert len(COMMANDS) > 20


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "berth")
def test_help_renders(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], prog_name="berth", env={"COLUMNS": "120"})
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 0, result.output
    # Rich may draw borders around the usage line; compare words, not layout.
    words = " ".join(result.output.replace("│", " ").split())
    assert "Usage: " + " ".join(("berth", *path)) in words, result.output


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "berth")
def test_options_and_arguments_show_a_meaningful_metavar_not_a_type_tag(path: tuple[str, ...]) -> None:
    output = CliRunner().invoke(app, [*path, "--help"], prog_name="berth").output
    tagged = [line for line in output.splitlines() if re.search(r"<[a-z]+(\[[a-z]+\])?>", line)]
    assert not tagged, "give these a metavar: " + "\n".join(tagged)


def test_defaults_are_shown() -> None:
    output = CliRunner().invoke(app, ["service", "create", "--help"], prog_name="berth").output
    assert "[default: 1]" in output
    assert "[default: default]" in output


def test_root_has_version_and_shell_completion() -> None:
    result = CliRunner().invoke(app, ["--version"], prog_name="berth")
    assert result.exit_code == 0
    assert result.output.strip() == f"berth {version('berth')}"
    output = CliRunner().invoke(app, ["--help"], prog_name="berth").output
    assert "--install-completion" in output
    assert "--show-completion" in output


@pytest.mark.parametrize(
    ("program", "shown"),
    [
        ("berth-agent", "(default: 53)"),
        ("berth-controlplane", "(default: 127.0.0.1:7400)"),
        ("berth-hollow-agents", "--exit-after"),
    ],
)
def test_daemon_help_renders_with_defaults(program: str, shown: str) -> None:
    executable = shutil.which(program)
    assert executable is not None, f"{program} is not installed"
    result = subprocess.run([executable, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert shown in " ".join(result.stdout.split())
