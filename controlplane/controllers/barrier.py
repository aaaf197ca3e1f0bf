"""The crash barrier: a failure on one object is contained to that object.

A controller handles many objects per pass (services, tasks, nodes). When
handling one raises anything but `Unavailable` (etcd is down: nobody's fault,
the loop waits), the failure is logged, counted, recorded as the object's
service event when it has one, and the controller goes on with the others. A
stored object that breaks the code (a task definition written before the
bounds existed, or past the API) then stops only itself, not the cluster.
"""

from __future__ import annotations

import logging

from berth.errors import Unavailable
from controlplane.events import EventLog
from controlplane.metrics import OBJECT_FAILURES

log = logging.getLogger(__name__)

MAX_REASON = 200


def reason(error: BaseException) -> str:
    """The error as one short line for an event: its type and first words, escaped."""
    text = " ".join(str(error).split()) or type(error).__name__
    text = text.encode("unicode_escape").decode("ascii")
    if len(text) > MAX_REASON:
        text = text[:MAX_REASON] + "..."
    return f"{type(error).__name__}: {text}"


class Barrier:
    """Contains failures of one controller; remembers what it reported, to log each once."""

    def __init__(self, controller: str, events: EventLog | None = None) -> None:
        self._controller = controller
        self._events = events
        self._reported: set[tuple[str, str, str]] = set()

    async def contain(
        self, kind: str, ident: str, error: Exception, service: tuple[str, str] | None = None
    ) -> None:
        """Log, count and (for a service's object) record `error`; re-raise Unavailable."""
        why = self.note(kind, ident, error)
        if service is not None and service[1] and self._events is not None:
            cluster, name = service
            await self._events.record(
                cluster, name, f"service {name} could not be reconciled ({kind} {ident}): {why}"
            )

    def note(self, kind: str, ident: str, error: Exception) -> str:
        """Log and count `error` (no event: for code that cannot wait); re-raise Unavailable."""
        if isinstance(error, Unavailable):
            raise error
        OBJECT_FAILURES.labels(self._controller, kind).inc()
        why = reason(error)
        first = (kind, ident, why) not in self._reported
        if first:
            if len(self._reported) >= 10_000:
                self._reported.clear()  # bounded memory; a persisting failure is logged again
            self._reported.add((kind, ident, why))
            log.error(
                "event=object_failed controller=%s kind=%s id=%s error=%r action=skipped",
                self._controller,
                kind,
                ident,
                why,
                exc_info=error,
            )
        else:
            log.debug("event=object_failed controller=%s kind=%s id=%s", self._controller, kind, ident)
        return why
