"""`berth exec` through a real control plane (etcd, mutual TLS, roles, the audit log) with a
scripted agent on the wire: a node joined with a token whose stream answers exec requests as
a real agent would. What Docker does with the command is tested in tests/e2e/test_exec.py;
this pins down the relay, the access rules and the audit on their own, without Docker.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import queue
import signal
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from berth.testing.cli import Berth
from berth.testing.daemons import ControlPlaneProcess
from berth.testing.members import Member, join
from berth.testing.waiting import wait_until
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import agent_pb2_grpc
from berth.v1 import resources_pb2 as pb

SHELL = [{"name": "shell", "image": "anything:1", "memory": 16, "essential": True}]


class ScriptedAgent:
    """A node's stream in a thread: reports every assigned task RUNNING, and answers exec
    requests: `cat` copies stdin until it ends (exit 0); anything else prints the command
    and exits 3."""

    def __init__(self, plane: ControlPlaneProcess, member: Member) -> None:
        self._channel = member.channel(plane.address)
        stub = agent_pb2_grpc.AgentServiceStub(self._channel)
        stub.Register(
            agent_pb.RegisterRequest(
                name=member.name, address="127.0.0.1", cpu_units=4096, memory_mib=8192, agent_version="test"
            ),
            timeout=10,
        )
        self._node = member.name
        self._outbox: queue.Queue[agent_pb.AgentMessage | None] = queue.Queue()
        self._reported: set[tuple[str, int]] = set()
        self._cats: set[str] = set()
        self.requests: list[pb.ExecInput] = []
        self._call = stub.Connect(self._outgoing())
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _outgoing(self) -> Iterator[agent_pb.AgentMessage]:
        yield agent_pb.AgentMessage(hello=agent_pb.Hello(node_id=self._node))
        while True:
            try:
                message = self._outbox.get(timeout=0.5)
            except queue.Empty:
                message = agent_pb.AgentMessage(heartbeat=agent_pb.Heartbeat())
            if message is None:
                return
            yield message

    def _answer(self, request_id: str, **body: object) -> None:
        output = pb.ExecOutput(request_id=request_id, **body)  # type: ignore[arg-type]
        self._outbox.put(agent_pb.AgentMessage(exec_output=output))

    def _read(self) -> None:
        with contextlib.suppress(grpc.RpcError):
            for message in self._call:
                if message.HasField("desired_state"):
                    for task in message.desired_state.tasks:
                        status = pb.STOPPED if task.desired_status == pb.DESIRED_STOPPED else pb.RUNNING
                        if (task.task_id, status) not in self._reported:
                            self._reported.add((task.task_id, status))
                            report = agent_pb.TaskStatusReport(task_id=task.task_id, last_status=status)
                            self._outbox.put(agent_pb.AgentMessage(status=report))
                elif message.HasField("exec_input"):
                    self._exec(message.exec_input)

    def _exec(self, given: pb.ExecInput) -> None:
        self.requests.append(given)
        body = given.WhichOneof("body")
        if body == "start":
            self._answer(given.request_id, started="shell")
            if list(given.start.command) == ["cat"]:
                self._cats.add(given.request_id)
                return
            self._answer(given.request_id, stdout=(" ".join(given.start.command) + "\n").encode())
            self._answer(given.request_id, stderr=b"to stderr\n")
            self._answer(given.request_id, exit=pb.ExecExit(code=3))
        elif body == "stdin" and given.request_id in self._cats:
            self._answer(given.request_id, stdout=given.stdin)
        elif body == "stdin_end" and given.request_id in self._cats:
            self._answer(given.request_id, exit=pb.ExecExit(code=0))

    def close(self) -> None:
        self._outbox.put(None)
        self._call.cancel()  # type: ignore[no-untyped-call]
        self._reader.join(timeout=10)
        self._channel.close()


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlaneProcess]:
    process = ControlPlaneProcess(tmp_path_factory.mktemp("exec") / "cp")
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def agent(plane: ControlPlaneProcess) -> Iterator[ScriptedAgent]:
    scripted = ScriptedAgent(plane, join(plane, "exec-node"))
    try:
        yield scripted
    finally:
        scripted.close()


@pytest.fixture(scope="module")
def people(plane: ControlPlaneProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Berth]:
    directory = tmp_path_factory.mktemp("people")
    admin = Berth.of(plane)
    for name, role in (("vera", "viewer"), ("dan", "deployer")):
        admin.ok("user", "create", name, "--role", role, "--out", str(directory / name))
    return {
        "admin": admin,
        "viewer": Berth(plane.address, directory / "vera"),
        "deployer": Berth(plane.address, directory / "dan"),
    }


@pytest.fixture(scope="module")
def task_id(people: dict[str, Berth], agent: ScriptedAgent, tmp_path_factory: pytest.TempPathFactory) -> str:
    admin = people["admin"]
    admin.register("shell", SHELL, tmp_path_factory.mktemp("taskdefs"))
    task = admin.ok("task", "run", "--task-definition", "shell").stdout.strip()
    wait_until(lambda: admin.running("default") or None, timeout=30, what="the scripted agent's task RUNNING")
    return task


def audit(plane: ControlPlaneProcess) -> list[dict[str, str]]:
    path: Path = plane.data_dir / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_deployer_runs_a_command_gets_its_output_and_exits_with_its_code(
    plane: ControlPlaneProcess, people: dict[str, Berth], task_id: str
) -> None:
    result = people["deployer"]("exec", task_id[:8], "--", "sh", "-c", "echo hi; exit 3")
    assert result.exit_code == 3
    assert result.stdout == "sh -c echo hi; exit 3\n"
    assert result.stderr == "to stderr\n"
    entries = [e for e in audit(plane) if e["call"] == "Exec" and e["user"] == "dan"]
    assert [e["result"] for e in entries][-2:] == ["started", "ok: exit code 3"]
    assert f"task={task_id[:8]}" in entries[-1]["target"]
    assert "command=sh -c 'echo hi; exit 3'" in entries[-1]["target"]


def test_stdin_is_forwarded_with_dash_i_only(
    people: dict[str, Berth], agent: ScriptedAgent, task_id: str
) -> None:
    deployer = people["deployer"]
    result = deployer("exec", "-i", task_id, "--", "cat", input="one\ntwo\n")
    assert (result.exit_code, result.stdout) == (0, "one\ntwo\n")
    started = [r for r in agent.requests if r.HasField("start") and list(r.start.command) == ["cat"]]
    assert started[-1].start.stdin and not started[-1].start.tty
    # Without -i stdin is not opened, and nothing of it is sent.
    count = len(agent.requests)
    result = deployer("exec", task_id, "--", "true", input="ignored\n")
    assert result.exit_code == 3
    sent = agent.requests[count:]
    assert [r.WhichOneof("body") for r in sent] == ["start"] and not sent[0].start.stdin


def test_a_viewer_is_refused_in_one_line_and_the_attempt_is_audited(
    plane: ControlPlaneProcess, people: dict[str, Berth], agent: ScriptedAgent, task_id: str
) -> None:
    before = len(agent.requests)
    people["viewer"]("exec", task_id, "--", "id").assert_refused(
        "user vera (viewer) may not Exec: it needs deployer"
    )
    assert len(agent.requests) == before  # the node never heard of it
    denied = [e for e in audit(plane) if e["call"] == "Exec" and e["user"] == "vera"]
    assert denied[-1]["result"].startswith("denied:") and "command=id" in denied[-1]["target"]


def test_with_a_terminal_the_cli_asks_for_one_sends_keys_raw_and_restores_it(
    plane: ControlPlaneProcess, people: dict[str, Berth], agent: ScriptedAgent, task_id: str
) -> None:
    """The CLI in a subprocess whose stdin and stdout are a pseudo-terminal."""
    leader, follower = pty.openpty()
    try:
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        before = termios.tcgetattr(follower)
        count = len(agent.requests)
        process = subprocess.Popen(
            [
                sys.executable, "-m", "berth.cli.main", "--server", plane.address,
                "--config", str(plane.admin_config), "exec", task_id, "--", "cat",
            ],
            stdin=follower, stdout=follower, stderr=subprocess.PIPE,
        )  # fmt: skip
        wait_until(
            lambda: any(r.HasField("start") for r in agent.requests[count:]) or None, 30, "the exec started"
        )
        # Raw mode: a key goes up as typed, without waiting for a line (no echo, no line editing).
        os.write(leader, b"k")
        wait_until(lambda: any(r.stdin == b"k" for r in agent.requests[count:]) or None, 30, "the key sent")
        os.write(leader, b"\x04")  # Ctrl-D is a byte for the command in raw mode, not an end here
        wait_until(lambda: any(r.stdin == b"\x04" for r in agent.requests[count:]) or None, 30, "Ctrl-D sent")
        # The window changes size: the new one follows.
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 132, 0, 0))
        process.send_signal(signal.SIGWINCH)
        wait_until(
            lambda: any(r.resize.rows == 50 for r in agent.requests[count:]) or None, 30, "the new size sent"
        )
        assert process.poll() is None
        process.terminate()  # told to stop: it unwinds, restoring the terminal on the way out
        assert process.wait(timeout=30) == 128 + signal.SIGTERM, (
            process.stderr.read() if process.stderr else ""
        )
        start = next(r.start for r in agent.requests[count:] if r.HasField("start"))
        assert start.tty and start.stdin and (start.size.rows, start.size.columns) == (40, 120)
        resize = next(r.resize for r in agent.requests[count:] if r.HasField("resize"))
        assert (resize.rows, resize.columns) == (50, 132)
        assert termios.tcgetattr(follower) == before
    finally:
        os.close(leader)
        os.close(follower)


def test_unknown_and_stopped_tasks_and_bad_commands_are_refused_in_one_line(
    people: dict[str, Berth], agent: ScriptedAgent, task_id: str
) -> None:
    admin = people["admin"]
    before = len(agent.requests)
    admin("exec", "ffffffffffff", "--", "ls").assert_refused("task ffffffffffff does not exist")
    admin("exec", task_id).assert_refused("give a command to run")
    admin("exec", task_id, "--", "a" * 5000).assert_refused("bytes long: at most 4096")
    admin("exec", task_id, "--container", "../x", "--", "ls").assert_refused("container must be")
    admin.ok("task", "stop", task_id)
    wait_until(lambda: not admin.running("default") or None, timeout=30, what="the task no longer RUNNING")
    admin("exec", task_id, "--", "ls").assert_refused("exec needs a RUNNING task")
    assert len(agent.requests) == before
