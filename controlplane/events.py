"""Service events: the operator-facing history `berth service describe` shows."""

from __future__ import annotations

import logging

from berth.clock import now
from berth.v1 import resources_pb2 as pb
from controlplane.store import RETRY, Retry, StoreAPI, keys, optimistic

log = logging.getLogger(__name__)

MAX_EVENTS = 100


class EventLog:
    """Appends bounded, de-duplicated events to a service's event list."""

    def __init__(self, store: StoreAPI) -> None:
        self._store = store

    async def record(self, cluster: str, service: str, message: str) -> None:
        key = keys.events(cluster, service)

        async def attempt() -> Retry | None:
            current = await self._store.get(key, pb.ServiceEvents)
            events = current.value if current else pb.ServiceEvents()
            # A condition that persists (a task that cannot be placed) is
            # reported once, not on every reconcile pass.
            if events.events and events.events[-1].message == message:
                return None
            events.events.append(pb.ServiceEvent(created_at=now(), message=message))
            del events.events[:-MAX_EVENTS]
            if (
                await self._store.put_if_unchanged(key, events, current.mod_revision if current else 0)
                is None
            ):
                return RETRY
            log.info("event=service_event cluster=%s service=%s message=%r", cluster, service, message)
            return None

        await optimistic(attempt, what=f"the events of service {service}")

    def last_message(self, events: pb.ServiceEvents | None) -> str:
        return events.events[-1].message if events and events.events else ""
