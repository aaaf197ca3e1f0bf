"""Timestamps for protobuf messages."""

from __future__ import annotations

import time

from google.protobuf.timestamp_pb2 import Timestamp


def now() -> Timestamp:
    # Straight from time_ns: Timestamp.GetCurrentTime goes through datetime,
    # which shows up in profiles when thousands of tasks are created at once.
    seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
    return Timestamp(seconds=seconds, nanos=nanos)
