"""SIGTERM stops the control plane within its deadline even when the clean shutdown hangs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from berth.testing.daemons import REPO

# A control plane whose shutdown holds the event loop, as a CPU-bound step would.
STUCK = textwrap.dedent(
    """
    import asyncio, os, signal, time
    import controlplane.main as main

    class Stuck:
        def __init__(self, settings):
            pass

        async def start(self):
            os.kill(os.getpid(), signal.SIGTERM)

        async def stop(self):
            time.sleep(60)

    main.ControlPlane = Stuck
    asyncio.run(main.serve(None, stop_deadline=1.0))
    """
)


# SIGTERM while start-up waits (for an etcd that does not come, say).
STARTING = textwrap.dedent(
    """
    import asyncio, os, signal
    import controlplane.main as main

    class Starting:
        def __init__(self, settings):
            pass

        async def start(self):
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.sleep(3600)

        async def stop(self):
            print("stopped")

    main.ControlPlane = Starting
    asyncio.run(main.serve(None, stop_deadline=30.0))
    """
)


def test_sigterm_during_start_up_stops_cleanly() -> None:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", STARTING], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "stopped"
    assert time.monotonic() - started < 20, "start-up was cancelled, not waited for"


def test_a_hung_shutdown_is_abandoned_at_the_deadline_and_says_so() -> None:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", STUCK], cwd=REPO, capture_output=True, text=True, timeout=30
    )
    seconds = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert seconds < 20, "exited at the deadline, not after the hung step"
    assert "event=stop_deadline_passed seconds=1 action=exit" in result.stderr, result.stderr
