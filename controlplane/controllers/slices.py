"""Time slices for the controllers' CPU-bound passes, so the event loop gets its turns.

The leader's controllers share one event loop with the agents' streams, the
operator API and the status writers. A pass over thousands of tasks or
nodes (planning, building the scheduler's snapshot, deciding every service)
gives the loop back whenever it has run for `SLICE` seconds: nothing else
then waits behind it for more than about that long. Under placement load
(10 services of 1,000 tasks on 1,000 hollow agents) single steps of the
service controller and of the scheduler's snapshot held the loop for
0.4-0.5 s before.
"""

from __future__ import annotations

import asyncio
import time

# Seconds of work after which a pass lets the event loop run.
SLICE = 0.01


class Slicer:
    """`await slicer.turn()` between units of work: it yields only once the slice is used up."""

    def __init__(self, budget: float = SLICE) -> None:
        self._budget = budget
        self._started = time.monotonic()

    async def turn(self) -> None:
        if time.monotonic() - self._started >= self._budget:
            await asyncio.sleep(0)
            self._started = time.monotonic()
