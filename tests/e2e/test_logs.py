"""`berth logs` end to end.

On real Docker (the `agent` fixture): a task's output is shown, `--tail`
and `--follow` work, a hostile line is escaped, `--service` prefixes each
line with its task, and a crashed task's last lines are kept after its
container is gone (shown by `task describe` and `logs`); `task run --wait`
exits with the task's exit code. With a hollow agent (no Docker): the same
path through the control plane, and a node whose agent is gone is refused
in one line.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import docker

from berth.testing.cli import Berth, id_of
from berth.testing.daemons import AgentProcess, ControlPlaneProcess, HollowAgentsProcess
from berth.testing.waiting import wait_until

CLUSTER = "logs"
HOSTILE_SHOWN = "evil \\x1b]0;owned\\x07 \\x1b[31mred"
# Writes 30 lines and a hostile one, then two more once /tmp/go exists, then
# crashes (exit 3, last words on stderr) once /tmp/crash exists.
CHATTY = [
    {
        "name": "chatty",
        "image": "berth-busybox:2",
        "memory": 32,
        "essential": True,
        "entryPoint": ["sh", "-c"],
        "command": [
            "mkdir -p /tmp; trap 'exit 0' TERM; i=1; while [ $i -le 30 ]; do echo line-$i; i=$((i+1)); done; "
            "printf 'evil \\033]0;owned\\007 \\033[31mred\\n'; "
            "while [ ! -e /tmp/go ]; do sleep 0.2; done; echo late-1; echo late-2; "
            "while [ ! -e /tmp/crash ]; do sleep 0.2; done; echo dying-words >&2; exit 3"
        ],
        "stopTimeout": 2,
    }
]
ECHOER = [
    {
        "name": "echoer",
        "image": "berth-busybox:2",
        "memory": 32,
        "essential": True,
        "entryPoint": ["sh", "-c"],
        "command": ["echo hello-from-$HOSTNAME; trap 'exit 0' TERM; while true; do sleep 0.5; done"],
        "stopTimeout": 2,
    }
]
EXITER = [
    {
        "name": "exiter",
        "image": "berth-busybox:2",
        "memory": 32,
        "essential": True,
        "entryPoint": ["sh", "-c"],
        "command": ["echo about to fail; exit 7"],
    }
]


def _register(berth: Berth, family: str, containers: list[dict[str, Any]], tmp_path: Path) -> None:
    path = tmp_path / f"{family}.json"
    path.write_text(json.dumps(containers))
    berth.ok("taskdef", "register", "--family", family, "--container-definitions", f"file://{path}")


def _container(task_id: str) -> Any:
    client = docker.from_env()
    try:
        # Not containers.list: it inspects each one it lists, and a container the
        # agent removes in between (its task stopped) would fail with NotFound.
        for row in client.api.containers(all=True, filters={"label": f"berth.task-id={task_id}"}):
            try:
                return client.containers.get(row["Id"])
            except docker.errors.NotFound:
                continue
        return None
    finally:
        client.close()


def _touch(task_id: str, path: str) -> None:
    container = _container(task_id)
    assert container is not None, f"task {task_id} has no container"
    result = container.exec_run(["touch", path])
    assert result.exit_code == 0, result.output


class Follower:
    """`berth logs -f` in a process of its own; its stdout lines arrive on a queue."""

    def __init__(self, berth: Berth, *args: str) -> None:
        config = ["--config", str(berth.config)] if berth.config is not None else []
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "berth.cli.main",
                "--server",
                berth.server,
                *config,
                "logs",
                "--follow",
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def until(self, wanted: str, timeout: float) -> list[str]:
        """Lines read until one equals `wanted` (included)."""
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while not seen or seen[-1] != wanted:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {wanted!r} within {timeout}s; saw {seen!r}"
            try:
                seen.append(self.lines.get(timeout=remaining))
            except queue.Empty:
                continue
        return seen

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


def test_logs_of_a_task_tail_follow_escape_and_kept_last_lines(
    berth: Berth, agent: AgentProcess, tmp_path: Path
) -> None:
    berth("cluster", "create", CLUSTER)
    _register(berth, "chatty", CHATTY, tmp_path)
    task_id = berth.ok("task", "run", "--cluster", CLUSTER, "--task-definition", "chatty").stdout.strip()
    short = task_id[:12]

    def output_so_far() -> str | None:
        out = berth("logs", short, "--cluster", CLUSTER).stdout
        return out if HOSTILE_SHOWN in out else None

    shown, _ = wait_until(output_so_far, 30, "the task's output")
    lines = shown.splitlines()
    assert lines == [f"line-{i}" for i in range(1, 31)] + [HOSTILE_SHOWN]
    assert "\x1b" not in shown and "\x07" not in shown  # escaped, never sent to the terminal

    tail = berth.ok("logs", short, "--cluster", CLUSTER, "--tail", "3").stdout.splitlines()
    assert tail == ["line-29", "line-30", HOSTILE_SHOWN]
    assert berth.ok(
        "logs", short, "--cluster", CLUSTER, "--since", "1h", "--tail", "1"
    ).stdout.splitlines() == [HOSTILE_SHOWN]

    follower = Follower(berth, short, "--cluster", CLUSTER, "--tail", "1")
    try:
        assert follower.until(HOSTILE_SHOWN, 20) == [HOSTILE_SHOWN]
        _touch(task_id, "/tmp/go")
        assert follower.until("late-2", 20) == ["late-1", "late-2"]
        _touch(task_id, "/tmp/crash")
        assert follower.until("dying-words", 20) == ["dying-words"]
        # The container exited: the follow ends by itself.
        assert follower.process.wait(timeout=20) == 0
    finally:
        follower.stop()

    # The task stops (exit 3) and its container is removed: the kept lines remain.
    wait_until(
        lambda: (
            berth.ok("task", "describe", task_id, "--cluster", CLUSTER, "-o", "json").json()["lastStatus"]
            == "STOPPED"
        ),
        20,
        "the task STOPPED",
    )
    wait_until(lambda: _container(task_id) is None, 30, "the task's container removed")
    kept = [f"line-{i}" for i in range(15, 31)] + [HOSTILE_SHOWN, "late-1", "late-2", "dying-words"]
    after = berth.ok("logs", short, "--cluster", CLUSTER)
    assert after.stdout.splitlines() == kept
    assert "these are the last 20 lines of container chatty kept when it stopped" in after.stderr
    assert berth.ok("logs", short, "--cluster", CLUSTER, "--tail", "2").stdout.splitlines() == kept[-2:]

    described = berth.ok("task", "describe", task_id, "--cluster", CLUSTER).stdout
    assert "exit code:        3" in described
    assert "last output of container chatty (kept when it stopped; older output was not kept):" in described
    assert [line[4:] for line in described.splitlines() if line.startswith("  | ")] == kept
    raw = berth.ok("task", "describe", task_id, "--cluster", CLUSTER, "-o", "json").json()
    assert raw["berth"]["keptOutput"]["lines"][-1] == "dying-words"
    assert raw["berth"]["keptOutput"]["lines"][16] == "evil \x1b]0;owned\x07 \x1b[31mred"  # stored exactly


def test_service_logs_prefix_each_line_with_its_task(
    berth: Berth, agent: AgentProcess, tmp_path: Path
) -> None:
    berth("cluster", "create", CLUSTER)
    _register(berth, "echoer", ECHOER, tmp_path)
    berth.ok(
        "service", "create", "--cluster", CLUSTER, "--name", "echoer", "--task-definition", "echoer",
        "--desired-count", "2",
    )  # fmt: skip
    try:
        running, _ = wait_until(lambda: berth.running_exactly(CLUSTER, 2, "echoer"), 30, "2 RUNNING tasks")
        ids = {id_of(t)[:12] for t in running}

        def both_said_hello() -> list[str] | None:
            lines = berth("logs", "--service", "echoer", "--cluster", CLUSTER).stdout.splitlines()
            return lines if len(lines) == 2 else None

        lines, _ = wait_until(both_said_hello, 20, "a hello from each task")
        prefixes = {line.split(" | ", 1)[0] for line in lines}
        assert prefixes == ids
        assert all(line.split(" | ", 1)[1].startswith("hello-from-") for line in lines)

        # A follower of both that goes away (Ctrl-C, a dropped connection) stops the agent's reads.
        def cancelled() -> int:
            return agent.log_path.read_text(errors="replace").count("why=cancelled")

        before = cancelled()
        follower = Follower(berth, "--service", "echoer", "--cluster", CLUSTER)
        try:
            assert {follower.lines.get(timeout=20) for _ in lines} == set(lines)
        finally:
            follower.stop()
        wait_until(lambda: cancelled() >= before + 2, 20, "the agent's two reads cancelled")
    finally:
        berth.ok("service", "update", "echoer", "--cluster", CLUSTER, "--desired-count", "0")


def test_run_wait_exits_with_the_tasks_exit_code_and_its_last_lines_are_kept(
    berth: Berth, agent: AgentProcess, tmp_path: Path
) -> None:
    berth("cluster", "create", CLUSTER)
    _register(berth, "exiter", EXITER, tmp_path)
    result = berth(
        "task", "run", "--cluster", CLUSTER, "--task-definition", "exiter", "--wait", "--timeout", "60"
    )
    assert result.exit_code == 7, result.stderr
    task_id = result.stdout.splitlines()[0].strip()
    assert "exit code 7" in result.stdout
    after = berth.ok("logs", task_id, "--cluster", CLUSTER)
    assert after.stdout.splitlines() == ["about to fail"]
    assert "kept when it stopped" in after.stderr


def test_a_bad_logs_request_is_refused_in_one_line(berth: Berth) -> None:
    berth("logs").assert_refused("give a TASK_ID or --service SERVICE")
    assert "RFC 3339" in berth("logs", "abcdef", "--since", "yesterday").stderr
    berth("logs", "--service", "nope", "--cluster", "default").assert_refused("does not exist")
    berth("logs", "0123456789ab", "--cluster", "default").assert_refused("does not exist")


def test_hollow_logs_go_through_the_agent_stream_and_a_gone_agent_is_refused(
    plane: ControlPlaneProcess, hollow: HollowAgentsProcess, tmp_path: Path
) -> None:
    berth = Berth.of(plane)
    wait_until(lambda: berth.nodes_exactly(1), 15, "1 hollow node")
    berth.register("job", [{"name": "job", "image": "anything:1", "memory": 16}], tmp_path)
    first = berth.ok("task", "run", "--task-definition", "job").stdout.strip()
    wait_until(lambda: berth.running_exactly("default", 1), 15, "the task RUNNING")
    hello = f"hollow container job of task {first} started (no real output)"
    assert berth.ok("logs", first[:8]).stdout.splitlines() == [hello]

    berth.ok("task", "stop", first)
    wait_until(lambda: not berth.running("default"), 15, "the task STOPPED")
    stopped = berth.ok("logs", first)
    assert stopped.stdout.splitlines() == [hello]
    assert "kept when it stopped" in stopped.stderr

    second = berth.ok("task", "run", "--task-definition", "job").stdout.strip()
    wait_until(lambda: berth.running_exactly("default", 1), 15, "the second task RUNNING")
    hollow.stop(timeout=15)
    berth("logs", second).assert_refused("holds no stream to this control-plane replica")
