"""The Docker driver's exec (agent.runtime.docker_exec) against the real engine: output and
exit code, stdout and stderr apart, stdin to its end, a terminal with its size, a container
that is gone, and a closed relay. Runs under `flock /tmp/berth-docker.lock`."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import docker
import pytest

from agent.runtime.docker_driver import DockerDriver
from agent.runtime.driver import ExecProcess, ExecSpec
from berth.errors import Unavailable


@pytest.fixture(scope="module")
def container(docker_engine: str, test_image: str) -> Iterator[str]:
    client = docker.DockerClient(base_url=docker_engine)
    started = client.containers.run(
        test_image,
        ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.5; done"],
        detach=True,
        name=f"berth-exec-test-{uuid.uuid4().hex[:8]}",
        labels={"berth.test": "exec"},
    )
    try:
        yield started.id
    finally:
        started.remove(force=True)
        client.close()


@pytest.fixture()
async def driver(docker_engine: str) -> AsyncIterator[DockerDriver]:
    engine = DockerDriver(docker_engine)
    try:
        yield engine
    finally:
        await engine.close()


async def run(process: ExecProcess) -> tuple[bytes, bytes, int]:
    out, err = b"", b""
    async with asyncio.timeout(30):
        async for stream, data in process.output():
            if stream == "stdout":
                out += data
            else:
                err += data
        code = await process.exit_code()
    await process.close()
    return out, err, code


async def test_output_apart_and_the_exit_code(driver: DockerDriver, container: str) -> None:
    process = await driver.exec(container, ExecSpec(("sh", "-c", "echo hi; echo oops >&2; exit 3")))
    assert await run(process) == (b"hi\n", b"oops\n", 3)


async def test_stdin_reaches_the_command_until_its_end(driver: DockerDriver, container: str) -> None:
    process = await driver.exec(container, ExecSpec(("cat",), stdin=True))
    await process.write(b"one\n")
    await process.write(b"two\n")
    await process.close_stdin()
    assert await run(process) == (b"one\ntwo\n", b"", 0)


async def test_a_terminal_that_follows_the_window_size(driver: DockerDriver, container: str) -> None:
    # The size is set right after the start (engines before API 1.42 take no size at create),
    # so the command waits for a line before it reads its terminal's size.
    process = await driver.exec(
        container,
        ExecSpec(("sh", "-c", "read line; stty size; tty >/dev/null && echo is-a-tty"), tty=True, stdin=True),
    )
    await process.resize(33, 101)
    await process.write(b"go\r")
    out, err, code = await run(process)
    assert code == 0 and err == b""
    assert b"33 101" in out and b"is-a-tty" in out


async def test_a_big_output_arrives_whole_in_bounded_pieces(driver: DockerDriver, container: str) -> None:
    process = await driver.exec(container, ExecSpec(("sh", "-c", "head -c 1000000 /dev/zero")))
    out, _, code = await run(process)
    assert code == 0 and out == b"\0" * 1_000_000


async def test_a_closed_relay_ends_the_output(driver: DockerDriver, container: str) -> None:
    process = await driver.exec(container, ExecSpec(("sh", "-c", "while true; do echo y; sleep 0.1; done")))
    outputs = process.output()
    stream, _ = await asyncio.wait_for(anext(outputs), 10)
    assert stream == "stdout"
    await process.close()
    async with asyncio.timeout(10):
        async for _ in outputs:
            pass


async def test_a_container_that_is_gone_is_unavailable(driver: DockerDriver) -> None:
    with pytest.raises(Unavailable, match="is gone"):
        await driver.exec("0" * 64, ExecSpec(("ls",)))
