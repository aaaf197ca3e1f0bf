"""`berth logs`: a task's container output, or a service's, like `docker compose logs`.

Lines are the containers' own text, so every one is shown with its control
characters escaped (`berth.safetext`): a container cannot forge lines,
colour the terminal or retitle its window. With `--service`, each line
starts with its task's short id (`1a2b3c4d5e6f | ...`). A stopped task's
containers are gone: what is shown then are the last lines its agent kept
when it stopped, and a note on stderr says so.
"""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime

import grpc
import typer
from google.protobuf.timestamp_pb2 import Timestamp

from berth.cli.client import CliContext, api_errors, fail
from berth.cli.options import ClusterOption
from berth.cli.output import say
from berth.safetext import escape_controls
from berth.v1 import operator_pb2 as api
from berth.v1 import resources_pb2 as pb

SHORT_ID = 12
_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def parse_since(text: str, now: datetime) -> Timestamp:
    """`--since`: a duration back from now (10m, 1h30m, 2d, 45s) or an RFC 3339 time."""
    match = _DURATION.fullmatch(text)
    if text and match is not None:
        days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
        back = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
        stamp = Timestamp()
        stamp.FromDatetime(now)
        stamp.seconds = max(0, stamp.seconds - back)
        return stamp
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        when = None
    if when is None or when.tzinfo is None or not 1 <= when.year <= 9999:
        raise typer.BadParameter(
            f"{escape_controls(text)!r} is neither a duration (10m, 1h30m, 2d) nor an RFC 3339 time "
            "with a zone (2024-05-01T12:00:00Z)",
            param_hint="--since",
        )
    stamp = Timestamp()
    stamp.FromDatetime(when.astimezone(UTC))
    return stamp


def render(chunk: pb.LogChunk, prefixed: bool) -> list[str]:
    """The chunk's lines as printed: escaped, and prefixed by the short task id when asked."""
    prefix = f"{chunk.task_id[:SHORT_ID]} | " if prefixed else ""
    return [prefix + escape_controls(line) for line in chunk.lines]


def kept_note(chunk: pb.LogChunk) -> str:
    task = chunk.task_id[:SHORT_ID]
    if not chunk.lines:
        return f"task {task} has stopped and no output of it was kept"
    container = f" of container {chunk.container}" if chunk.container else ""
    return (
        f"task {task} has stopped; its containers are gone: these are the last "
        f"{len(chunk.lines)} lines{container} kept when it stopped"
    )


def logs(
    ctx: typer.Context,
    task_id: str = typer.Argument("", metavar="TASK_ID", help="task id or a unique prefix"),
    service: str = typer.Option("", "--service", metavar="SERVICE", help="every task of this service"),
    container: str = typer.Option(
        "", "--container", metavar="NAME", help="this container of the task; default: its first essential one"
    ),
    follow: bool = typer.Option(
        False, "--follow", "-f", help="keep printing new output until the tasks stop"
    ),
    since: str = typer.Option(
        "", "--since", metavar="WHEN", help="only output since 10m, 1h30m, or an RFC 3339 time"
    ),
    tail: int = typer.Option(
        0, "--tail", "-n", metavar="N", min=0, help="only the last N lines of each task; 0: all"
    ),
    cluster: str = ClusterOption,
) -> None:
    """Print a task's container output (or every task's of a service).

    A running task's output is read from its host's agent; a stopped task's
    containers are gone, so the last lines kept when it stopped are shown.
    Exits 1 when some output could not be read (the error says why).
    """
    cli: CliContext = ctx.obj
    if bool(task_id) == bool(service):
        raise fail("give a TASK_ID or --service SERVICE (one of them)")
    request = api.StreamLogsRequest(
        cluster=cluster, task=task_id, service=service, container=container, follow=follow, tail=tail
    )
    if since:
        request.since.CopyFrom(parse_since(since, datetime.now(UTC)))
    failed = False
    call = cli.stub.StreamLogs(request)
    try:
        with api_errors(cli):
            for chunk in call:
                if chunk.kept:
                    say(kept_note(chunk), err=True)
                for line in render(chunk, prefixed=bool(service)):
                    sys.stdout.write(line + "\n")
                sys.stdout.flush()
                if chunk.error:
                    failed = True
                    say(f"error: task {chunk.task_id[:SHORT_ID]}: {chunk.error}", err=True)
    except KeyboardInterrupt:
        call.cancel()  # type: ignore[no-untyped-call]
        raise typer.Exit(code=130) from None
    except grpc.RpcError:  # cancelled above
        raise typer.Exit(code=1) from None
    if failed:
        raise typer.Exit(code=1)
