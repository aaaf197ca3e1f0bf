"""How late an asyncio event loop runs: the wait of anything ready to run on it.

A control plane's lease keep-alives, agents' heartbeats and API calls all
run on its one event loop (and a hollow-agents process runs a thousand
agents on one); when a piece of CPU-bound work holds the loop, each of them
waits that long. `LoopLagMonitor` sleeps a short interval over and over and
records how late it wakes up: that lateness is what a keep-alive or a
heartbeat would have waited at that moment. Every sample goes to `observe`
(the control plane's Prometheus histogram) and each new worst to
`on_worst` (its gauge); a window with a stall is logged as it ends, and
`summary` logs the worst of the whole run (at shutdown).

With each stall goes the CPU time the loop's thread used meanwhile: on a
machine busier than its cores, a stall much longer than its CPU time was
spent waiting for a core, not running our code.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

# Seconds between two looks: short enough to see a stall of tens of milliseconds.
INTERVAL = 0.05
# Seconds of one reporting window, and the lateness in it worth a log line.
WINDOW = 10.0
STALL = 0.1


def _ignore(_: float) -> None:
    pass


class LoopLagMonitor:
    """Measures the running loop's lateness until cancelled; `worst` is the maximum so far (seconds)."""

    def __init__(
        self,
        interval: float = INTERVAL,
        window: float = WINDOW,
        stall: float = STALL,
        observe: Callable[[float], None] = _ignore,
        on_worst: Callable[[float], None] = _ignore,
        name: str = "event_loop",
    ) -> None:
        self._interval = interval
        self._window = window
        self._stall = stall
        self._observe = observe
        self._on_worst = on_worst
        self._name = name
        self.worst = 0.0
        self.worst_cpu = 0.0  # seconds of CPU the loop's thread used around the worst stall
        self.samples = 0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        window_worst = window_cpu = 0.0
        window_end = loop.time() + self._window
        while True:
            asleep_at, cpu_at = loop.time(), time.thread_time()
            await asyncio.sleep(self._interval)
            lag = max(0.0, loop.time() - asleep_at - self._interval)
            cpu = time.thread_time() - cpu_at
            self.samples += 1
            self._observe(lag)
            if lag > window_worst:
                window_worst, window_cpu = lag, cpu
            if lag > self.worst:
                self.worst, self.worst_cpu = lag, cpu
                self._on_worst(lag)
            if loop.time() >= window_end:
                if window_worst >= self._stall:
                    log.warning(
                        "event=event_loop_stalled loop=%s max_ms=%.0f cpu_ms=%.0f "
                        "window_s=%.0f worst_ms=%.0f",
                        self._name,
                        window_worst * 1000,
                        window_cpu * 1000,
                        self._window,
                        self.worst * 1000,
                    )
                window_worst = window_cpu = 0.0
                window_end = loop.time() + self._window

    def summary(self) -> None:
        """One line with the worst lateness of the run."""
        log.info(
            "event=event_loop_lag loop=%s max_ms=%.0f cpu_ms=%.0f samples=%d",
            self._name,
            self.worst * 1000,
            self.worst_cpu * 1000,
            self.samples,
        )
