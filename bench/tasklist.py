"""`berth task list` at scale: what one page of ListTasks costs the control plane.

Builds the operation the servicer calls (`Tasks.page`) over a MemoryStore and
the real cache holding N tasks (10 services, 1,000 nodes), then measures, in
one process:

  page             milliseconds to build one page (sizes 100 and 1,000; filters by
                   service, node and status), and to encode its response
  --all            control-plane time to answer every page at the largest size
  loop hold        the longest the event loop was held by one request (its page built
                   and encoded): a ticker task records the gaps between its turns, in
                   CPU time (what the listing costs) and wall time (what a busy machine
                   adds)
  gc               garbage collections, and the longest, while listing

Run: python bench/tasklist.py [--tasks 10000] [--repeat 10]
Small (CI) size: --tasks 2000 --repeat 2. In-process: no daemons, no network.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import platform
import statistics
import time
from typing import Any

import psutil

from berth.v1 import operator_pb2 as api
from berth.v1 import resources_pb2 as pb
from controlplane.cache import ClusterCache
from controlplane.operations.clusters import Clusters, ensure_default_cluster
from controlplane.operations.taskdefs import TaskDefinitions
from controlplane.operations.tasks import Tasks
from controlplane.store import Put, keys
from controlplane.store.memory import MemoryStore
from controlplane.task_pages import MAX_PAGE_SIZE


def _task(n: int) -> pb.Task:
    """A task as a RUNNING service task looks in the cache: one container, one binding."""
    task = pb.Task(
        id=f"{n:032x}",
        cluster="default",
        service=f"svc{n % 10}",
        node_id=f"node-{n % 1000}",
        task_definition=f"svc{n % 10}:1",
        desired_status=pb.DESIRED_RUNNING,
        last_status=pb.RUNNING if n % 50 else pb.PENDING,
        cpu=10,
        memory=16,
    )
    task.created_at.seconds = 1_700_000_000 + n // 7
    task.created_at.nanos = n * 13 % 10**9
    task.containers.add(name="web", docker_id=f"{n:064x}", last_status=pb.RUNNING)
    task.network_bindings.add(container_name="web", container_port=80, host_port=30000 + n % 1000)
    return task


class LoopWatch:
    """Gaps between turns of a task that only yields: how long anything else waited."""

    def __init__(self) -> None:
        self.worst_cpu = 0.0
        self.worst_wall = 0.0
        self._running = True
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LoopWatch:
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._running = False
        assert self._task is not None
        await self._task

    async def _tick(self) -> None:
        wall, cpu = time.perf_counter(), time.thread_time()
        while self._running:
            await asyncio.sleep(0)
            now_wall, now_cpu = time.perf_counter(), time.thread_time()
            self.worst_cpu = max(self.worst_cpu, now_cpu - cpu)
            self.worst_wall = max(self.worst_wall, now_wall - wall)
            wall, cpu = now_wall, now_cpu


class GcWatch:
    def __init__(self) -> None:
        self.count = 0
        self.worst = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.count += 1
            self.worst = max(self.worst, time.perf_counter() - self._started)


def _ms(seconds: float) -> str:
    return f"{1000 * seconds:.1f} ms"


async def run(count: int, repeat: int) -> None:
    store = MemoryStore()
    cache = ClusterCache(store, relist_pause=0)
    await cache.start()
    try:
        await ensure_default_cluster(store)
        tasks = Tasks(store, cache, Clusters(store, cache), TaskDefinitions(store))
        await store.commit([Put(keys.task(t.id), t) for t in map(_task, range(count))])
        await cache.wait_for_revision(store.revision, timeout=60)
        gc.collect()
        gc_watch = GcWatch()
        gc.callbacks.append(gc_watch)
        cases: list[tuple[str, dict[str, Any]]] = [
            ("page of 100", {"size": 100}),
            (f"page of {MAX_PAGE_SIZE}", {"size": MAX_PAGE_SIZE}),
            ("page of 100, one service", {"size": 100, "service": "svc3"}),
            ("page of 100, one node", {"size": 100, "node": "node-7"}),
            ("page of 100, PENDING only", {"size": 100, "last_status": pb.PENDING}),
        ]
        async with LoopWatch() as loop:
            for name, arguments in cases:
                took, encode, size = [], [], 0
                for _ in range(repeat):
                    started = time.perf_counter()
                    page = await tasks.page("default", **arguments)
                    built = time.perf_counter()
                    response = api.ListTasksResponse(
                        tasks=page.tasks, next_page_token=page.next_token, total=page.total
                    )
                    size = len(response.SerializeToString())
                    encode.append(time.perf_counter() - built)
                    took.append(built - started)
                    await asyncio.sleep(0)  # as between two requests to the server
                print(
                    f"{name} of {count} tasks: build median {_ms(statistics.median(took))} "
                    f"(min {_ms(min(took))}), encode {_ms(statistics.median(encode))}, {size} bytes"
                )
            started, pages, token = time.perf_counter(), 0, ""
            while True:
                page = await tasks.page("default", size=MAX_PAGE_SIZE, token=token)
                pages, token = pages + 1, page.next_token
                await asyncio.sleep(0)
                if not token:
                    break
            print(f"--all: {pages} pages of up to {MAX_PAGE_SIZE} in {_ms(time.perf_counter() - started)}")
        gc.callbacks.remove(gc_watch)
        print(
            f"loop hold: longest {_ms(loop.worst_cpu)} CPU ({_ms(loop.worst_wall)} wall); "
            f"gc: {gc_watch.count} collections, longest {_ms(gc_watch.worst)}"
        )
    finally:
        await cache.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=10)
    options = parser.parse_args()
    if not 1 <= options.tasks <= 100_000 or not 1 <= options.repeat <= 100:
        parser.error("--tasks 1-100000, --repeat 1-100")
    print(
        f"machine: {platform.processor() or platform.machine()}, {psutil.cpu_count()} CPUs, "
        f"Python {platform.python_version()}"
    )
    asyncio.run(run(options.tasks, options.repeat))


if __name__ == "__main__":
    main()
