"""The agent's HTTP endpoint where containers push custom metrics: `POST /v1/metrics/NAME`.

A container of a task on this host sends its value as a plain-text number:

    wget -q -O- --post-data 42 http://GATEWAY:PORT/v1/metrics/queue_depth

and the agent relays it up its stream as a MetricPut for that task (the control plane checks
again that the task is placed on this node). The caller is identified by its source address
alone: the agent looks up which of this node's running containers has it (a short-lived cache
of the engine's list). There is no other credential, so the endpoint listens only where the
operator says (`--metrics-push-listen`, off by default, typically the engine's bridge gateway),
never on every address by default.

Everything a caller sends is hostile: one request per connection, HTTP/1.0 or 1.1, POST only,
a head of at most MAX_HEAD bytes, a Content-Length of at most MAX_BODY bytes (no chunked
bodies), the whole request within REQUEST_TIMEOUT seconds, MAX_CONNECTIONS at once, and at most
RATE values a second per task (a burst of BURST). Every refusal is one status line and a one
line reason; nothing reaches the stream unless all of it is valid.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from berth.errors import InvalidArgument
from berth.metric_values import check_name, parse_value
from berth.v1 import agent_pb2 as agent_pb

log = logging.getLogger(__name__)

PATH_PREFIX = "/v1/metrics/"
MAX_HEAD = 2048
MAX_BODY = 64
MAX_HEADERS = 32
REQUEST_TIMEOUT = 5.0
MAX_CONNECTIONS = 64
# Values a second per task, and the burst allowed above it.
RATE = 10.0
BURST = 20.0
# Tasks whose buckets are kept; idle ones are forgotten beyond this.
MAX_BUCKETS = 4096
# `--metrics-push-listen bridge:PORT` listens on the engine's default bridge gateway.
BRIDGE = "bridge"

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_DIGITS = re.compile(r"[0-9]{1,6}")
_REASONS = {
    204: "No Content",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Head:
    method: str
    path: str
    content_length: int


def parse_head(head: bytes) -> Head:
    """The request line and headers (ending with an empty line); strict, bounded."""
    if len(head) > MAX_HEAD:
        raise HttpError(431, f"the request head is longer than {MAX_HEAD} bytes")
    if not head.endswith(b"\r\n\r\n"):
        raise HttpError(400, "the request head must end with an empty line (CRLF)")
    try:
        text = head[:-4].decode("ascii")
    except UnicodeDecodeError:
        raise HttpError(400, "the request head is not ASCII") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise HttpError(400, "the request line must be: METHOD PATH HTTP/1.1")
    method, path, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise HttpError(505, "only HTTP/1.1 and HTTP/1.0 are spoken here")
    if method != "POST":
        raise HttpError(405, "only POST is allowed")
    if len(lines) - 1 > MAX_HEADERS:
        raise HttpError(431, f"more than {MAX_HEADERS} headers")
    lengths = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.fullmatch(name) or any(c < " " and c != "\t" for c in value):
            raise HttpError(400, "a header line is malformed")
        name = name.lower()
        value = value.strip(" \t")
        if name == "transfer-encoding":
            raise HttpError(400, "Transfer-Encoding is not accepted: send Content-Length")
        if name == "content-length":
            if not _DIGITS.fullmatch(value):
                raise HttpError(400, "Content-Length must be a number")
            lengths.append(int(value))
    if not lengths:
        raise HttpError(411, "Content-Length is required")
    if len(set(lengths)) != 1:
        raise HttpError(400, "Content-Length is given more than once")
    if lengths[0] > MAX_BODY:
        raise HttpError(413, f"the body is longer than {MAX_BODY} bytes")
    return Head(method, path, lengths[0])


def parse_metric(path: str, body: bytes) -> tuple[str, float]:
    """The metric's name (from the path) and value (the body)."""
    if not path.startswith(PATH_PREFIX):
        raise HttpError(404, f"post to {PATH_PREFIX}NAME")
    try:
        name = check_name(path[len(PATH_PREFIX) :])
        text = body.decode("ascii")
        return name, parse_value(text)
    except UnicodeDecodeError:
        raise HttpError(400, "the body must be a number in ASCII") from None
    except InvalidArgument as error:
        raise HttpError(400, str(error)) from None


