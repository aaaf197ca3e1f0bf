"""An in-memory mirror of the store, fed by list + watch (an informer).

Every replica keeps one. Controllers and agent streams read from it and
wait on `changed()`; they are level-triggered, so if the watch breaks the
cache relists and anyone waiting simply recomputes from the fresh state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from google.protobuf.message import Message

from berth.errors import Unavailable
from berth.v1 import resources_pb2 as pb
from controlplane.store import Entry, StoreAPI, Versioned, decode, keys

log = logging.getLogger(__name__)

_TYPES: dict[str, type[Message]] = {
    keys.CLUSTERS: pb.Cluster,
    keys.TASKDEFS: pb.TaskDefinition,
    keys.SERVICES: pb.Service,
    keys.EVENTS: pb.ServiceEvents,
    keys.TASKS: pb.Task,
    keys.NODES: pb.Node,
    keys.IDENTITIES: pb.NodeIdentity,
    keys.USERS: pb.User,
    keys.SECRETS: pb.Secret,
    keys.ACCESS_KEYS: pb.AccessKey,
}


def _kind(key: str) -> str:
    head, sep, _ = key.partition("/")
    return head + sep


class ClusterCache:
    """Decoded objects by kind and key, plus indexes of tasks by node and service."""

    def __init__(self, store: StoreAPI, relist_pause: float = 1.0) -> None:
        self._store = store
        self._relist_pause = relist_pause  # seconds between a broken watch and the relist
        self.revision = 0
        self._objects: dict[str, dict[str, Versioned[Any]]] = defaultdict(dict)
        self._raw: dict[str, Entry] = {}
        self._tasks_by_node: dict[str, set[str]] = defaultdict(set)
        self._tasks_by_service: dict[tuple[str, str], set[str]] = defaultdict(set)
        # Unplaced, not stopped: what the scheduler has to look at.
        self._unplaced: set[str] = set()
        # Bumped whenever a task of a node (key: node id) or of a service (key:
        # "cluster/service") changes, so controllers can skip what did not.
        self._task_versions: Counter[str] = Counter()
        self._changed = asyncio.Event()
        self._node_subscribers: dict[str, list[Callable[[], None]]] = defaultdict(list)
        self._runner: asyncio.Task[None] | None = None
        self._relists = 0
        self._nodes_version = 0

    # -- lifecycle -------------------------------------------------------

    async def start(self) -> None:
        await self._relist()
        self._runner = asyncio.create_task(self._run(), name="cache-watch")

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner

    async def _relist(self) -> None:
        items, revision = await self._store.scan_raw("")
        self._objects.clear()
        self._raw.clear()
        self._tasks_by_node.clear()
        self._tasks_by_service.clear()
        self._unplaced.clear()
        self._task_versions.clear()
        self._relists += 1
        for item in items:
            self._apply(item)
        self.revision = revision
        self._notify()
        self._notify_all_nodes()

    async def _run(self) -> None:
        while True:
            try:
                async for events in self._store.watch("", self.revision + 1):
                    for event in events:
                        self._apply(event)
                        self.revision = max(self.revision, event.mod_revision)
                    self._notify()
                raise Unavailable("watch ended")
            except Unavailable as error:
                log.warning("event=cache_watch_broken error=%r action=relist", str(error))
            while True:
                await asyncio.sleep(self._relist_pause)
                try:
                    await self._relist()
                    break
                except Unavailable as error:
                    log.warning("event=cache_relist_failed error=%r", str(error))

    # -- change notification --------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _notify_node(self, node_id: str) -> None:
        for callback in self._node_subscribers.get(node_id, ()):
            callback()

    def _notify_all_nodes(self) -> None:
        for callbacks in self._node_subscribers.values():
            for callback in callbacks:
                callback()

    def subscribe_node(self, node_id: str, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` whenever a task on the node changes (or on a relist); returns unsubscribe."""
        self._node_subscribers[node_id].append(callback)

        def unsubscribe() -> None:
            subscribers = self._node_subscribers.get(node_id, [])
            if callback in subscribers:
                subscribers.remove(callback)
            if not subscribers:
                self._node_subscribers.pop(node_id, None)

        return unsubscribe

    def changed(self) -> asyncio.Event:
        """An event that is set at the next change after this call."""
        return self._changed

    async def wait_for_revision(self, revision: int, timeout: float = 5.0) -> None:
        """Wait until the cache has seen the store at `revision` (read your own writes)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self.revision < revision:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    # -- applying events -------------------------------------------------

    def _apply(self, event: Entry) -> None:
        kind = _kind(event.key)
        message_type = _TYPES.get(kind)
        if message_type is None:
            if event.value is None:
                self._raw.pop(event.key, None)
            else:
                self._raw[event.key] = event
            return
        if kind == keys.TASKS:
            self._unindex_task(event.key)
        elif kind == keys.IDENTITIES:
            # The node's stream re-checks its certificate (revoked or renewed).
            self._notify_node(event.key.removeprefix(keys.IDENTITIES))
        elif kind in (keys.TASKDEFS, keys.SERVICES, keys.NODES, keys.SECRETS):
            # Task definitions (and the secrets they name) are in every
            # assignment; services and nodes shape the route table every agent gets.
            if kind == keys.NODES:
                self._nodes_version += 1
            self._notify_all_nodes()
        # A value that does not decode is treated as absent (and logged), so
        # one bad key never stops the watch every controller depends on.
        value = None if event.value is None else decode(message_type, event.key, event.value)
        if value is None:
            self._objects[kind].pop(event.key, None)
            return
        self._objects[kind][event.key] = Versioned(event.key, value, event.mod_revision)
        if isinstance(value, pb.Task):
            self._index_task(value)

    def _routes_touched(self, task: pb.Task) -> None:
        if task.service:
            service = self._objects[keys.SERVICES].get(keys.service(task.cluster, task.service))
            if service is not None and service.value.ports:
                self._notify_all_nodes()  # an endpoint may have come or gone

    def _index_task(self, task: pb.Task) -> None:
        self._routes_touched(task)
        self._notify_node(task.node_id)
        self._task_versions[task.node_id] += 1
        self._task_versions[f"{task.cluster}/{task.service}"] += 1
        if task.node_id:
            self._tasks_by_node[task.node_id].add(task.id)
        elif task.last_status != pb.STOPPED:
            self._unplaced.add(task.id)
        if task.service:
            self._tasks_by_service[(task.cluster, task.service)].add(task.id)

    def _unindex_task(self, key: str) -> None:
        old = self._objects[keys.TASKS].get(key)
        if old is None:
            return
        task: pb.Task = old.value
        self._routes_touched(task)
        self._notify_node(task.node_id)
        self._task_versions[task.node_id] += 1
        self._task_versions[f"{task.cluster}/{task.service}"] += 1
        self._unplaced.discard(task.id)
        self._tasks_by_node[task.node_id].discard(task.id)
        self._tasks_by_service[(task.cluster, task.service)].discard(task.id)

    # -- typed reads -----------------------------------------------------

    def raw(self, key: str) -> Entry | None:
        return self._raw.get(key)

    def clusters(self) -> list[Versioned[pb.Cluster]]:
        return list(self._objects[keys.CLUSTERS].values())

    def cluster(self, name: str) -> Versioned[pb.Cluster] | None:
        return self._objects[keys.CLUSTERS].get(keys.cluster(name))

    def taskdef(self, family: str, revision: int) -> Versioned[pb.TaskDefinition] | None:
        return self._objects[keys.TASKDEFS].get(keys.taskdef(family, revision))

    def services(self) -> list[Versioned[pb.Service]]:
        return list(self._objects[keys.SERVICES].values())

    def service(self, cluster: str, name: str) -> Versioned[pb.Service] | None:
        return self._objects[keys.SERVICES].get(keys.service(cluster, name))

    def service_events(self, cluster: str, name: str) -> Versioned[pb.ServiceEvents] | None:
        return self._objects[keys.EVENTS].get(keys.events(cluster, name))

    def tasks(self) -> Iterable[Versioned[pb.Task]]:
        return self._objects[keys.TASKS].values()

    def task(self, task_id: str) -> Versioned[pb.Task] | None:
        return self._objects[keys.TASKS].get(keys.task(task_id))

    def unplaced_tasks(self) -> list[Versioned[pb.Task]]:
        found = (self.task(task_id) for task_id in self._unplaced)
        return [t for t in found if t is not None]

    def node_tasks_version(self, node_id: str) -> tuple[int, int]:
        """Changes whenever any task on the node changes (or the cache relists)."""
        return (self._relists, self._task_versions[node_id])

    def nodes_version(self) -> tuple[int, int]:
        """Changes whenever any node record changes (or the cache relists)."""
        return (self._relists, self._nodes_version)

    def service_tasks_version(self, cluster: str, service: str) -> tuple[int, int]:
        return (self._relists, self._task_versions[f"{cluster}/{service}"])

    def tasks_on_node(self, node_id: str) -> list[Versioned[pb.Task]]:
        found = (self.task(task_id) for task_id in self._tasks_by_node.get(node_id, ()))
        return [t for t in found if t is not None]

    def tasks_of_service(self, cluster: str, service: str) -> list[Versioned[pb.Task]]:
        found = (self.task(task_id) for task_id in self._tasks_by_service.get((cluster, service), ()))
        return [t for t in found if t is not None]

    def nodes(self) -> list[Versioned[pb.Node]]:
        return list(self._objects[keys.NODES].values())

    def node(self, node_id: str) -> Versioned[pb.Node] | None:
        return self._objects[keys.NODES].get(keys.node(node_id))

    def user(self, name: str) -> Versioned[pb.User] | None:
        return self._objects[keys.USERS].get(keys.user(name))

    def secret(self, name: str) -> Versioned[pb.Secret] | None:
        return self._objects[keys.SECRETS].get(keys.secret(name))

    def access_key(self, key_id: str) -> Versioned[pb.AccessKey] | None:
        """Kept here so that checking a request's signature reads no etcd."""
        return self._objects[keys.ACCESS_KEYS].get(keys.access_key(key_id))

    def node_identity(self, node_id: str) -> Versioned[pb.NodeIdentity] | None:
        return self._objects[keys.IDENTITIES].get(keys.identity(node_id))
