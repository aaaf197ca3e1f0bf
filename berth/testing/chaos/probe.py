"""The VIP client: asks http://VIP:PORT/ over and over, a new TCP connection each time, and
writes one line per request ("<unix time> ok" or "<unix time> fail <why>") to its standard output.

Runs inside a lab host's network namespace (`VipProbe` starts it there with nsenter), so it
goes through that host's service rules as any client on the host would. Bounded twice: by
--max-requests and --max-seconds; SIGTERM ends it after the request in flight.

    python -m berth.testing.chaos.probe VIP PORT [--interval 0.05] [--max-requests N]
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from berth.testing.lab import Lab

# Seconds between two requests.
INTERVAL = 0.05


def ask(vip: str, port: int, timeout: float) -> str:
    """'ok', or 'fail <why>': one HTTP/1.0 GET on a fresh connection."""
    try:
        with socket.create_connection((vip, port), timeout=timeout) as connection:
            connection.sendall(b"GET / HTTP/1.0\r\n\r\n")
            answer = b""
            while chunk := connection.recv(4096):
                answer += chunk
    except OSError as error:
        return f"fail {type(error).__name__}"
    status = answer.split(b"\r\n", 1)[0]
    return "ok" if b" 200 " in status else f"fail status {status[:40]!r}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("vip")
    parser.add_argument("port", type=int)
    parser.add_argument("--interval", type=float, default=INTERVAL)
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--max-requests", type=int, default=20_000)
    parser.add_argument("--max-seconds", type=float, default=1800.0)
    args = parser.parse_args()
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    deadline = time.monotonic() + args.max_seconds
    for _ in range(args.max_requests):
        if stopping or time.monotonic() > deadline:
            break
        started = time.time()
        print(f"{started:.3f} {ask(args.vip, args.port, args.timeout)}", flush=True)
        time.sleep(args.interval)
    print("done", flush=True)


@dataclass(frozen=True)
class Request:
    at: float  # unix time it started
    ok: bool
    why: str  # "" when ok


@dataclass(frozen=True)
class ProbeCount:
    requests: int
    failed: int
    # The distinct reasons, for the report.
    reasons: tuple[str, ...]
    # The longest stretch of consecutive failed requests, in seconds from the first to the last.
    longest_outage: float = 0.0

    @classmethod
    def of(cls, requests: list[Request]) -> ProbeCount:
        failed = [r.why for r in requests if not r.ok]
        return cls(len(requests), len(failed), tuple(sorted(set(failed))), longest_outage(requests))


def longest_outage(requests: list[Request]) -> float:
    longest, first = 0.0, None
    for request in requests:
        if request.ok:
            first = None
            continue
        first = request.at if first is None else first
        longest = max(longest, request.at - first)
    return longest


def parse(text: str) -> list[Request]:
    """The probe's output as requests (a torn last line is skipped)."""
    requests = []
    for line in text.splitlines():
        at, _, outcome = line.partition(" ")
        try:
            started = float(at)
        except ValueError:
            continue
        if outcome == "ok":
            requests.append(Request(started, True, ""))
        elif outcome.startswith("fail"):
            requests.append(Request(started, False, outcome.removeprefix("fail").strip()))
    return requests


class VipProbe:
    """The probe running in `host`'s namespace, its output in `log`."""

    def __init__(self, lab: Lab, host: str, vip: str, port: int, log: Path, max_seconds: float) -> None:
        self.log = log
        command = [
            *lab.host(host).nsenter(),
            sys.executable,
            "-m",
            "berth.testing.chaos.probe",
            vip,
            str(port),
            "--max-seconds",
            str(max_seconds),
            # At most one request per interval: the time bound is the one that counts.
            "--max-requests",
            str(int(max_seconds / INTERVAL) + 1),
        ]
        with log.open("w") as out:
            self._process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def requests(self) -> list[Request]:
        return parse(self.log.read_text(errors="replace"))

    def finish(self) -> list[Request]:
        """Stop asking; every request made."""
        self.close()
        return self.requests()

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)


if __name__ == "__main__":
    main()
