"""ThreadedKeepAlive: keep-alives leave from a thread of their own, once per waiting lease."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable

import pytest

from berth.errors import Unavailable
from controlplane.keepalive import ThreadedKeepAlive
from controlplane.store import KeepAlive
from controlplane.store.memory import MemoryKeepAlive
from tests.unit.conftest import until


class FakeSource:
    """A store connection the thread makes: answers keep-alives with `ttl_of` and records them."""

    def __init__(self, ttl_of: Callable[[int], int] = lambda _: 10, broken: bool = False) -> None:
        self._ttl_of = ttl_of
        self._broken = broken
        self.sent: list[int] = []
        self.threads: set[str] = set()
        self.closed = threading.Event()

    async def connect(self) -> None:
        self.threads.add(threading.current_thread().name)

    async def close(self) -> None:
        self.closed.set()

    def keep_alive_stream(self) -> KeepAlive:
        if self._broken:
            return _Broken()

        def answer(lease: int) -> int:
            self.sent.append(lease)
            return self._ttl_of(lease)

        return MemoryKeepAlive(answer)


class _Broken:
    def refresh(self, lease_id: int) -> None:
        pass

    async def run(self, on_reply: Callable[[int, int], None]) -> None:
        raise Unavailable("etcd lease keep-alive broke: test")


async def _running(keeper: ThreadedKeepAlive, on_reply: Callable[[int, int], None]) -> asyncio.Task[None]:
    return asyncio.create_task(keeper.run(on_reply))


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_keep_alives_go_out_from_a_thread_and_only_expiries_come_back() -> None:
    source = FakeSource(ttl_of=lambda lease: 0 if lease == 2 else 10)
    keeper = ThreadedKeepAlive(lambda: source)
    replies: list[tuple[int, int, str]] = []
    task = await _running(
        keeper, lambda lease, ttl: replies.append((lease, ttl, threading.current_thread().name))
    )
    try:
        keeper.refresh(1)
        keeper.refresh(2)

        async def both_sent() -> bool:
            return sorted(source.sent) == [1, 2] and bool(replies)

        await until(both_sent, "both keep-alives sent and the expiry heard")
        assert source.threads == {"lease-keepalive"}, "its own thread made the connection"
        # The expired lease only, and on the caller's loop (the main thread).
        assert replies == [(2, 0, threading.current_thread().name)]
    finally:
        await _stop(task)
    assert source.closed.is_set()


async def test_a_lease_already_waiting_is_sent_once() -> None:
    source = FakeSource()
    keeper = ThreadedKeepAlive(lambda: source)
    for _ in range(5):
        keeper.refresh(7)
    keeper.refresh(8)
    assert keeper.pending() == 2
    task = await _running(keeper, lambda lease, ttl: None)
    try:

        async def sent() -> bool:
            return len(source.sent) == 2

        await until(sent, "the waiting keep-alives sent")
        assert sorted(source.sent) == [7, 8]
        keeper.refresh(7)  # sent already: queued again

        async def again() -> bool:
            return sorted(source.sent) == [7, 7, 8]

        await until(again, "the next keep-alive sent")
    finally:
        await _stop(task)


async def test_cancelling_run_stops_the_thread() -> None:
    keeper = ThreadedKeepAlive(FakeSource)
    task = await _running(keeper, lambda lease, ttl: None)

    async def started() -> bool:
        return any(t.name == "lease-keepalive" for t in threading.enumerate())

    await until(started, "the thread started")
    await _stop(task)
    assert not [t for t in threading.enumerate() if t.name == "lease-keepalive"]


async def test_a_broken_stream_ends_run_with_unavailable() -> None:
    keeper = ThreadedKeepAlive(lambda: FakeSource(broken=True))
    with pytest.raises(Unavailable, match="keep-alive broke"):
        await asyncio.wait_for(keeper.run(lambda lease, ttl: None), 10)


async def test_cancelled_while_connecting_the_thread_still_ends() -> None:
    class SlowSource(FakeSource):
        async def connect(self) -> None:
            await asyncio.sleep(0.3)

    keeper = ThreadedKeepAlive(SlowSource)
    task = await _running(keeper, lambda lease, ttl: None)
    await asyncio.sleep(0.05)  # the thread is connecting
    started = asyncio.get_running_loop().time()
    await _stop(task)
    assert asyncio.get_running_loop().time() - started < 5, "not left to the join's timeout"
    assert not [t for t in threading.enumerate() if t.name == "lease-keepalive"]
