"""Watching a deployment until it ends: polls DescribeService about once a
second, shows progress (a live display on a terminal, plain lines printed on
change otherwise), rides out a control-plane restart, and returns the exit
code `rollout.judge` decides (124 when --timeout passes first).

The loop takes its look, clock and sleep as parameters, so its timing rules
(timeout, unreachable control plane) are unit-tested without a server.
"""

from __future__ import annotations

import enum
import sys
import time
from collections.abc import Callable
from typing import Protocol

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from berth.cli import rollout
from berth.cli.client import CliContext, api_errors
from berth.cli.deployments import counts_of, rollout_word, status_word
from berth.cli.output import printable, say
from berth.v1 import operator_pb2 as api
from berth.v1 import resources_pb2 as pb

# Seconds between looks, and how long the control plane may stay unreachable
# (a restart, a leader change) before the wait gives up.
POLL = 1.0
UNREACHABLE_LIMIT = 60.0
LOOK_TIMEOUT = 10.0
_UNREACHABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class Unreachable(enum.Enum):
    """A look that got no answer (the control plane is restarting, say)."""

    UNREACHABLE = "unreachable"


UNREACHABLE = Unreachable.UNREACHABLE

# A look: the description, None when the service does not exist, or UNREACHABLE.
Look = api.ServiceDescription | None | Unreachable


def describe_service(cli: CliContext, cluster: str, name: str) -> Callable[[], Look]:
    """One DescribeService call per look; any error but "not found" and "unreachable" ends the command."""

    def look() -> Look:
        with api_errors(cli):
            try:
                return cli.stub.DescribeService(
                    api.ServiceRef(cluster=cluster, name=name), timeout=LOOK_TIMEOUT
                )
            except grpc.RpcError as error:
                code = error.code()  # type: ignore[attr-defined]
                if code == grpc.StatusCode.NOT_FOUND:
                    return None
                if code not in _UNREACHABLE:
                    raise
        return UNREACHABLE

    return look


class Display(Protocol):
    """Where progress goes while the wait goes on."""

    def show(self, description: api.ServiceDescription) -> None: ...

    def note(self, text: str) -> None: ...

    def close(self) -> None: ...


class PlainDisplay:
    """Plain lines, printed only when the counts changed: for CI logs and pipes.

    Events are not echoed here: after a rollback the newest one says the
    service "has reached a steady state" (the old version's), which must not
    read as the outcome on stdout; a failure lists them on stderr instead."""

    def __init__(self) -> None:
        self._last = ""

    def show(self, description: api.ServiceDescription) -> None:
        line = rollout.progress_line(description)
        if line != self._last:
            self._last = line
            say(line)

    def note(self, text: str) -> None:
        say(text)

    def close(self) -> None:
        pass


def live_view(description: api.ServiceDescription, note: str = "") -> RenderableType:
    """A bar per deployment (PRIMARY: healthy of desired), its counts, the newest event."""
    grid = Table.grid(padding=(0, 1))
    for _ in range(3):
        grid.add_column()
    for d in description.service.deployments:
        counts = counts_of(description, d.id) or api.DeploymentCounts(id=d.id)
        label = Text(printable(f"deployment {d.id} {d.task_definition} {status_word(d)} {rollout_word(d)}"))
        if d.status == pb.PRIMARY:
            bar: RenderableType = ProgressBar(
                total=max(counts.desired_count, 1),
                completed=min(counts.healthy_count, counts.desired_count),
                width=30,
            )
            figures = f"{counts.healthy_count}/{counts.desired_count} healthy"
        else:
            bar, figures = Text(""), ""
        tally = (
            f"{counts.running_count} running, {counts.pending_count} pending, {counts.failed_count} failed"
        )
        grid.add_row(label, bar, Text(", ".join(p for p in (figures, tally) if p)))
    parts: list[RenderableType] = [grid]
    if not description.service.deployments:
        parts.append(Text(printable(rollout.progress_line(description))))
    if description.events:
        parts.append(Text(printable(f"newest event: {description.events[0].message}"), style="dim"))
    if note:
        parts.append(Text(printable(note), style="yellow"))
    return Group(*parts)


class LiveDisplay:
    """A rich live display on the terminal, redrawn on every look."""

    def __init__(self) -> None:
        console = Console(file=sys.stdout, markup=False, emoji=False, highlight=False)
        self._live = Live(Text("looking at the service ..."), console=console, refresh_per_second=4)
        self._live.start()
        self._description: api.ServiceDescription | None = None
        self._note = ""

    def show(self, description: api.ServiceDescription) -> None:
        self._description, self._note = description, ""
        self._live.update(live_view(description))

    def note(self, text: str) -> None:
        self._note = text
        if self._description is not None:
            self._live.update(live_view(self._description, text))
        else:
            self._live.update(Text(printable(text)))

    def close(self) -> None:
        self._live.stop()


