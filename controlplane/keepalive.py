"""Lease keep-alives sent from a thread of their own, so a busy event loop cannot starve them.

Every node's liveness is an etcd lease refreshed at each of its heartbeats
(`controlplane.liveness`): a thousand nodes make about 300 keep-alives a
second, all on one LeaseKeepAlive stream. On the control plane's event loop
each keep-alive is one gRPC write, and a write completes only on a later
turn of the loop; under placement load a turn takes hundreds of
milliseconds, so the stream sent a few keep-alives a second while hundreds
were asked for. Measured with 10 services of 1,000 tasks on 1,000 hollow
agents: 2,000 keep-alives waiting, and healthy nodes whose leases ran out
(31 declared DOWN) while the loop was never stalled for more than 1.5 s.

`ThreadedKeepAlive` is a `KeepAlive` (the store's protocol) whose stream
runs on an event loop in a thread of its own, over a store connection of
its own: the main loop only hands lease ids over (`refresh`, thread-safe),
and hears back only about leases etcd says have expired. A lease already
waiting to be sent is not queued twice, so a backlog can never hold more
than one keep-alive per lease. The Python work in that thread is small, so
it gets its turns under the GIL within milliseconds however busy the main
loop is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Protocol

from berth.errors import Unavailable
from berth.looplag import LoopLagMonitor
from controlplane.store import KeepAlive

log = logging.getLogger(__name__)

# Seconds to wait for the thread's store connection before giving up on this stream.
CONNECT_TIMEOUT = 10.0
# LeaseKeepAlive streams side by side on the thread's connection, leases spread over them by id.
# One stream has one keep-alive in flight at a time, each completed on a later turn of the
# thread's loop, and the thread gets a turn only when the busy main thread lets go of the GIL
# (turns were late by up to 200 ms while the thread used 1-2 ms of CPU). With one stream, 9
# nodes that joined last lost their leases during the burst of 1,000 joins; several streams
# carry one keep-alive each per turn.
STREAMS = 8
# Keep-alives waiting at once worth a log line (once per 10 s window at most).
BACKLOG = 200


class KeepAliveSource(Protocol):
    """What the thread needs of a store: its own connection and a keep-alive stream on it."""

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    def keep_alive_stream(self) -> KeepAlive: ...


class ThreadedKeepAlive:
    """One etcd LeaseKeepAlive stream, driven from its own thread and loop.

    `connect` makes a fresh, not yet connected store; it is called in the
    thread, whose loop the store's connection then belongs to. `run` (on the
    caller's loop) starts the thread and returns, raising Unavailable, when
    the stream breaks; cancelling `run` stops the thread.
    """

    def __init__(
        self, connect: Callable[[], KeepAliveSource], every_reply: bool = False, streams: int = STREAMS
    ) -> None:
        self._connect = connect
        self._streams = streams
        # False: only expiries are handed back (node leases); True: every reply (the leader's lease).
        self._every_reply = every_reply
        self._lock = threading.Lock()
        self._pending: dict[int, None] = {}  # lease ids to send, in order, each once
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = False

    def refresh(self, lease_id: int) -> None:
        """Queue a keep-alive for the lease (from any thread); a lease already queued waits once."""
        with self._lock:
            if lease_id in self._pending:
                return
            first = not self._pending
            self._pending[lease_id] = None
            loop, wake = self._loop, self._wake
        if first and loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # its loop has just closed
                loop.call_soon_threadsafe(wake.set)

    def pending(self) -> int:
        """Keep-alives waiting to be sent."""
        with self._lock:
            return len(self._pending)

    async def run(self, on_reply: Callable[[int, int], None]) -> None:
        """Carry refreshes to etcd until the stream breaks (Unavailable) or this is cancelled.

        `on_reply` hears, on the caller's loop, of leases etcd answered with TTL 0 or less
        (expired), or of every reply when made with `every_reply`.
        """
        caller = asyncio.get_running_loop()
        ended: asyncio.Future[None] = caller.create_future()

        def expired(lease_id: int, ttl: int) -> None:
            with contextlib.suppress(RuntimeError):  # the caller's loop has closed
                caller.call_soon_threadsafe(on_reply, lease_id, ttl)

        def finish(error: BaseException | None) -> None:
            if ended.done():
                return
            if error is None:
                ended.set_result(None)
            else:
                ended.set_exception(error)

        def thread_main() -> None:
            error: BaseException | None = None
            try:
                asyncio.run(self._serve(expired))
            except BaseException as raised:  # handed to the caller's loop
                error = raised
            with contextlib.suppress(RuntimeError):  # the caller's loop has closed
                caller.call_soon_threadsafe(finish, error)

        thread = threading.Thread(target=thread_main, name="lease-keepalive", daemon=True)
        thread.start()
        try:
            await ended
        finally:
            self._stop()
            await asyncio.to_thread(thread.join, CONNECT_TIMEOUT)

    def _stop(self) -> None:
        with self._lock:
            self._stopping = True
            loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)

    async def _serve(self, expired: Callable[[int, int], None]) -> None:
        store = self._connect()
        try:
            await asyncio.wait_for(store.connect(), CONNECT_TIMEOUT)
        except TimeoutError as error:
            raise Unavailable(f"etcd not reached within {CONNECT_TIMEOUT:.0f}s for keep-alives") from error
        wake = asyncio.Event()
        with self._lock:
            self._loop, self._wake = asyncio.get_running_loop(), wake
            if self._pending or self._stopping:  # asked for (or stopped) while connecting
                wake.set()
        streams = [store.keep_alive_stream() for _ in range(self._streams)]

        def on_reply(lease_id: int, ttl: int) -> None:
            if ttl <= 0 or self._every_reply:
                expired(lease_id, ttl)

        senders = {asyncio.create_task(stream.run(on_reply)) for stream in streams}
        # This loop's own lateness: what a keep-alive waits here after the hand-over (stalls logged).
        lag = LoopLagMonitor(name="lease-keepalive")
        watching = asyncio.create_task(lag.run())
        loop = asyncio.get_running_loop()
        backlog, logged_at = 0, loop.time()
        try:
            while not any(sender.done() for sender in senders):
                waker = asyncio.create_task(wake.wait())
                await asyncio.wait({*senders, waker}, return_when=asyncio.FIRST_COMPLETED)
                waker.cancel()
                wake.clear()
                with self._lock:
                    if self._stopping:
                        return
                    batch, self._pending = list(self._pending), {}
                for lease_id in batch:
                    streams[lease_id % len(streams)].refresh(lease_id)
                backlog = max(backlog, len(batch))
                if backlog >= BACKLOG and loop.time() - logged_at >= 10:
                    log.warning("event=keepalive_backlog max=%d streams=%d", backlog, len(streams))
                    backlog, logged_at = 0, loop.time()
            for sender in senders:
                if sender.done():
                    sender.result()  # its Unavailable, if it broke
            raise Unavailable("etcd ended the keep-alive stream")
        finally:
            watching.cancel()
            lag.summary()
            with self._lock:
                self._loop = self._wake = None
            for sender in senders:
                sender.cancel()
            await asyncio.gather(*senders, return_exceptions=True)
            with contextlib.suppress(Exception):
                await store.close()
            # gRPC's poller hands this loop the cancelled call's last events: let them land
            # before asyncio.run closes the loop (else they are logged as errors).
            await asyncio.sleep(0.1)
