"""`berth exec` end to end on real Docker (the `agent` fixture; run under
`flock /tmp/berth-docker.lock`): a command's output and exit code, stdin with -i,
stdout and stderr apart, another container of the task, an interactive terminal (the
CLI under a pseudo-terminal: raw mode, restored after), a viewer refused and audited,
and a stopped or unknown task refused in one line.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from berth.testing.cli import Berth
from berth.testing.daemons import AgentProcess, ControlPlaneProcess
from berth.testing.waiting import wait_until

CLUSTER = "exec"
LOOP = "trap 'exit 0' TERM; while true; do sleep 0.5; done"
SHELL = [
    {
        "name": "main",
        "image": "berth-busybox:2",
        "memory": 32,
        "essential": True,
        "entryPoint": ["sh", "-c"],
        "command": [LOOP],
        "stopTimeout": 2,
    },
    {
        "name": "side",
        "image": "berth-busybox:2",
        "memory": 32,
        "essential": False,
        "entryPoint": ["sh", "-c"],
        "command": ["mkdir -p /tmp; echo side > /tmp/who; " + LOOP],
        "stopTimeout": 2,
    },
]


@pytest.fixture(scope="module")
def task_id(berth: Berth, agent: AgentProcess, tmp_path_factory: pytest.TempPathFactory) -> str:
    berth("cluster", "create", CLUSTER)
    berth.register("shell", SHELL, tmp_path_factory.mktemp("taskdefs"))
    task = berth.ok("task", "run", "--cluster", CLUSTER, "--task-definition", "shell").stdout.strip()
    wait_until(lambda: berth.running_exactly(CLUSTER, 1), 60, "the task RUNNING")
    return task


def test_a_command_prints_and_the_cli_exits_with_its_code(berth: Berth, task_id: str) -> None:
    result = berth(
        "exec", task_id[:12], "--cluster", CLUSTER, "--", "sh", "-c", "echo hi; echo oops >&2; exit 3"
    )
    assert (result.exit_code, result.stdout, result.stderr) == (3, "hi\n", "oops\n")
    assert berth("exec", task_id, "--cluster", CLUSTER, "--", "true").exit_code == 0


def test_stdin_is_forwarded_with_dash_i(berth: Berth, task_id: str) -> None:
    result = berth("exec", "-i", task_id, "--cluster", CLUSTER, "--", "cat", input="one\ntwo\n")
    assert (result.exit_code, result.stdout) == (0, "one\ntwo\n")
    # Without -i the command's stdin is closed: cat ends at once.
    result = berth("exec", task_id, "--cluster", CLUSTER, "--", "cat", input="not sent\n")
    assert (result.exit_code, result.stdout) == (0, "")


def test_another_container_of_the_task_by_name(berth: Berth, task_id: str) -> None:
    result = berth("exec", task_id, "--cluster", CLUSTER, "--container", "side", "--", "cat", "/tmp/who")
    assert (result.exit_code, result.stdout) == (0, "side\n")
    berth("exec", task_id, "--cluster", CLUSTER, "--container", "nope", "--", "ls").assert_refused(
        "no container named 'nope'"
    )


def test_an_interactive_terminal_in_raw_mode_restored_after(
    controlplane: ControlPlaneProcess, task_id: str
) -> None:
    """The CLI with a pseudo-terminal for stdin and stdout, as an operator's shell gives it."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [
            sys.executable, "-m", "berth.cli.main", "--server", controlplane.address,
            "--config", str(controlplane.admin_config),
            "exec", task_id, "--cluster", CLUSTER, "--", "sh", "-c", "read line; echo got-$line; tty; exit 5",
        ],
        stdin=follower, stdout=follower, stderr=follower, close_fds=True,
    )  # fmt: skip
    os.close(follower)
    seen = b""
    try:
        deadline = time.monotonic() + 30
        sent = False
        while process.poll() is None or select.select([leader], [], [], 0)[0]:
            assert time.monotonic() < deadline, f"no answer in time; saw {seen!r}"
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    seen += os.read(leader, 4096)
                except OSError:
                    break
            if not sent and process.poll() is None:
                time.sleep(1)  # give the command time to start before typing (a typed line waits anyway)
                os.write(leader, b"typed\r")
                sent = True
        assert process.wait(timeout=10) == 5
        assert b"got-typed" in seen and b"/dev/pts/" in seen
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        os.close(leader)


def test_the_local_terminal_is_restored_even_when_the_exec_fails(
    controlplane: ControlPlaneProcess, task_id: str
) -> None:
    leader, follower = pty.openpty()
    try:
        before = termios.tcgetattr(follower)
        process = subprocess.run(
            [
                sys.executable, "-m", "berth.cli.main", "--server", controlplane.address,
                "--config", str(controlplane.admin_config),
                "exec", "ffffffffffff", "--cluster", CLUSTER, "--", "sh",
            ],
            stdin=follower, capture_output=True, timeout=60,
        )  # fmt: skip
        assert process.returncode == 1
        assert process.stderr.decode().strip().splitlines() == [
            f"error: task ffffffffffff does not exist in cluster '{CLUSTER}'"
        ]
        assert termios.tcgetattr(follower) == before
    finally:
        os.close(leader)
        os.close(follower)


def test_a_viewer_is_refused_and_the_audit_log_shows_both(
    controlplane: ControlPlaneProcess, berth: Berth, task_id: str, tmp_path: Path
) -> None:
    berth.ok("user", "create", "vic", "--role", "viewer", "--out", str(tmp_path / "vic"))
    viewer = Berth(controlplane.address, tmp_path / "vic")
    viewer("exec", task_id, "--cluster", CLUSTER, "--", "id").assert_refused("user vic (viewer) may not Exec")
    assert berth("exec", task_id, "--cluster", CLUSTER, "--", "sh", "-c", "exit 4").exit_code == 4
    audit = [json.loads(line) for line in (controlplane.data_dir / "audit.log").read_text().splitlines()]
    execs = [e for e in audit if e["call"] == "Exec"]
    denied = [e for e in execs if e["user"] == "vic"]
    assert denied and denied[-1]["result"].startswith("denied:") and "command=id" in denied[-1]["target"]
    assert [e["result"] for e in execs if e["user"] == "admin"][-2:] == ["started", "ok: exit code 4"]
    assert f"task={task_id}" in execs[-1]["target"] and "command=sh -c 'exit 4'" in execs[-1]["target"]


def test_a_stopped_or_unknown_task_is_refused_in_one_line(berth: Berth, task_id: str) -> None:
    berth("exec", "ffffffffffff", "--cluster", CLUSTER, "--", "ls").assert_refused("does not exist")
    berth.ok("task", "stop", task_id, "--cluster", CLUSTER)
    wait_until(lambda: berth.running_exactly(CLUSTER, 0), 60, "the task stopped")
    berth("exec", task_id, "--cluster", CLUSTER, "--", "ls").assert_refused("exec needs a RUNNING task")
