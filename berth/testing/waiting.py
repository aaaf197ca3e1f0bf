"""Polling with a deadline, for tests that wait on a real system to converge."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1
) -> tuple[T, float]:
    """Call probe until it returns something other than None; return it and the seconds it took.

    On timeout, fail with the last value seen, so the test says what the
    system looked like instead of only "timed out".
    """
    start = time.monotonic()
    last: T | None = None
    while True:
        last = probe()
        elapsed = time.monotonic() - start
        if last is not None and last is not False:
            return last, elapsed
        if elapsed > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last seen: {last!r}")
        time.sleep(interval)
