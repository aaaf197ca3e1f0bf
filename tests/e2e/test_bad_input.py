"""Bad input: a non-zero exit, one line naming the problem, nothing written to etcd."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from berth.testing.cli import Berth
from berth.testing.daemons import REPO, ControlPlaneProcess
from berth.testing.waiting import wait_until

EXAMPLE = REPO / "examples" / "web.json"


@pytest.fixture(scope="module")
def prepared(berth: Berth) -> Berth:
    berth.ok("cluster", "create", "bad")
    berth.ok("taskdef", "register", "--family", "good", "--container-definitions", f"file://{EXAMPLE}")
    berth.ok(
        "service",
        "create",
        "--cluster",
        "bad",
        "--name",
        "existing",
        "--task-definition",
        "good",
        "--desired-count",
        "0",
    )
    # Let the controllers settle (the steady-state event is their last write),
    # so any later change of the etcd revision can only come from the test.
    wait_until(
        lambda: (
            "steady state" in berth.ok("service", "describe", "existing", "--cluster", "bad").stdout or None
        ),
        10,
        "the service to settle",
    )
    return berth


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "defs.json"
    path.write_text(text)
    return f"file://{path}"


CASES: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "malformed JSON": (
        lambda p: [
            "taskdef",
            "register",
            "--family",
            "x",
            "--container-definitions",
            _write(p, '[{"name": "x",'),
        ],
        "--container-definitions is not valid JSON",
    ),
    "unknown container-definition field": (
        lambda p: [
            "taskdef",
            "register",
            "--family",
            "x",
            "--container-definitions",
            _write(p, json.dumps([{"name": "x", "image": "busybox", "memory": 16, "memroy": 1}])),
        ],
        "containerDefinitions[0].memroy: unknown field 'memroy'",
    ),
    "missing file": (
        lambda p: [
            "taskdef",
            "register",
            "--family",
            "x",
            "--container-definitions",
            "file:///nonexistent.json",
        ],
        "cannot read /nonexistent.json",
    ),
    "negative desired count": (
        lambda p: [
            "service",
            "create",
            "--cluster",
            "bad",
            "--name",
            "neg",
            "--task-definition",
            "good",
            "--desired-count",
            "-1",
        ],
        "desired count -1 is negative",
    ),
    "negative desired count on update": (
        lambda p: ["service", "update", "existing", "--cluster", "bad", "--desired-count", "-3"],
        "desired count -3 is negative",
    ),
    "service name not a DNS label": (
        lambda p: ["service", "create", "--cluster", "bad", "--name", "Web_1", "--task-definition", "good"],
        "service name 'Web_1' is not a DNS label",
    ),
    "cluster name not a DNS label": (
        lambda p: ["cluster", "create", "Bad.Name"],
        "cluster name 'Bad.Name' is not a DNS label",
    ),
    "unknown task definition": (
        lambda p: [
            "service",
            "create",
            "--cluster",
            "bad",
            "--name",
            "ghost",
            "--task-definition",
            "nosuch:4",
        ],
        "task definition nosuch:4 does not exist",
    ),
    "unknown task definition family": (
        lambda p: ["task", "run", "--cluster", "bad", "--task-definition", "nosuch"],
        "task definition family 'nosuch' has no active revision",
    ),
    "unknown cluster": (
        lambda p: ["service", "create", "--cluster", "nowhere", "--name", "web", "--task-definition", "good"],
        "cluster 'nowhere' does not exist",
    ),
    "duplicate service": (
        lambda p: [
            "service",
            "create",
            "--cluster",
            "bad",
            "--name",
            "existing",
            "--task-definition",
            "good",
        ],
        "service 'existing' already exists in cluster 'bad'",
    ),
    "unknown task": (
        lambda p: ["task", "stop", "abcdef123456", "--cluster", "bad"],
        "task abcdef123456 does not exist",
    ),
    "default cluster": (
        lambda p: ["cluster", "delete", "default"],
        "the default cluster cannot be deleted",
    ),
    # Deployments: refused by the control plane (the CLI passes these through).
    "update to an unknown task definition": (
        lambda p: ["service", "update", "existing", "--cluster", "bad", "--task-definition", "nosuch:4"],
        "task definition nosuch:4 does not exist",
    ),
    "update to an unknown family": (
        lambda p: ["service", "update", "existing", "--cluster", "bad", "--task-definition", "nosuch"],
        "task definition family 'nosuch' has no active revision",
    ),
    "minimum healthy percent not below maximum percent": (
        lambda p: [
            "service",
            "update",
            "existing",
            "--cluster",
            "bad",
            "--min-healthy-percent",
            "100",
            "--max-percent",
            "100",
        ],
        "minimum healthy percent 100 must be below maximum percent 100",
    ),
    "create with minimum healthy percent not below maximum percent": (
        lambda p: [
            "service",
            "create",
            "--cluster",
            "bad",
            "--name",
            "new",
            "--task-definition",
            "good",
            "--min-healthy-percent",
            "100",
            "--max-percent",
            "100",
        ],
        "must be below maximum percent 100",
    ),
    # Refused by the CLI before any call.
    "maximum percent below 100": (
        lambda p: ["service", "update", "existing", "--cluster", "bad", "--max-percent", "50"],
        "--max-percent",
    ),
    "minimum healthy percent above 100": (
        lambda p: ["service", "update", "existing", "--cluster", "bad", "--min-healthy-percent", "150"],
        "--min-healthy-percent",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_refused_cleanly(
    case: str, prepared: Berth, controlplane: ControlPlaneProcess, tmp_path: Path
) -> None:
    build_args, message = CASES[case]
    before = controlplane.operator_records()
    prepared(*build_args(tmp_path)).assert_refused(message)
    assert controlplane.operator_records() == before, "bad input must not write to etcd"


def test_output_format_is_checked(prepared: Berth) -> None:
    result = prepared("cluster", "list", "-o", "xml")
    assert result.exit_code == 2
    assert "use one of table, json, yaml" in result.stderr


def test_unreachable_control_plane_is_one_line(controlplane: ControlPlaneProcess) -> None:
    result = Berth("127.0.0.1:1", controlplane.admin_config)("cluster", "list")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: cannot reach the control plane at 127.0.0.1:1 (unavailable); "
        "start berth-controlplane or set --server / BERTH_SERVER"
    )


def test_missing_credentials_are_one_line(tmp_path: Path) -> None:
    result = Berth("127.0.0.1:1", tmp_path / "none")("cluster", "list")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: no Berth credentials at {tmp_path / 'none'}")
    assert len(result.stderr.strip().splitlines()) == 1
