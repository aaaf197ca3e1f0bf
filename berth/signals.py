"""Signals a busy event loop must not miss: SIGTERM, SIGINT, and the daemons' own.

asyncio's `add_signal_handler` alone loses signals under load. Its C-level
handler wakes the loop by writing the signal's number to the loop's self-pipe,
and a write that finds the pipe full is dropped (the handler must not block).
The pipe fills quickly: each one-byte wake-up costs a whole socket buffer, so
about 280 of them fill it (measured here: 278), and every
`call_soon_threadsafe` from another thread (an executor's result, for one)
adds one while the loop is busy running callbacks. Placing 10,000 tasks on
1,000 hollow agents, a busy control plane lost SIGTERM in 4 runs of 8 and kept
placing for 30 s until it was killed.

`on_signals` runs the callback from a Python-level handler, which the
interpreter runs in the main thread between two bytecodes however full the
pipe is, once per delivery. asyncio's wake-up byte is kept only to wake a loop
idle in epoll when another thread took the signal: the loop wakes, runs
bytecode, and the handler runs.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterable
from types import FrameType


def on_signals(
    loop: asyncio.AbstractEventLoop,
    signals: Iterable[signal.Signals],
    callback: Callable[[], None],
    at_once: Callable[[], None] | None = None,
) -> None:
    """Run `callback` on `loop` when one of `signals` arrives, even if its wake-up byte is lost.

    `at_once`, if given, runs inside the signal handler itself, before the loop
    gets a turn: for what must happen even if the loop never gets one again
    (arming a deadline thread). It must be quick and must not touch the loop.
    Call this from the main thread, with `loop` running in it.
    """

    def handler(signum: int, frame: FrameType | None) -> None:
        if at_once is not None:
            at_once()
        # From the main thread, between bytecodes: call_soon_threadsafe is the one safe
        # way in (it is what asyncio's own handler does); the callback waits in the
        # loop's ready queue even if the wake-up write finds the pipe full.
        loop.call_soon_threadsafe(callback)

    for sig in signals:
        # For the wake-up fd only: the callback runs from `handler`, exactly once per delivery.
        loop.add_signal_handler(sig, _woken)
        # Replaces the no-op Python handler add_signal_handler installed; the wake-up fd stays.
        signal.signal(sig, handler)
    # A full pipe is expected under load and handled above: no "Exception ignored" on stderr.
    wakeup = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup, warn_on_full_buffer=False)


def _woken() -> None:
    """The loop read a signal's wake-up byte: nothing to do, the Python-level handler acts."""
