"""Which etcd member the store asks, and when it leaves one (controlplane.store.failover)."""

from __future__ import annotations

import grpc
import pytest

from controlplane.store.failover import Rotation, fails_over


@pytest.mark.parametrize(
    ("code", "moves"),
    [
        (grpc.StatusCode.UNAVAILABLE, True),  # dead member, or one without a leader
        (grpc.StatusCode.DEADLINE_EXCEEDED, True),  # a member that hangs
        (grpc.StatusCode.INVALID_ARGUMENT, False),  # our request's fault: same everywhere
        (grpc.StatusCode.NOT_FOUND, False),
        (grpc.StatusCode.PERMISSION_DENIED, False),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, False),
        (None, False),
    ],
)
def test_only_a_members_failure_moves_a_call(code: grpc.StatusCode | None, moves: bool) -> None:
    assert fails_over(code) is moves


def test_a_call_tries_each_member_once_starting_with_the_current() -> None:
    rotation = Rotation(3)
    assert rotation.order() == [0, 1, 2]
    rotation.failed(0)
    assert rotation.order() == [1, 2, 0]


def test_concurrent_failures_of_one_member_skip_only_that_member() -> None:
    rotation = Rotation(3)
    rotation.failed(0)  # the first call to see member 0 fail moves on
    rotation.failed(0)  # a second, concurrent one does not skip member 1 too
    assert rotation.current == 1


def test_a_member_that_answered_becomes_current() -> None:
    rotation = Rotation(3)
    rotation.failed(0)
    rotation.failed(1)
    rotation.succeeded(2)
    assert rotation.order() == [2, 0, 1]


def test_one_endpoint_is_its_own_next() -> None:
    rotation = Rotation(1)
    rotation.failed(0)
    assert rotation.order() == [0]


def test_no_endpoint_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Rotation(0)
