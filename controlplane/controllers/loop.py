"""Runs the leader's controllers in one level-triggered loop.

One pass runs every controller in order against the cache. After a pass
that wrote, the loop waits until the cache has seen its own writes, so the
next pass can never act twice on the same stale state (no duplicate tasks).
Otherwise it sleeps until the cache changes, a resync interval passes, or a
controller that says when time alone changes its mind (`Paced`: a task that
settles) wants its next pass, whichever comes first.

The loop survives its controllers: a controller whose pass raises is logged
and counted (berth_controller_failures_total), the other controllers still
run, and the loop backs off (doubling up to `MAX_BACKOFF`) before the next
pass. Controllers contain failures of single objects themselves (`barrier`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Protocol, runtime_checkable

from berth.errors import Unavailable
from controlplane.cache import ClusterCache
from controlplane.metrics import CONTROLLER_FAILURES, RECONCILE_SECONDS

log = logging.getLogger(__name__)

FIRST_BACKOFF = 0.1
MAX_BACKOFF = 5.0


class Controller(Protocol):
    async def reconcile(self) -> int:
        """One pass; returns the highest etcd revision written, 0 if none."""


@runtime_checkable
class Paced(Protocol):
    def look_again_at(self) -> float:
        """Wall-clock time (time.time()) at which a pass is due with no change (0: none)."""


class ControllerLoop:
    def __init__(
        self,
        cache: ClusterCache,
        controllers: list[Controller],
        resync_interval: float = 2.0,
        debounce: float = 0.005,
    ) -> None:
        self._cache = cache
        self._controllers = controllers
        self._resync_interval = resync_interval
        self._debounce = debounce

    async def run(self) -> None:
        log.info("event=controllers_started")
        backoff = 0.0
        while True:
            changed = self._cache.changed()
            written, failed, unavailable = 0, False, False
            for controller in self._controllers:
                name = type(controller).__name__
                started = time.monotonic()
                try:
                    result = await controller.reconcile()
                    written = max(written, result)
                    if result:
                        await self._cache.wait_for_revision(result)
                except Unavailable as error:
                    log.warning("event=reconcile_failed controller=%s error=%r", name, str(error))
                    unavailable = True
                    break
                except Exception:
                    # One controller's bug must not stop the others, nor the loop.
                    CONTROLLER_FAILURES.labels(name).inc()
                    log.exception("event=controller_failed controller=%s action=backoff", name)
                    failed = True
                    continue
                RECONCILE_SECONDS.labels(name).observe(time.monotonic() - started)
                log.debug(
                    "event=reconciled controller=%s seconds=%.3f wrote=%s",
                    name,
                    time.monotonic() - started,
                    bool(result),
                )
            if unavailable:
                await asyncio.sleep(1.0)
                continue
            if failed:
                backoff = min(MAX_BACKOFF, max(FIRST_BACKOFF, backoff * 2))
                await asyncio.sleep(backoff)
                continue
            backoff = 0.0
            if written:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), self._pause())
            # Let a burst of watch events land before the next pass.
            await asyncio.sleep(self._debounce)

    def _pause(self) -> float:
        """Seconds until the next pass that no change asks for."""
        due = [
            at
            for controller in self._controllers
            if isinstance(controller, Paced) and (at := controller.look_again_at())
        ]
        if not due:
            return self._resync_interval
        return min(self._resync_interval, max(0.0, min(due) - time.time()))
