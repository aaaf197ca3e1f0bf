"""`ListTasks` a page at a time: the order, the page token (hostile ones included), page-size
bounds, the filters and paging over a set of tasks that changes between pages, on the
operation over the MemoryStore and its cache; and the client's following of pages."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from typing import Any

import pytest

from berth.errors import BerthError, InvalidArgument, NotFound
from berth.tasklist import all_tasks, pages
from berth.v1 import operator_pb2 as api
from berth.v1 import resources_pb2 as pb
from controlplane.cache import ClusterCache
from controlplane.operations.clusters import Clusters, ensure_default_cluster
from controlplane.operations.taskdefs import TaskDefinitions
from controlplane.operations.tasks import PAGE_SLICE, Tasks
from controlplane.store import Delete, Put, keys
from controlplane.store.memory import MemoryStore
from controlplane.task_pages import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    PageBuilder,
    TaskQuery,
    decode_token,
    encode_token,
    page_size,
    position,
)
from tests.unit.conftest import caught_up


def _task(
    number: int,
    *,
    cluster: str = "default",
    service: str = "",
    node: str = "",
    taskdef: str = "web:1",
    desired: pb.DesiredStatus.ValueType = pb.DESIRED_RUNNING,
    last: pb.TaskStatus.ValueType = pb.RUNNING,
    created: int | None = None,
) -> pb.Task:
    """Task `number`: its id is the number in 32 hex digits, created at second `created`
    (default: its number), so the expected order is easy to write down."""
    task = pb.Task(
        id=f"{number:032x}",
        cluster=cluster,
        service=service,
        node_id=node,
        task_definition=taskdef,
        desired_status=desired,
        last_status=last,
    )
    task.created_at.seconds = 1_700_000_000 + (number if created is None else created)
    return task


async def _tasks(store: MemoryStore, cache: ClusterCache) -> Tasks:
    await ensure_default_cluster(store)
    clusters = Clusters(store, cache)
    tasks = Tasks(store, cache, clusters, TaskDefinitions(store))
    await caught_up(cache, store)
    return tasks


async def _store(store: MemoryStore, cache: ClusterCache, *tasks: pb.Task) -> None:
    revision = await store.commit([Put(keys.task(t.id), t) for t in tasks])
    assert revision is not None
    await caught_up(cache, store)


async def _every_page(tasks: Tasks, size: int, **filters: Any) -> list[list[str]]:
    """The ids of each page of a listing, following its tokens."""
    found: list[list[str]] = []
    token = ""
    for _ in range(1000):  # bounded: a listing that never ends fails below
        page = await tasks.page("default", size=size, token=token, **filters)
        found.append([t.id for t in page.tasks])
        token = page.next_token
        if not token:
            return found
    pytest.fail("the listing did not end")


# -- the pure parts -------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "served"),
    [(0, DEFAULT_PAGE_SIZE), (1, 1), (250, 250), (MAX_PAGE_SIZE, MAX_PAGE_SIZE), (10**9, MAX_PAGE_SIZE)],
)
def test_a_page_size_of_0_is_the_default_and_one_above_the_maximum_is_the_maximum(
    requested: int, served: int
) -> None:
    assert page_size(requested) == served


@pytest.mark.parametrize(
    ("query", "task", "matches"),
    [
        (TaskQuery("default"), _task(1), True),
        (TaskQuery("default"), _task(1, cluster="other"), False),
        (TaskQuery("default"), _task(1, last=pb.STOPPED), False),
        (TaskQuery("default", include_stopped=True), _task(1, last=pb.STOPPED), True),
        (TaskQuery("default", service="web"), _task(1, service="web"), True),
        (TaskQuery("default", service="web"), _task(1, service="webs"), False),
        (TaskQuery("default", node_id="n1"), _task(1, node="n1"), True),
        (TaskQuery("default", node_id="n1"), _task(1, node="n10"), False),
        (TaskQuery("default", family="web"), _task(1, taskdef="web:7"), True),
        (TaskQuery("default", family="web"), _task(1, taskdef="web-2:7"), False),
        (TaskQuery("default", family="web", revision=7), _task(1, taskdef="web:7"), True),
        (TaskQuery("default", family="web", revision=7), _task(1, taskdef="web:70"), False),
        (TaskQuery("default", desired_status=pb.DESIRED_STOPPED), _task(1), False),
        (TaskQuery("default", desired_status=pb.DESIRED_STOPPED), _task(1, desired=pb.DESIRED_STOPPED), True),
        (TaskQuery("default", last_status=pb.PENDING), _task(1, last=pb.PENDING), True),
        (TaskQuery("default", last_status=pb.PENDING), _task(1), False),
        # A last status asked for is shown, STOPPED too, whatever include_stopped says.
        (TaskQuery("default", last_status=pb.STOPPED), _task(1, last=pb.STOPPED), True),
    ],
)
def test_a_query_matches_tasks_by_full_values_only(query: TaskQuery, task: pb.Task, matches: bool) -> None:
    assert query.matches(task) is matches


def test_a_token_names_the_position_it_was_made_for_and_only_for_its_own_listing() -> None:
    query = TaskQuery("default", service="web")
    at = position(_task(5))
    token = encode_token(query, at)
    assert decode_token(query, token) == at
    assert decode_token(query, "") is None
    assert all(c.isalnum() or c in "-_" for c in token), "safe to paste in a shell"
    for other in (
        TaskQuery("default"),
        TaskQuery("staging", service="web"),
        TaskQuery("default", "web", "n1"),
    ):
        with pytest.raises(InvalidArgument, match="belongs to another listing"):
            decode_token(other, token)


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    "token",
    [
        "x",
        "not a token",
        "====",
        "A" * 257,
        "é" * 8,
        "\x00\n",
        _b64("hello"),
        _b64("1.1.1.abc"),  # no digest
        _b64("2.1.1.abc.0123456789abcdef"),  # an unknown version
        _b64("1.-1.1.abc.0123456789abcdef"),
        _b64("1.1.1234567890.abc.0123456789abcdef"),  # nanos of 10 digits
        _b64("1.1.1.abc/def.0123456789abcdef"),
        _b64("1.1.1." + "a" * 65 + ".0123456789abcdef"),
        _b64("1.1.1.abc.0123456789abcdef\n"),
        _b64("1.1.1.abc.0123456789ABCDEF"),
        _b64("1.1.1.abc.0123456789abcdef") + "!",
    ],
)
def test_a_hostile_token_is_refused_with_one_line(token: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        decode_token(TaskQuery("default"), token)
    assert "\n" not in str(refused.value) and "page_token" in str(refused.value)


def test_a_page_builder_given_slices_keeps_the_first_of_all_of_them() -> None:
    everything = [_task(n, created=n % 7) for n in range(1, 200)]  # equal created times: ids decide
    builder = PageBuilder(TaskQuery("default"), None, 10)
    for start in range(0, len(everything), 13):
        builder.add(everything[start : start + 13])
    page = builder.page()
    expected = sorted(everything, key=position)[:10]
    assert [t.id for t in page.tasks] == [t.id for t in expected]
    assert page.total == 199 and page.next_token


# -- the operation over the cache ---------------------------------------------------


async def test_pages_cover_every_task_once_in_created_order(store: MemoryStore, cache: ClusterCache) -> None:
    tasks = await _tasks(store, cache)
    # Created out of id order, several in the same second: the order is (created, id).
    made = [_task(n, created=(n * 37) % 50) for n in range(1, 251)]
    await _store(store, cache, *made)

    listed = await _every_page(tasks, 40)

    assert [len(p) for p in listed] == [40] * 6 + [10]
    flat = [task_id for p in listed for task_id in p]
    assert flat == [t.id for t in sorted(made, key=position)]
    first = await tasks.page("default", size=40)
    assert first.total == 250


async def test_no_page_size_is_the_default_page_and_a_huge_one_the_maximum(
    store: MemoryStore, cache: ClusterCache
) -> None:
    tasks = await _tasks(store, cache)
    await _store(store, cache, *(_task(n) for n in range(1, 1202)))
    default = await tasks.page("default")
    assert len(default.tasks) == DEFAULT_PAGE_SIZE and default.total == 1201 and default.next_token
    huge = await tasks.page("default", size=2**32 - 1)
    assert len(huge.tasks) == MAX_PAGE_SIZE and huge.next_token
    rest = await tasks.page("default", size=2**32 - 1, token=huge.next_token)
    assert len(rest.tasks) == 201 and not rest.next_token


async def test_paging_while_tasks_come_and_go_lists_each_lasting_task_exactly_once(
    store: MemoryStore, cache: ClusterCache
) -> None:
    tasks = await _tasks(store, cache)
    await _store(store, cache, *(_task(n) for n in range(1, 101)))
    lasting = {f"{n:032x}" for n in range(1, 101) if n % 3}  # every third one is removed
    seen: list[str] = []
    token = ""
    for round_ in range(1000):
        page = await tasks.page("default", size=7, token=token)
        seen += [t.id for t in page.tasks]
        token = page.next_token
        if not token:
            break
        # Between pages: a task ahead is removed, a task behind is removed, a new one
        # is created (later than every other), and one changes status.
        removals = [n for n in (3 * round_ + 3, 3 * round_ + 30) if n <= 100 and n % 3 == 0]
        created = _task(1000 + round_)
        lasting.add(created.id)
        changed = _task(3 * round_ + 1, last=pb.PENDING)  # never a removed one (those are 3n)
        writes: list[Any] = [Delete(keys.task(f"{n:032x}")) for n in removals]
        writes += [Put(keys.task(created.id), created), Put(keys.task(changed.id), changed)]
        assert await store.commit(writes) is not None
        await caught_up(cache, store)
    else:
        pytest.fail("the listing did not end")

    assert len(seen) == len(set(seen)), "no task is listed twice"
    assert lasting <= set(seen), "every task that lasted through the listing is listed"
    assert seen == sorted(seen, key=lambda i: position(_task(int(i, 16))))


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, [1, 2, 3, 4, 6]),
        ({"include_stopped": True}, [1, 2, 3, 4, 5, 6]),
        ({"service": "web"}, [1, 2]),
        ({"service": "web", "include_stopped": True}, [1, 2, 5]),
        ({"node": "n1"}, [1, 3]),
        ({"node": "n1", "service": "web"}, [1]),
        ({"family": "web"}, [1, 2, 3]),
        ({"family": "web:2"}, [2]),
        ({"family": "job"}, [4, 6]),
        ({"desired_status": pb.DESIRED_STOPPED}, [6]),
        ({"desired_status": pb.DESIRED_STOPPED, "include_stopped": True}, [5, 6]),
        ({"last_status": pb.PENDING}, [4]),
        ({"last_status": pb.STOPPED}, [5]),
        ({"last_status": pb.RUNNING, "node": "n2"}, [2, 6]),
    ],
)
async def test_filters_choose_the_tasks_and_count_them(
    store: MemoryStore, cache: ClusterCache, filters: dict[str, Any], expected: list[int]
) -> None:
    tasks = await _tasks(store, cache)
    await _store(
        store,
        cache,
        _task(1, service="web", node="n1", taskdef="web:1"),
        _task(2, service="web", node="n2", taskdef="web:2"),
        _task(3, node="n1", taskdef="web:1"),
        _task(4, taskdef="job:1", last=pb.PENDING),
        _task(5, service="web", node="n2", taskdef="old:1", desired=pb.DESIRED_STOPPED, last=pb.STOPPED),
        _task(6, node="n2", taskdef="job:3", desired=pb.DESIRED_STOPPED),
        _task(7, cluster="other", service="web", node="n1", taskdef="web:1"),
    )
    page = await tasks.page("default", size=2, **filters)
    listed = [task_id for p in await _every_page(tasks, 2, **filters) for task_id in p]
    assert listed == [f"{n:032x}" for n in expected]
    assert page.total == len(expected)


@pytest.mark.parametrize(
    ("filters", "error", "message"),
    [
        ({"cluster": "nosuch"}, NotFound, "cluster 'nosuch' does not exist"),
        ({"cluster": "Not_A_Name"}, InvalidArgument, "cluster"),
        ({"service": "nosuch"}, NotFound, "service 'nosuch' does not exist in cluster 'default'"),
        ({"service": "a" * 64}, InvalidArgument, "service"),
        ({"service": "web\n"}, InvalidArgument, "service"),
        ({"node": "nosuch"}, NotFound, "node nosuch does not exist"),
        ({"node": "n1;rm"}, InvalidArgument, "node id"),
        ({"family": "web:"}, InvalidArgument, "REVISION from 1"),
        ({"family": "web:x"}, InvalidArgument, "REVISION from 1"),
        ({"family": "w b"}, InvalidArgument, "family"),
        ({"desired_status": 9}, InvalidArgument, "desired_status 9 is unknown"),
        ({"last_status": -1}, InvalidArgument, "last_status -1 is unknown"),
        ({"token": "garbage!"}, InvalidArgument, "page_token"),
    ],
)
async def test_a_bad_filter_or_token_is_refused_with_one_line(
    store: MemoryStore, cache: ClusterCache, filters: dict[str, Any], error: type[Exception], message: str
) -> None:
    tasks = await _tasks(store, cache)
    await _store(store, cache, _task(1, service="web", node="n1"))
    cluster = filters.pop("cluster", "default")
    with pytest.raises(error, match=message) as refused:
        await tasks.page(cluster, **filters)
    assert "\n" not in str(refused.value)


async def test_a_token_of_one_listing_is_refused_by_a_listing_with_other_filters(
    store: MemoryStore, cache: ClusterCache
) -> None:
    tasks = await _tasks(store, cache)
    await _store(store, cache, *(_task(n, service="web") for n in range(1, 10)))
    token = (await tasks.page("default", service="web", size=2)).next_token
    assert (await tasks.page("default", service="web", size=5, token=token)).tasks, "page size may change"
    with pytest.raises(InvalidArgument, match="another listing"):
        await tasks.page("default", size=2, token=token)


async def test_a_removed_nodes_and_a_deleted_services_tasks_are_still_listed(
    store: MemoryStore, cache: ClusterCache
) -> None:
    tasks = await _tasks(store, cache)
    await _store(store, cache, _task(1, service="gone", node="old-node", last=pb.STOPPED))
    assert [t.id for t in (await tasks.page("default", node="old-node", include_stopped=True)).tasks]
    assert [t.id for t in (await tasks.page("default", service="gone", include_stopped=True)).tasks]


async def test_building_a_page_of_many_tasks_gives_the_event_loop_back(
    store: MemoryStore, cache: ClusterCache
) -> None:
    tasks = await _tasks(store, cache)
    await _store(store, cache, *(_task(n) for n in range(1, 3 * PAGE_SLICE + 1)))
    turns = 0

    async def other_work() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    worker = asyncio.create_task(other_work())
    await asyncio.sleep(0)
    turns = 0
    page = await tasks.page("default", size=MAX_PAGE_SIZE)
    worker.cancel()
    assert len(page.tasks) == MAX_PAGE_SIZE
    assert turns >= 2, "other work ran between the slices of the cache"


# -- the client following pages ------------------------------------------------------


class _PagingStub:
    """ListTasks over a fixed list, two tasks a page, with tokens "1", "2", ...; or stuck
    on one token (a broken server)."""

    def __init__(self, count: int, stuck: bool = False) -> None:
        self.tasks = [_task(n) for n in range(1, count + 1)]
        self.stuck = stuck
        self.requests: list[api.ListTasksRequest] = []

    def ListTasks(self, request: api.ListTasksRequest, timeout: float | None = None) -> api.ListTasksResponse:
        self.requests.append(request)
        start = int(request.page_token or "0") * 2
        more = start + 2 < len(self.tasks)
        token = "1" if self.stuck else str(start // 2 + 1)
        return api.ListTasksResponse(
            tasks=self.tasks[start : start + 2], next_page_token=token if more else ""
        )


def test_following_pages_gets_every_task_and_leaves_the_request_as_it_was() -> None:
    stub = _PagingStub(5)
    request = api.ListTasksRequest(cluster="default", service="web")
    found = all_tasks(stub, request)  # type: ignore[arg-type]
    assert [t.id for t in found] == [t.id for t in stub.tasks]
    assert [r.page_token for r in stub.requests] == ["", "1", "2"]
    assert all(r.service == "web" for r in stub.requests)
    assert request.page_token == ""


def test_following_pages_stops_when_the_server_repeats_a_token() -> None:
    listing: Iterator[api.ListTasksResponse] = pages(_PagingStub(9, stuck=True), api.ListTasksRequest())  # type: ignore[arg-type]
    with pytest.raises(BerthError, match="same page token twice"):
        list(listing)
