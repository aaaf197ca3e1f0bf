"""Docker's /events stream: a blocking reader, and the parsing of one container event (pure).

The docker SDK's own events() generator reads the chunked stream in a way
that can hold an event back until the next one arrives (seen here with
urllib3 2.x: a `docker kill` surfaced only at the following event). Exits
must be seen at once, so this reads the stream with http.client, whose
readline() returns as soon as a line is complete.
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from agent.runtime.driver import LABEL_NODE, LABEL_TASK_ID

# The actions that change what the agent sees of a container.
WATCHED_ACTIONS = frozenset({"start", "die", "destroy", "oom", "create", "health_status"})


@dataclass(frozen=True)
class ContainerEvent:
    action: str  # "die", "oom", "start"... (Docker's "exec_start: sh" reads "exec_start")
    container_id: str
    task_id: str = ""
    node_id: str = ""
    exit_code: int = -1  # only meaningful for "die"
    health: str = ""  # only for "health_status": "starting", "healthy" or "unhealthy"


def parse_event(raw: dict[str, Any]) -> ContainerEvent:
    """One decoded line of the stream, with the labels Berth put on the container."""
    attributes = raw.get("Actor", {}).get("Attributes", {})
    action, _, detail = raw.get("Action", "").partition(":")
    return ContainerEvent(
        action=action,
        container_id=raw.get("id", ""),
        task_id=attributes.get(LABEL_TASK_ID, ""),
        node_id=attributes.get(LABEL_NODE, ""),
        exit_code=int(attributes.get("exitCode", -1)),
        health=detail.strip() if action == "health_status" else "",
    )


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost")
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(self._path)
        self.sock = sock


def connect(base_url: str) -> http.client.HTTPConnection:
    """A connection to the engine at `unix:///path` or `tcp://host:port`."""
    if base_url.startswith("unix://"):
        return _UnixConnection(base_url[len("unix://") :])
    parsed = urllib.parse.urlparse(base_url.replace("tcp://", "http://", 1))
    return http.client.HTTPConnection(parsed.hostname or "localhost", parsed.port or 2375)


class EventSource(Protocol):
    """A blocking iterator of raw events; close() (from another thread) ends the iteration."""

    def __iter__(self) -> Iterator[dict[str, Any]]: ...

    def close(self) -> None: ...


class EventStream:
    """Iterates container events matching `filters` until closed (an EventSource)."""

    def __init__(self, base_url: str, filters: dict[str, list[str]]) -> None:
        self._connection = connect(base_url)
        query = urllib.parse.quote(json.dumps(filters))
        self._connection.request("GET", f"/events?filters={query}")
        self._response = self._connection.getresponse()
        if self._response.status != 200:
            raise OSError(f"docker events: HTTP {self._response.status}")

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            line = self._response.readline()
            if not line:
                return
            if line.strip():
                yield json.loads(line)

    def close(self) -> None:
        # Shutting the socket down wakes a reader blocked in readline().
        sock = self._connection.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._connection.close()