def display_for_terminal() -> Display:
    return LiveDisplay() if sys.stdout.isatty() else PlainDisplay()


def _resolve(description: api.ServiceDescription, requested: int | None) -> int | str:
    """The deployment to wait for (the PRIMARY by default), or why there is none to wait for."""
    service = description.service
    if requested is None:
        current = rollout.primary(service)
        return current.id if current is not None else 0
    if requested < 1 or (requested > service.deployment_count and rollout.find(service, requested) is None):
        known = f"1-{service.deployment_count}" if service.deployment_count else "none yet"
        return f"service {service.name} has no deployment {requested} (deployments: {known})"
    return requested


class _Watch:
    """One wait: which deployment, since when, what was seen last; each look in, an exit code
    (or None: keep waiting) out. Lines for the user go to the display, the verdict to stdout/stderr."""

    def __init__(self, name: str, requested: int | None, display: Display, unreachable_limit: float) -> None:
        self.name = name
        self.waited = requested
        self.display = display
        self.unreachable_limit = unreachable_limit
        # Events from this time on are the wait's story; the deployment's own start once known.
        self.since = Timestamp()
        self.since.GetCurrentTime()
        self.last: api.ServiceDescription | None = None
        self.unreachable_since: float | None = None

    def unreachable(self, now: float) -> int | None:
        if self.unreachable_since is None:
            self.unreachable_since = now
            self.display.note("the control plane is unreachable (restarting?); still waiting")
        if now - self.unreachable_since > self.unreachable_limit:
            return self._error(f"the control plane stayed unreachable for {self.unreachable_limit:g}s")
        return None

    def answer(self, seen: api.ServiceDescription | None) -> int | None:
        if self.unreachable_since is not None:
            self.unreachable_since = None
            self.display.note("the control plane is reachable again")
        if self.last is None:
            if seen is None:
                return self._error(f"service {self.name} not found")
            resolved = _resolve(seen, self.waited)
            if isinstance(resolved, str):
                return self._error(resolved)
            self.waited = resolved
            deployment = rollout.find(seen.service, resolved)
            if deployment is not None and deployment.created_at.seconds:
                self.since = deployment.created_at
        if seen is not None:
            self.last = seen
            self.display.show(seen)
        verdict = rollout.judge(seen, self.waited or 0)
        if verdict is None:
            return None
        self.display.close()
        if verdict.outcome is rollout.Outcome.COMPLETED:
            say(verdict.line)
        else:
            say(f"error: {verdict.line}", err=True)
            self._tell_events()
        return verdict.exit_code

    def timed_out(self, timeout: float) -> int:
        where = rollout.progress_line(self.last) if self.last is not None else "the service was never seen"
        message = f"deployment {self.waited or '?'} did not finish within {timeout:g}s; now: {where}"
        return self._error(message, rollout.EXIT_TIMEOUT)

    def _tell_events(self) -> None:
        events = rollout.events_since(self.last, self.since) if self.last is not None else []
        if events:
            say("events since the deployment began (oldest first):", err=True)
        for event in events:
            say(f"  {event.message}", err=True)

    def _error(self, message: str, code: int = rollout.EXIT_FAILED) -> int:
        self.display.close()
        say(f"error: {message}", err=True)
        return code


def wait_for_deployment(
    name: str,
    look: Callable[[], Look],
    requested: int | None,
    timeout: float | None,
    make_display: Callable[[], Display],
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    poll: float | None = None,
    unreachable_limit: float | None = None,
) -> int:
    """Wait for service `name`'s deployment `requested` (None: the PRIMARY at the first look)
    to end, polling every `poll` seconds; its exit code (`rollout` explains them)."""
    poll = POLL if poll is None else poll
    limit = UNREACHABLE_LIMIT if unreachable_limit is None else unreachable_limit
    display = make_display()
    watch = _Watch(name, requested, display, limit)
    started = clock()
    try:
        while True:
            seen = look()
            now = clock()
            code = watch.unreachable(now) if seen is UNREACHABLE else watch.answer(seen)
            if code is not None:
                return code
            if timeout is not None and now - started >= timeout:
                return watch.timed_out(timeout)
            pause = poll if timeout is None else min(poll, timeout - (now - started))
            sleep(max(0.0, pause))
    finally:
        display.close()
