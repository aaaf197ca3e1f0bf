"""Several control-plane addresses in one setting: "HOST:PORT[,HOST:PORT...]".

Every control-plane replica serves the operator API and agent streams, so
agents and the CLI are given all of them and move to the next when one is
unreachable. This module parses and validates the list (the boundary: a
bad address is refused with a one-line error naming it) and says which
address comes after which; the agent's session and the CLI's client do the
moving.
"""

from __future__ import annotations

import ipaddress
import re

from berth.errors import InvalidArgument

_HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")

MAX_SERVERS = 16


def split_host_port(address: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 in brackets) as a pair; InvalidArgument otherwise."""
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise InvalidArgument(f"{address!r} is not HOST:PORT")
    if not _HOST_NAME.fullmatch(host):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise InvalidArgument(f"{address!r}: {host!r} is neither a host name nor an IP address") from None
    return host, int(port)


def parse_servers(text: str) -> list[str]:
    """The addresses of "A,B,C" in order, each checked as HOST:PORT, duplicates dropped."""
    addresses = [part.strip() for part in text.split(",")]
    if not text.strip() or any(not address for address in addresses):
        raise InvalidArgument(f"{text!r}: give HOST:PORT, or several separated by commas")
    for address in addresses:
        split_host_port(address)
    unique = list(dict.fromkeys(addresses))
    if len(unique) > MAX_SERVERS:
        raise InvalidArgument(f"{text!r}: at most {MAX_SERVERS} control-plane addresses")
    return unique


def next_server(servers: list[str], current: int) -> int:
    """The index of the address tried after `current` (round robin)."""
    return (current + 1) % len(servers)
