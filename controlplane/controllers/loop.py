"""Runs the leader's controllers in one level-triggered loop.

One pass runs every controller in order against the cache. After a pass
that wrote, the loop waits until the cache has seen its own writes, so the
next pass can never act twice on the same stale state (no duplicate tasks).
Otherwise it sleeps until the cache changes, or a resync interval passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Protocol

from berth.errors import Unavailable
from controlplane.cache import ClusterCache
from controlplane.metrics import RECONCILE_SECONDS

log = logging.getLogger(__name__)


class Controller(Protocol):
    async def reconcile(self) -> int:
        """One pass; returns the highest etcd revision written, 0 if none."""


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
        while True:
            changed = self._cache.changed()
            written = 0
            try:
                for controller in self._controllers:
                    started = time.monotonic()
                    result = await controller.reconcile()
                    written = max(written, result)
                    if result:
                        await self._cache.wait_for_revision(result)
                    RECONCILE_SECONDS.labels(type(controller).__name__).observe(time.monotonic() - started)
                    log.debug(
                        "event=reconciled controller=%s seconds=%.3f wrote=%s",
                        type(controller).__name__,
                        time.monotonic() - started,
                        bool(result),
                    )
            except Unavailable as error:
                log.warning("event=reconcile_failed error=%r", str(error))
                await asyncio.sleep(1.0)
                continue
            if written:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), self._resync_interval)
            # Let a burst of watch events land before the next pass.
            await asyncio.sleep(self._debounce)
