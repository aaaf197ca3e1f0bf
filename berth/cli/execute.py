"""`berth exec`: run a command in a running task's container, like `docker exec` and ECS Exec.

The command runs through the task's agent (`controlplane.execs`); its
output comes back as written and the CLI exits with its exit code. With a
terminal on stdin (or `-t`) the command gets a terminal too: the local one
is put in raw mode (and always restored), keys go up as typed and window
size changes follow. Without one, stdout and stderr stay apart, and stdin
is forwarded only with `-i` (`berth exec -i TASK -- cat < file`).

The output is the command's own bytes, written as they are: what `exec`
is for (an interactive shell needs its escape sequences), unlike `logs`,
which escapes what containers write.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import IO, Any

import typer

from berth import execlimits
from berth.cli.client import CliContext, api_errors, fail
from berth.cli.options import ClusterOption
from berth.v1 import resources_pb2 as pb

# Messages waiting to go up: stdin pieces and window sizes (the reader waits for room).
PENDING_INPUT = 16


def terminal_size(*streams: IO[Any]) -> tuple[int, int] | None:
    """(rows, columns) of the first terminal among `streams`, or None when there is none."""
    for stream in streams:
        size = _size_of(stream)
        if size is not None:
            return size
    return None


def _size_of(stream: IO[Any]) -> tuple[int, int] | None:
    import fcntl
    import struct
    import termios

    try:
        packed = fcntl.ioctl(stream.fileno(), termios.TIOCGWINSZ, b"\0" * 8)
    except (OSError, ValueError, AttributeError):
        return None
    rows, columns = struct.unpack("HHHH", packed)[:2]
    if execlimits.terminal_problem(rows, columns):
        return None
    return rows, columns


def is_terminal(stream: IO[Any]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@contextlib.contextmanager
def raw_terminal(stream: IO[Any]) -> Iterator[None]:
    """The terminal on `stream` in raw mode for the duration, restored however it ends."""
    import termios
    import tty

    fd = stream.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _binary(stream: IO[Any]) -> Any:
    return getattr(stream, "buffer", stream)


def _stdin_reader() -> Callable[[int], bytes]:
    """Reads stdin a piece at a time: from its file descriptor when it has one, so that a
    thread blocked reading holds no lock the interpreter needs at exit; else (stdin given
    in-process) through its buffer."""
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):
        source = _binary(sys.stdin)
        read: Callable[[int], bytes] = getattr(source, "read1", source.read)
        return read
    return lambda size: os.read(fd, size)


def _read_stdin(pending: queue.Queue[pb.ExecInput | None]) -> None:
    """In a thread: stdin up, a piece at a time, then its end."""
    read = _stdin_reader()
    try:
        while data := read(execlimits.MAX_CHUNK):
            pending.put(pb.ExecInput(stdin=bytes(data)))
    except (OSError, ValueError):
        pass  # stdin closed under us: its end is all there is to say
    pending.put(pb.ExecInput(stdin_end=True))


def exec_(
    ctx: typer.Context,
    task_id: str = typer.Argument(..., metavar="TASK_ID", help="task id or a unique prefix"),
    command: list[str] = typer.Argument(
        None, metavar="-- COMMAND...", help="the command and its arguments, after --", show_default=False
    ),
    container: str = typer.Option(
        "",
        "--container",
        metavar="NAME",
        help="this container of the task; default: its first essential one",
    ),
    interactive: bool = typer.Option(False, "--interactive", "-i", help="forward stdin to the command"),
    tty: bool = typer.Option(
        False, "--tty", "-t", help="give the command a terminal (the default when stdin is one)"
    ),
    cluster: str = ClusterOption,
) -> None:
    """Run a command in a running task's container and exit with its exit code.

    Allowed to deployers and admins; every exec is written to the audit log.
    """
    cli: CliContext = ctx.obj
    command = list(command or [])
    problem = execlimits.command_problem(command)
    if problem:
        raise fail(problem)
    terminal = is_terminal(sys.stdin)
    use_tty = tty or terminal
    forward = interactive or use_tty
    start = pb.ExecStart(
        cluster=cluster, task=task_id, container=container, command=command, tty=use_tty, stdin=forward
    )
    size = terminal_size(sys.stdin, sys.stdout) if use_tty else None
    if size is not None:
        start.size.rows, start.size.columns = size
    pending: queue.Queue[pb.ExecInput | None] = queue.Queue(PENDING_INPUT)

    def inputs() -> Iterator[pb.ExecInput]:
        yield pb.ExecInput(start=start)
        while (message := pending.get()) is not None:
            yield message

    if forward:
        threading.Thread(target=_read_stdin, args=(pending,), name="exec-stdin", daemon=True).start()
    else:
        pending.put(None)  # nothing more to send: our side is done
    restore_signals = _handle_signals(pending) if terminal else None
    call = cli.stub.Exec(inputs())
    out, err = _binary(sys.stdout), _binary(sys.stderr)
    ended: pb.ExecExit | None = None
    try:
        # Raw mode ends before an error is printed, so the line reads as one.
        with api_errors(cli), raw_terminal(sys.stdin) if terminal else contextlib.nullcontext():
            for output in call:
                body = output.WhichOneof("body")
                if body == "stdout":
                    out.write(output.stdout)
                    out.flush()
                elif body == "stderr":
                    err.write(output.stderr)
                    err.flush()
                elif body == "exit":
                    ended = output.exit
    except KeyboardInterrupt:
        call.cancel()  # type: ignore[no-untyped-call]
        raise typer.Exit(code=130) from None
    except _Ended as ending:
        call.cancel()  # type: ignore[no-untyped-call]
        raise typer.Exit(code=128 + ending.signum) from None
    finally:
        with contextlib.suppress(queue.Full):
            pending.put_nowait(None)
        if restore_signals is not None:
            restore_signals()
    if ended is None:
        raise fail("the control plane ended the exec without the command's exit code")
    if ended.error:
        raise fail(ended.error)
    raise typer.Exit(code=ended.code)


class _Ended(Exception):
    """The terminal went away (SIGHUP) or we were told to stop (SIGTERM): unwind, so the
    terminal's mode is restored on the way out."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _handle_signals(pending: queue.Queue[pb.ExecInput | None]) -> Callable[[], None] | None:
    """With a terminal: follow its size (SIGWINCH) and unwind on SIGHUP and SIGTERM; returns
    what puts the old handlers back (None when not on the main thread, where signals go)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def resized(signum: int, frame: object) -> None:
        size = terminal_size(sys.stdin, sys.stdout)
        if size is not None:
            with contextlib.suppress(queue.Full):
                pending.put_nowait(pb.ExecInput(resize=pb.TerminalSize(rows=size[0], columns=size[1])))

    def ended(signum: int, frame: object) -> None:
        raise _Ended(signum)

    handlers = {signal.SIGWINCH: resized, signal.SIGHUP: ended, signal.SIGTERM: ended}
    previous = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    return restore
