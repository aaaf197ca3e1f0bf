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


# SIGTERM while the loop is busy and other threads have filled its self-pipe with wake-ups
# (call_soon_threadsafe, as executor results and keep-alive threads do under load): asyncio's
# wake-up byte for the signal is dropped, and the signal must still stop the plane.
FLOODED = textwrap.dedent(
    """
    import asyncio, os, signal, threading, time
    import controlplane.main as main

    class Flooded:
        def __init__(self, settings):
            pass

        async def start(self):
            loop = asyncio.get_running_loop()

            def flood():
                for _ in range(2000):
                    loop.call_soon_threadsafe(lambda: None)
                os.kill(os.getpid(), signal.SIGTERM)

            thread = threading.Thread(target=flood)
            thread.start()
            thread.join()  # the loop is held meanwhile, as by a long step
            time.sleep(0.2)

        async def stop(self):
            print("stopped")

    main.ControlPlane = Flooded
    asyncio.run(main.serve(None, stop_deadline=30.0))
    """
)


# SIGTERM while a step holds the loop for good: the deadline counts from the signal itself.
WEDGED = textwrap.dedent(
    """
    import asyncio, os, signal, time
    import controlplane.main as main

    class Wedged:
        def __init__(self, settings):
            pass

        async def start(self):
            asyncio.get_running_loop().call_later(0.2, self.wedge)

        def wedge(self):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(60)

        async def stop(self):
            print("stopped")

    main.ControlPlane = Wedged
    asyncio.run(main.serve(None, stop_deadline=1.0))
    """
)


def run_plane(script: str, timeout: float) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run a scripted control plane to its end; its result and the seconds it took."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    return result, time.monotonic() - started


def test_sigterm_stops_a_busy_plane_whose_wake_up_pipe_is_full() -> None:
    result, seconds = run_plane(FLOODED, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "stopped"
    assert seconds < 20, "the signal was noticed late"
    assert "Exception ignored" not in result.stderr, result.stderr


def test_the_deadline_runs_from_the_signal_even_if_the_loop_never_turns_again() -> None:
    result, seconds = run_plane(WEDGED, timeout=50)
    assert result.returncode == 1, result.stderr
    assert seconds < 30, "exited at the deadline, not after the wedged step"
    assert "event=stop_deadline_passed seconds=1 action=exit" in result.stderr, result.stderr
    assert "stopped" not in result.stdout


def test_sigterm_during_start_up_stops_cleanly() -> None:
    result, seconds = run_plane(STARTING, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "stopped"
    assert seconds < 20, "start-up was cancelled, not waited for"


def test_a_hung_shutdown_is_abandoned_at_the_deadline_and_says_so() -> None:
    result, seconds = run_plane(STUCK, timeout=30)
    assert result.returncode == 1, result.stderr
    assert seconds < 20, "exited at the deadline, not after the hung step"
    assert "event=stop_deadline_passed seconds=1 action=exit" in result.stderr, result.stderr
