"""`berth exec` through the agent's own code (session, exec sessions, Docker driver) run
in-process against the real engine and a real control plane (etcd, mutual TLS): the agent
joins with a token as a raw member, so this runs before agents join on their own
(tests/e2e/test_exec.py covers the same with the agent as its own process). Runs under
`flock /tmp/berth-docker.lock`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from agent.runtime.docker_driver import DockerDriver
from agent.session import ControlPlaneSession
from agent.supervisor import TaskSupervisor
from berth.testing.cli import Berth
from berth.testing.daemons import ControlPlaneProcess
from berth.testing.members import Member, join
from berth.testing.waiting import wait_until
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb

SHELL = [
    {
        "name": "main",
        "image": "berth-busybox:2",
        "memory": 32,
        "essential": True,
        "entryPoint": ["sh", "-c"],
        "command": ["trap 'exit 0' TERM; while true; do sleep 0.5; done"],
        "stopTimeout": 2,
    }
]


class InProcessAgent:
    """The agent's supervisor and session on an event loop of their own, in a thread."""

    def __init__(self, plane: ControlPlaneProcess, member: Member, docker_url: str) -> None:
        self.member = member
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        ready = threading.Event()

        async def main() -> None:
            self._stop = asyncio.Event()
            ready.set()
            driver = DockerDriver(docker_url)
            supervisor = TaskSupervisor(driver)
            registration = agent_pb.RegisterRequest(
                name=member.name, address="127.0.0.1", cpu_units=1024, memory_mib=1024, agent_version="test"
            )

            async def no_metrics() -> pb.NodeMetrics | None:
                return None

            channel = member.aio_channel(plane.address)
            session = ControlPlaneSession(
                plane.address, registration, supervisor, lambda _: None, no_metrics, channel=channel
            )
            workers = [asyncio.create_task(supervisor.run()), asyncio.create_task(session.run())]
            await self._stop.wait()
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            await channel.close(None)
            await driver.close()

        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(main(),), daemon=True)
        self._thread.start()
        assert ready.wait(10)

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlaneProcess]:
    process = ControlPlaneProcess(tmp_path_factory.mktemp("exec-docker") / "cp")
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def task_id(
    plane: ControlPlaneProcess, docker_engine: str, test_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    agent = InProcessAgent(plane, join(plane, "exec-docker"), docker_engine)
    berth = Berth.of(plane)
    try:
        berth.register("shell", SHELL, tmp_path_factory.mktemp("taskdefs"))
        task = berth.ok("task", "run", "--task-definition", "shell").stdout.strip()
        wait_until(lambda: berth.running_exactly("default", 1), 60, "the task RUNNING")
        yield task
    finally:
        agent.stop()
        client = docker.DockerClient(base_url=docker_engine)
        try:
            for container in client.containers.list(
                all=True, filters={"label": f"berth.node-id={agent.member.name}"}
            ):
                container.remove(force=True)
        finally:
            client.close()


def test_output_and_exit_code_from_a_real_container(plane: ControlPlaneProcess, task_id: str) -> None:
    berth = Berth.of(plane)
    result = berth("exec", task_id, "--", "sh", "-c", "echo hi; echo oops >&2; exit 3")
    assert (result.exit_code, result.stdout, result.stderr) == (3, "hi\n", "oops\n")
    result = berth("exec", "-i", task_id, "--", "cat", stdin="one\ntwo\n")
    assert (result.exit_code, result.stdout) == (0, "one\ntwo\n")
    result = berth("exec", task_id, "--", "sh", "-c", "head -c 300000 /dev/zero | wc -c")
    assert (result.exit_code, result.stdout.strip()) == (0, "300000")
    berth("exec", task_id, "--container", "nope", "--", "ls").assert_refused("no container named 'nope'")
    missing = berth("exec", task_id, "--", "/no/such/program")
    assert missing.exit_code == 126 and "no such file or directory" in missing.stdout + missing.stderr, (
        missing
    )


def test_a_big_output_comes_back_whole(plane: ControlPlaneProcess, task_id: str, tmp_path: Path) -> None:
    result = Berth.of(plane)("exec", task_id, "--", "sh", "-c", "head -c 2000000 /dev/zero | tr '\\0' x")
    assert result.exit_code == 0 and result.stdout == "x" * 2_000_000
