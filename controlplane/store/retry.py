"""The one retry policy for optimistic transactions.

Every read-modify-write in Berth reads fresh state, decides, and commits
with a compare on the revisions it read. When another writer got there
first the commit fails and the whole attempt is simply made again on the
new state. `optimistic` runs such an attempt until it stops asking for a
retry, with a short jittered pause between tries so racing writers spread
out, and gives up with one error, `berth.errors.Conflict` (gRPC ABORTED:
the caller may retry), naming what kept changing.
"""

from __future__ import annotations

import asyncio
import enum
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from berth.errors import Conflict

T = TypeVar("T")

ATTEMPTS = 20
# Pauses grow from FIRST_PAUSE, doubling up to MAX_PAUSE (seconds), each with full jitter.
FIRST_PAUSE = 0.002
MAX_PAUSE = 0.1


class Retry(enum.Enum):
    """Returned by an attempt whose commit lost a race: run it again on fresh state."""

    RETRY = "retry"


RETRY = Retry.RETRY


async def optimistic(attempt: Callable[[], Awaitable[T | Retry]], what: str, attempts: int = ATTEMPTS) -> T:
    """Run `attempt` until it returns something other than RETRY.

    Raises Conflict after `attempts` lost races; errors raised by the attempt
    itself (not found, invalid, unavailable) pass through at once.
    """
    pause = FIRST_PAUSE
    for number in range(attempts):
        result = await attempt()
        if not isinstance(result, Retry):
            return result
        if number < attempts - 1:
            await asyncio.sleep(random.uniform(0, pause))
            pause = min(pause * 2, MAX_PAUSE)
    raise Conflict(f"{what} kept changing while it was being written ({attempts} attempts); try again")
