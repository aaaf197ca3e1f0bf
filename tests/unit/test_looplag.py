"""LoopLagMonitor: a step that holds the loop shows as lateness, with the CPU it used."""

from __future__ import annotations

import asyncio
import time

from berth.looplag import LoopLagMonitor


async def test_a_blocking_step_is_measured_as_lag() -> None:
    seen: list[float] = []
    worst: list[float] = []
    monitor = LoopLagMonitor(interval=0.01, window=0.05, observe=seen.append, on_worst=worst.append)
    task = asyncio.create_task(monitor.run())
    await asyncio.sleep(0.05)
    started = time.thread_time()
    while time.thread_time() - started < 0.2:  # holds the loop for 0.2 s of CPU
        pass
    await asyncio.sleep(0.05)
    task.cancel()
    assert monitor.worst >= 0.15
    assert monitor.worst_cpu >= 0.15, "the stall was our own CPU, not a wait for a core"
    assert worst[-1] == monitor.worst and max(seen) == monitor.worst
    assert monitor.samples == len(seen) >= 3
