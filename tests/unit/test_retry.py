"""The one retry policy for optimistic transactions, and `update` built on it (on MemoryStore)."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar, cast

import pytest

from berth.errors import Conflict, NotFound
from berth.v1 import resources_pb2 as pb
from controlplane.store import RETRY, Put, keys, optimistic
from controlplane.store.memory import MemoryStore
from tests.unit.conftest import put

T = TypeVar("T")


class Script:
    """An attempt that returns (or raises) what it is given, one item per call."""

    def __init__(self, *outcomes: object) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    async def __call__(self) -> object:
        outcome = self.outcomes[min(self.calls, len(self.outcomes) - 1)]
        self.calls += 1
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


async def test_returns_the_first_result_that_is_not_retry() -> None:
    attempt = Script(RETRY, RETRY, "done", "never")
    assert await optimistic(attempt, what="x", attempts=5) == "done"
    assert attempt.calls == 3


async def test_none_is_a_result_not_a_retry() -> None:
    attempt = Script(None, "never")
    assert await optimistic(attempt, what="x") is None
    assert attempt.calls == 1


async def test_gives_up_with_conflict_naming_what_kept_changing() -> None:
    attempt = Script(RETRY)
    with pytest.raises(Conflict, match=r"services/default/web kept changing .*\(4 attempts\)"):
        await optimistic(attempt, what="services/default/web", attempts=4)
    assert attempt.calls == 4


async def test_errors_raised_by_an_attempt_pass_through_at_once() -> None:
    attempt = Script(RETRY, NotFound("gone"), "never")
    with pytest.raises(NotFound, match="gone"):
        await optimistic(attempt, what="x", attempts=10)
    assert attempt.calls == 2


def run_now(step: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (MemoryStore's writes) from synchronous code."""
    try:
        step.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    step.close()
    raise AssertionError("the coroutine suspended")


async def test_update_retries_a_lost_race_on_fresh_state(store: MemoryStore) -> None:
    key = keys.service("default", "web")
    await put(store, key, pb.Service(name="web", desired_count=1))
    mutations = 0

    def bump(service: pb.Service) -> pb.Service:
        nonlocal mutations
        mutations += 1
        if mutations == 1:  # another writer gets in between our read and our write, once
            assert run_now(store.commit([Put(key, pb.Service(name="web", desired_count=10))]))
        service.desired_count += 1
        return service

    updated = await store.update(key, pb.Service, bump)
    assert mutations == 2
    assert updated is not None and updated.desired_count == 11
    final = await store.get(key, pb.Service)
    assert final is not None and final.value.desired_count == 11


async def test_update_of_a_missing_key_is_none_and_a_no_change_writes_nothing(store: MemoryStore) -> None:
    assert await store.update(keys.cluster("none"), pb.Cluster, lambda c: c) is None
    revision = await put(store, keys.cluster("a"), pb.Cluster(name="a"))
    unchanged = await store.update(keys.cluster("a"), pb.Cluster, lambda c: None)
    assert unchanged is not None and unchanged.name == "a"
    assert store.revision == revision
