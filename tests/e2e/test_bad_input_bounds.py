"""Out-of-bounds input (issue 8, finding 4 and 5): one line, non-zero exit, nothing written.

Needs only a control plane (no Docker). Each case crashed the CLI with a
traceback, or was accepted, before the bounds.
"""

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
    berth.ok("taskdef", "register", "--family", "good", "--container-definitions", f"file://{EXAMPLE}")
    berth.ok("service", "create", "--name", "existing", "--task-definition", "good", "--desired-count", "0")
    wait_until(
        lambda: "steady state" in berth.ok("service", "describe", "existing").stdout or None,
        10,
        "the service to settle",
    )
    return berth


def _defs(tmp: Path, containers: list[dict[str, object]]) -> str:
    path = tmp / "defs.json"
    path.write_text(json.dumps(containers))
    return f"file://{path}"


def _register(containers: list[dict[str, object]]) -> Callable[[Path], list[str]]:
    return lambda p: ["taskdef", "register", "--family", "x", "--container-definitions", _defs(p, containers)]


def _create(*extra: str) -> Callable[[Path], list[str]]:
    return lambda p: ["service", "create", "--name", "new", "--task-definition", "good", *extra]


HUGE = 2**32 - 1
CASES: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "memory past uint32": (
        _register([{"name": "x", "image": "busybox", "memory": 4294967296}]),
        "containerDefinitions[0].memory: Input should be less than or equal to 4194304",
    ),
    "cpu sum past uint32": (
        _register([{"name": f"c{i}", "image": "busybox", "memory": 64, "cpu": HUGE} for i in range(2)]),
        "containerDefinitions[0].cpu: Input should be less than or equal to 262144",
    ),
    "cpu sum past the task limit": (
        _register([{"name": f"c{i}", "image": "busybox", "memory": 64, "cpu": 262144} for i in range(2)]),
        "a task reserves at most 262144",
    ),
    "eleven containers": (
        _register([{"name": f"c{i}", "image": "busybox", "memory": 64} for i in range(11)]),
        "at most 10",
    ),
    "container name with a newline": (
        _register([{"name": "web\n", "image": "busybox", "memory": 64}]),
        "containerDefinitions[0].name 'web\\n' is invalid",
    ),
    "image with a space": (
        _register([{"name": "web", "image": "busybox latest", "memory": 64}]),
        "containerDefinitions[0].image 'busybox latest' is invalid",
    ),
    "superscript port": (_create("--port", "²"), "--port '²' is invalid"),
    "port out of range": (_create("--port", "70000:80"), "--port '70000:80' is invalid"),
    "superscript container port": (_create("--port", "80:²"), "--port '80:²' is invalid"),
    "superscript revision": (
        lambda p: ["task", "run", "--task-definition", "good:²"],
        "task definition 'good:²' is invalid",
    ),
    "revision of 5000 digits": (
        lambda p: ["task", "run", "--task-definition", "good:" + "1" * 5000],
        "is invalid: write FAMILY or FAMILY:REVISION",
    ),
    "desired count too large": (_create("--desired-count", "99999999999"), "over the quota of 10000 tasks"),
    "desired count past int64": (_create("--desired-count", "99999999999999999999"), "out of range"),
    "service name with a newline": (
        lambda p: ["service", "create", "--name", "web\n", "--task-definition", "good"],
        "service name 'web\\n' is not a DNS label",
    ),
    "expression of 40 KB": (
        _create("--placement-constraints", "type=memberOf,expression=attribute:a" + " " * 40_000 + "in x"),
        "the limit is 2000",
    ),
    "six strategies": (
        _create(*["--placement-strategy", "type=random"] * 6),
        "6 placement strategies given: the limit is 5",
    ),
    "stop reason past 255": (
        lambda p: ["task", "stop", "abcdef123456", "--reason", "x" * 256],
        "the stop reason is 256 characters: the limit is 255",
    ),
    "expose superscript port": (
        lambda p: ["service", "expose", "existing", "--port", "8080:²"],
        "--port '8080:²' is invalid",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_out_of_bounds_input_is_refused_cleanly(
    case: str, prepared: Berth, controlplane: ControlPlaneProcess, tmp_path: Path
) -> None:
    build_args, message = CASES[case]
    before = controlplane.operator_records()
    prepared(*build_args(tmp_path)).assert_refused(message)
    assert controlplane.operator_records() == before, "bad input must not write to etcd"