class TaskRates:
    """A token bucket per task."""

    def __init__(self, rate: float = RATE, burst: float = BURST) -> None:
        self._rate = rate
        self._burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, task_id: str, now: float) -> bool:
        tokens, last = self._buckets.get(task_id, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        if len(self._buckets) >= MAX_BUCKETS and task_id not in self._buckets:
            # Full buckets say nothing: forget them (a task's bucket refills in BURST/RATE s).
            full_after = self._burst / self._rate
            self._buckets = {t: b for t, b in self._buckets.items() if now - b[1] < full_after}
        if tokens < 1.0:
            self._buckets[task_id] = (tokens, now)
            return False
        self._buckets[task_id] = (tokens - 1.0, now)
        return True


class TaskAddresses:
    """Which running task of this node has an address: the engine's list, cached for a few
    seconds and looked up again (at most once a second) when an address is unknown."""

    def __init__(
        self,
        lookup: Callable[[], Awaitable[dict[str, str]]],
        clock: Callable[[], float] = time.monotonic,
        max_age: float = 5.0,
        min_refresh: float = 1.0,
    ) -> None:
        self._lookup = lookup
        self._clock = clock
        self._max_age = max_age
        self._min_refresh = min_refresh
        self._known: dict[str, str] = {}
        self._at = float("-inf")
        self._lock = asyncio.Lock()

    async def task_at(self, address: str) -> str | None:
        async with self._lock:
            age = self._clock() - self._at
            if age >= self._max_age or (address not in self._known and age >= self._min_refresh):
                self._known = await self._lookup()
                self._at = self._clock()
            return self._known.get(address)


def _address(peer: object) -> str:
    """The caller's IP address as the engine lists it (an IPv4-mapped IPv6 address as IPv4)."""
    if not isinstance(peer, tuple) or not peer:
        return ""
    try:
        parsed = ipaddress.ip_address(str(peer[0]))
    except ValueError:
        return ""
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(parsed)


class MetricEndpoint:
    """Serves `POST /v1/metrics/NAME`; hands each valid value to `forward` (False: no room)."""

    def __init__(
        self,
        task_at: Callable[[str], Awaitable[str | None]],
        forward: Callable[[agent_pb.MetricPut], bool],
        rates: TaskRates | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._task_at = task_at
        self._forward = forward
        self._rates = rates or TaskRates()
        self._clock = clock
        self._open = 0
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen; returns the address and port bound."""
        self._server = await asyncio.start_server(self._connection, host, port, limit=MAX_HEAD)
        bound = self._server.sockets[0].getsockname()
        log.info("event=metric_endpoint_listening address=%s port=%d", bound[0], bound[1])
        return str(bound[0]), int(bound[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= MAX_CONNECTIONS:
            writer.close()
            return
        self._open += 1
        try:
            address = _address(writer.get_extra_info("peername"))
            try:
                status, message = await asyncio.wait_for(self.handle(reader, address), REQUEST_TIMEOUT)
            except TimeoutError:
                status, message = 408, f"send the whole request within {REQUEST_TIMEOUT:.0f} s"
            body = b"" if status == 204 else (message[:200] + "\n").encode("ascii", "replace")
            writer.write(
                f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\nConnection: close\r\n"
                f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n".encode("ascii")
                + body
            )
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)
        finally:
            self._open -= 1
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def handle(self, reader: asyncio.StreamReader, address: str) -> tuple[int, str]:
        """One request: (status, one-line message)."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request = parse_head(head)
            body = await reader.readexactly(request.content_length)
            name, value = parse_metric(request.path, body)
        except HttpError as error:
            return error.status, str(error)
        except asyncio.LimitOverrunError:
            return 431, f"the request head is longer than {MAX_HEAD} bytes"
        except asyncio.IncompleteReadError:
            return 400, "the request ended early"
        task_id = await self._task_at(address)
        if task_id is None:
            return 403, f"no running task of this node has address {address or '?'}"
        if not self._rates.allow(task_id, self._clock()):
            return 429, f"at most {RATE:.0f} values a second per task"
        if not self._forward(agent_pb.MetricPut(task_id=task_id, name=name, value=value)):
            return 503, "the agent cannot relay metrics now (not connected, or too many queued)"
        return 204, ""


def parse_listen(text: str) -> tuple[str, int]:
    """`--metrics-push-listen`: HOST:PORT, or bridge:PORT (the engine's bridge gateway)."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise InvalidArgument(f"{text!r} is not HOST:PORT or bridge:PORT")
    if host != BRIDGE:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise InvalidArgument(f"{text!r}: give an IP address (or bridge), not a name") from None
    return host, int(port)


class Engine(Protocol):
    async def task_addresses(self, node_id: str) -> dict[str, str]: ...

    async def bridge_gateway(self) -> str: ...


async def start_endpoint(
    listen: str, engine: Engine, node_id: str, forward: Callable[[agent_pb.MetricPut], bool]
) -> MetricEndpoint:
    """The endpoint, listening at `listen` (see parse_listen); raises OSError or BerthError."""
    host, port = parse_listen(listen)
    if host == BRIDGE:
        host = await engine.bridge_gateway()
    addresses = TaskAddresses(lambda: engine.task_addresses(node_id))
    endpoint = MetricEndpoint(addresses.task_at, forward)
    await endpoint.start(host, port)
    return endpoint
