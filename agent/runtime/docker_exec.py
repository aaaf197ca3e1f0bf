"""Commands in running containers through the Docker engine (`berth exec`).

`exec_create` + `exec_start(socket=True)` give a hijacked connection: the
command's stdin is written to it, its output read from it. Without a
terminal the engine multiplexes stdout and stderr in frames (an 8-byte
header: stream, three zero bytes, a big-endian length), split here by
`FrameSplitter`, a pure function of the bytes; with one, the bytes are the
terminal's, all "stdout". One thread per command reads the socket (at most
berth.execlimits.MAX_PER_HOST run at once, the agent's bound) and hands the
output over through a small queue, so a slow reader slows the command's
output instead of filling memory. Writes, resizes and the exit code are
short blocking calls in worker threads.

Closing stops the relay (the socket is shut down, which also wakes the
reading thread); the engine has no way to stop an exec'd process, so one
that ignores its closed stdin and output runs until it ends by itself, as
with `docker exec`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import docker.errors

from agent.runtime.driver import ExecSpec
from berth import execlimits
from berth.errors import Unavailable

# Output pieces waiting for the agent's stream.
OUTPUT_QUEUE = 8
# Seconds to wait, once the output ended, for the engine to record the exit code.
EXIT_CODE_WITHIN = 5.0
_STREAMS = {1: "stdout", 2: "stderr"}
_HEADER = struct.Struct(">BxxxL")


class FrameSplitter:
    """The engine's multiplexed stream, fed in arbitrary pieces, split into (stream, bytes)
    pieces of at most MAX_CHUNK bytes (pure). Frames of an unknown stream (stdin's echo, 0) are
    dropped."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._stream = ""
        self._left = 0  # bytes of the current frame not yet seen

    def feed(self, data: bytes) -> list[tuple[str, bytes]]:
        self._buffer += data
        pieces: list[tuple[str, bytes]] = []
        while self._buffer:
            if self._left == 0:
                if len(self._buffer) < _HEADER.size:
                    break
                stream, self._left = _HEADER.unpack_from(self._buffer)
                self._stream = _STREAMS.get(stream, "")
                del self._buffer[: _HEADER.size]
                continue
            take = min(self._left, len(self._buffer), execlimits.MAX_CHUNK)
            piece = bytes(self._buffer[:take])
            del self._buffer[:take]
            self._left -= take
            if self._stream:
                pieces.append((self._stream, piece))
        return pieces


def _raw(sock: Any) -> socket.socket:
    """The socket under what `exec_start(socket=True)` returns (a SocketIO over a unix socket)."""
    raw = getattr(sock, "_sock", sock)
    if not isinstance(raw, socket.socket):
        raise Unavailable("docker: exec needs the engine on a unix or TCP socket")
    return raw


class DockerExec:
    """One command started by `start`; see the module docstring."""

    def __init__(self, api: Any, exec_id: str, connection: Any, tty: bool) -> None:
        self._api = api
        self._id = exec_id
        self._connection = connection  # keeps the hijacked response alive
        self._socket = _raw(connection)
        self._tty = tty
        self._closed = threading.Event()
        self._write_lock = threading.Lock()
        self._stdin_closed = False

    @classmethod
    def start(cls, api: Any, runtime_id: str, spec: ExecSpec) -> DockerExec:
        """Blocking: create and start the command (call from a worker thread)."""
        try:
            created = api.exec_create(
                runtime_id, list(spec.command), stdout=True, stderr=True, stdin=spec.stdin, tty=spec.tty
            )
            exec_id = created["Id"]
            connection = api.exec_start(exec_id, tty=spec.tty, socket=True)
            if spec.tty and spec.rows and spec.columns:
                with contextlib.suppress(docker.errors.APIError):  # the command may already have ended
                    api.exec_resize(exec_id, height=spec.rows, width=spec.columns)
        except docker.errors.NotFound as error:
            raise Unavailable(f"container {runtime_id[:12]} is gone") from error
        except docker.errors.APIError as error:
            raise Unavailable(f"docker: {error.explanation or error}") from error
        except docker.errors.DockerException as error:
            raise Unavailable(f"docker: {error}") from error
        return cls(api, exec_id, connection, spec.tty)

    async def output(self) -> AsyncIterator[tuple[str, bytes]]:
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[tuple[str, bytes] | BaseException | None] = asyncio.Queue(OUTPUT_QUEUE)
        stopped = threading.Event()

        def hand_over(item: tuple[str, bytes] | BaseException | None) -> None:
            handed = asyncio.run_coroutine_threadsafe(pieces.put(item), loop)
            while not stopped.is_set():
                try:
                    handed.result(timeout=0.5)
                    return
                except TimeoutError:
                    continue
            handed.cancel()

        def read() -> None:
            splitter = FrameSplitter()
            try:
                while not stopped.is_set():
                    data = self._socket.recv(execlimits.MAX_CHUNK)
                    if not data:
                        break
                    for piece in [("stdout", data)] if self._tty else splitter.feed(data):
                        hand_over(piece)
                hand_over(None)
            except OSError as error:
                if not (stopped.is_set() or self._closed.is_set()):
                    hand_over(Unavailable(f"docker: the command's output broke off: {error}"))
                else:
                    hand_over(None)

        reader = threading.Thread(target=read, name="docker-exec", daemon=True)
        reader.start()
        try:
            while True:
                item = await pieces.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stopped.set()

    async def write(self, data: bytes) -> None:
        await asyncio.to_thread(self._write_blocking, data)

    def _write_blocking(self, data: bytes) -> None:
        with self._write_lock:
            if self._stdin_closed or self._closed.is_set():
                return
            try:
                self._socket.sendall(data)
            except OSError:
                self._stdin_closed = True  # the command closed its stdin or ended: drop the rest

    async def close_stdin(self) -> None:
        await asyncio.to_thread(self._close_stdin_blocking)

    def _close_stdin_blocking(self) -> None:
        with self._write_lock:
            if self._stdin_closed or self._closed.is_set():
                return
            self._stdin_closed = True
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_WR)

    async def resize(self, rows: int, columns: int) -> None:
        if not self._tty:
            return
        with contextlib.suppress(docker.errors.DockerException):
            await asyncio.to_thread(self._api.exec_resize, self._id, height=rows, width=columns)

    async def exit_code(self) -> int:
        return await asyncio.to_thread(self._exit_code_blocking)

    def _exit_code_blocking(self) -> int:
        deadline = time.monotonic() + EXIT_CODE_WITHIN
        try:
            while True:
                state = self._api.exec_inspect(self._id)
                if not state.get("Running") and state.get("ExitCode") is not None:
                    return int(state["ExitCode"])
                if time.monotonic() > deadline:
                    raise Unavailable("the engine did not record the command's exit code")
                time.sleep(0.05)
        except docker.errors.DockerException as error:
            raise Unavailable(f"docker: {error}") from error

    async def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        await asyncio.to_thread(self._close_blocking)

    def _close_blocking(self) -> None:
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)  # wakes the reading thread
        with contextlib.suppress(Exception):
            self._connection.close()
