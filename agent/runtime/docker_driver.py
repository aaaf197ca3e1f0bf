"""The Docker engine driver: the I/O around a pure container spec and a pure list/event merge.

What to create comes from `docker_spec`; what to believe about a container
comes from `docker_state` (Docker's list lags its events). This module only
talks to the engine, through the `docker` SDK and Docker's event stream.

Threads: the SDK blocks, so every engine call runs in a worker thread, at
most `concurrency` at a time, never on the event loop; the event stream is
read by one more thread ("docker-events"), started with the first change
feed. Neither ever touches the driver's state: the ledger of deaths and
starts, and the per-node feeds, are read and written only on the event loop
thread, to which the event thread and start calls hand their facts with
`call_soon_threadsafe` (in order, so a death is recorded before the feed
that wakes the supervisor is fed). A container's output is read by one
thread per reader ("docker-logs"), outside the semaphore (a follower may
read for hours and must not hold up engine calls); it hands whole lines to
the loop through a small queue and waits while the queue is full, so a
slow reader slows the read instead of growing a buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors

from agent import envfiles, ordering
from agent.runtime import docker_lifecycle, docker_state
from agent.runtime.docker_events import (
    WATCHED_ACTIONS,
    ContainerEvent,
    EventSource,
    EventStream,
    parse_event,
)
from agent.runtime.docker_exec import DockerExec
from agent.runtime.docker_spec import DEFAULT_PIDS_LIMIT, ContainerSpec, container_specs
from agent.runtime.docker_state import ContainerLedger, ListedContainer
from agent.runtime.docker_volumes import (
    EngineError,
    VolumeSpec,
    creation_order,
    ensure_volumes,
    remove_task_volumes,
    sweep_task_volumes,
    volume_specs,
)
from agent.runtime.driver import (
    DEFAULT_STOP_TIMEOUT,
    LABEL_MANAGED,
    LABEL_NODE,
    LABEL_TASK_ID,
    ChangeFeeds,
    ContainerPhase,
    ExecSpec,
    LogQuery,
    ObservedContainer,
    ObservedTask,
    StartFailed,
)
from agent.runtime.host_path_links import check_no_links
from berth.errors import Unavailable
from berth.loglines import LineSplitter
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb

log = logging.getLogger(__name__)

T = TypeVar("T")

# What the engine says when a container's log driver cannot be read back (Docker 20.10 reads
# every driver through its "dual logging" cache unless that is disabled).
UNREADABLE_DRIVER = "does not support reading"
# Batches of lines a container's reader thread may run ahead of its consumer.
LOG_BATCHES = 8
# Seconds between sweeps of task volumes left behind (agent.runtime.docker_volumes).
VOLUME_SWEEP_INTERVAL = 60.0
# Seconds between two looks at a starting task's dependencies (dependsOn).
DEPENDENCY_POLL = 0.5

# Opens Docker's event stream: (base URL, filters) -> a blocking source of raw events.
OpenEvents = Callable[[str, dict[str, list[str]]], EventSource]


class _RestartRefused(Exception):
    """The engine refused to start an exited container again (not a DockerException, so that
    `DockerDriver._call` passes it through unchanged)."""


def unreadable_reason(error: docker.errors.APIError) -> str:
    """One line for an engine that refuses to read a container's output back."""
    if UNREADABLE_DRIVER in str(error.explanation or error):
        return (
            "this container's log driver keeps no copy the engine can read back (the engine's "
            "dual-logging cache is off for it): its output went only to the driver's destination"
        )
    return f"docker: {error}"


class DockerDriver:
    def __init__(
        self,
        base_url: str,
        concurrency: int = 8,
        dns_servers: list[str] | None = None,
        client: docker.DockerClient | None = None,
        open_events: OpenEvents = EventStream,
        pids_limit: int = DEFAULT_PIDS_LIMIT,
        environment_files_dir: Path | None = None,
        aws_region: str = "",
    ) -> None:
        """client and open_events default to the real engine at base_url (tests pass fakes).

        pids_limit: processes per container (0 or less: the engine's default).
        environment_files_dir: where tasks' environmentFiles are read (None: nowhere, such a
        task fails to start).
        aws_region: the node's AWS region, for EFS volumes ("": none; such a task fails to start).
        """
        self._environment_files_dir = environment_files_dir
        self._base_url = base_url
        # The host's Berth DNS, so containers resolve SERVICE.CLUSTER.berth.
        self._dns_servers = tuple(dns_servers or ())
        self._pids_limit = pids_limit
        self._aws_region = aws_region
        self._client = client if client is not None else docker.DockerClient(base_url=base_url)
        self._open_events = open_events
        self._semaphore = asyncio.Semaphore(concurrency)
        # Event loop thread only (see the module docstring).
        self._ledger = ContainerLedger()
        self._feeds = ChangeFeeds()
        # Nodes this driver lists, starts or watches for; on an engine shared
        # with other agents, their containers' events are not ours to keep.
        self._nodes: set[str] = set()
        self._events_thread: threading.Thread | None = None
        # Shared with the event thread: set once to stop it, and the stream to close to wake it.
        self._closed = threading.Event()
        self._events_stream: EventSource | None = None
        # Images seen present; forgotten when a create fails (it may have been removed).
        # Touched by worker threads only, one set operation at a time; a stale
        # entry costs one failed create, then a pull.
        self._present_images: set[str] = set()
        # Tasks whose start is in flight (their volumes may exist before their containers):
        # added and discarded on the loop, read by the sweep's worker thread (one set operation
        # at a time, atomic under the GIL). The sweep removes a volume, and a start makes its
        # volumes, holding _volumes_guard (worker threads only; the loop never waits on it), so
        # a start that begins while a volume of its task is removed remakes it afterwards.
        self._starting: set[str] = set()
        self._volumes_guard = threading.Lock()
        # When each node's task volumes left behind are next looked for. Event loop thread only.
        self._next_volume_sweep: dict[str, float] = {}

    async def _call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        async with self._semaphore:
            try:
                return await asyncio.to_thread(function, *args, **kwargs)
            except docker.errors.DockerException as error:
                raise Unavailable(f"docker: {error}") from error

    # -- observing -------------------------------------------------------

    def _list_blocking(self, node_id: str) -> list[ListedContainer]:
        summaries = self._client.api.containers(
            all=True, filters={"label": [f"{LABEL_MANAGED}=true", f"{LABEL_NODE}={node_id}"]}
        )
        return [listed for s in summaries if (listed := docker_state.from_summary(s)) is not None]

    def _inspect_states_blocking(self, container_ids: list[str]) -> dict[str, dict[str, Any]]:
        states = {}
        for container_id in container_ids:
            try:
                states[container_id] = self._client.api.inspect_container(container_id)["State"]
            except docker.errors.NotFound:
                states[container_id] = {}  # removed meanwhile: exit unknown
        return states

    async def list_tasks(self, node_id: str) -> dict[str, ObservedTask]:
        self._nodes.add(node_id)
        listed_since = self._ledger.mark()
        listed = await self._call(self._list_blocking, node_id)
        observed = {c.id: self._ledger.observe(c) for c in listed}
        unknown = [c.id for c in listed if observed[c.id] is None]
        if unknown:
            states = await self._call(self._inspect_states_blocking, unknown)
            for c in listed:
                if c.id in states:
                    observed[c.id] = self._ledger.inspected(c, states[c.id])
        # An unhealthy container's last check says why: inspected once per unhealthy spell.
        sick = [
            c.id for c in listed if (o := observed[c.id]) is not None and self._ledger.lacks_health_output(o)
        ]
        if sick:
            for container_id, state in (await self._call(self._inspect_states_blocking, sick)).items():
                self._ledger.inspected_health(container_id, state)
        # An exit seen by its event only: its run time (restartPolicy) is inspected once.
        untimed = {c.id for c in listed if (o := observed[c.id]) is not None and self._ledger.lacks_times(o)}
        if untimed:
            for container_id, state in (
                await self._call(self._inspect_states_blocking, list(untimed))
            ).items():
                self._ledger.inspected_times(container_id, state)
            observed.update({c.id: self._ledger.observe(c) for c in listed if c.id in untimed})
        self._ledger.forget_missing(node_id, {c.id for c in listed}, listed_since)
        due = self._next_volume_sweep.setdefault(node_id, time.monotonic() + VOLUME_SWEEP_INTERVAL)
        if time.monotonic() >= due:
            self._next_volume_sweep[node_id] = time.monotonic() + VOLUME_SWEEP_INTERVAL
            await self._sweep_volumes(node_id, {c.task_id for c in listed})
        return docker_state.by_task(
            (c.task_id, self._ledger.with_lifecycle(self._ledger.with_health_output(container)))
            for c in listed
            if (container := observed[c.id])
        )

    async def _sweep_volumes(self, node_id: str, live: set[str]) -> None:
        """Remove task volumes left behind; whatever goes wrong, the node's listing stands
        and the next sweep tries again."""
        try:
            await self._call(
                sweep_task_volumes,
                self._client,
                node_id,
                live,
                time.time(),
                self._starting.__contains__,
                self._volumes_guard,
            )
        except Exception as error:
            log.warning("event=volume_sweep_failed node=%s error=%r", node_id, str(error))

    # -- starting --------------------------------------------------------

    def _ensure_image(self, image: str) -> None:
        if image in self._present_images:
            return
        try:
            self._client.images.get(image)
            self._present_images.add(image)
            return
        except docker.errors.ImageNotFound:
            pass
        log.info("event=image_pull image=%s", image)
        try:
            self._client.images.pull(image)
        except docker.errors.DockerException as error:
            raise StartFailed(f"CannotPullContainerError: {image}: {error}") from error

    def _create_blocking(
        self, td: pb.TaskDefinition, task_id: str, specs: list[ContainerSpec], volumes: list[VolumeSpec]
    ) -> list[Any]:
        """Pull what is missing, make the task's volumes and create every container (none
        started), in `specs`' order; on failure (a refusal, or an engine that timed out or
        hung up) nothing of the task is left and StartFailed says why."""
        check_no_links(td)  # before anything of the task exists on the node
        created: dict[str, Any] = {}  # Docker's container name -> container
        try:
            try:
                for spec in specs:
                    self._ensure_image(spec.image)
                with self._volumes_guard:
                    ensure_volumes(self._client, volumes)
                # A container that takes another's volumes (volumesFrom) is created after it.
                for spec in creation_order(specs):
                    created[spec.name] = self._create(spec)
            except EngineError as error:
                raise StartFailed(f"CannotCreateContainerError: docker: {error}") from error
        except StartFailed:
            self._discard_blocking(task_id, list(created.values()), bool(volumes))
            raise
        return [created[spec.name] for spec in specs]

    def _discard_blocking(self, task_id: str, containers: list[Any], volumes: bool) -> None:
        """Remove a failed start's containers, and its task volumes when it has any."""
        for container in containers:
            with contextlib.suppress(*EngineError):
                container.remove(force=True)
        if volumes:
            remove_task_volumes(self._client, task_id)

    def _start_one_blocking(
        self, container: Any, spec: ContainerSpec, on_started: Callable[[ObservedContainer], None]
    ) -> None:
        try:
            container.start()
            container.reload()  # inspect: authoritative, unlike the list
        except docker.errors.APIError as error:
            raise StartFailed(f"CannotStartContainerError: {error.explanation or error}") from error
        except EngineError as error:  # a timeout or a broken connection: the start is not known
            raise StartFailed(f"CannotStartContainerError: docker: {error}") from error
        _, observed = docker_lifecycle.after_start(
            container.id, container.attrs, spec.labels, spec.healthcheck is not None
        )
        on_started(observed)

    def _create(self, spec: ContainerSpec) -> Any:
        try:
            return self._client.containers.create(spec.image, **spec.create_kwargs())
        except docker.errors.APIError as error:
            self._present_images.discard(spec.image)
            raise StartFailed(f"CannotCreateContainerError: {error.explanation or error}") from error

    async def start_task(self, assignment: agent_pb.TaskAssignment, node_id: str) -> None:
        self._nodes.add(node_id)
        loop = asyncio.get_running_loop()

        def started(container: ObservedContainer) -> None:
            # Called in the worker thread right after each start; recorded on the loop.
            loop.call_soon_threadsafe(self._ledger.started, node_id, container)

        file_environment = (
            await self._call(envfiles.task_files, self._environment_files_dir, assignment)
            if envfiles.needs_reading(assignment.task_definition)
            else {}
        )
        specs = container_specs(
            assignment, node_id, self._dns_servers, self._pids_limit, file_environment=file_environment
        )
        volumes = volume_specs(assignment, node_id, self._aws_region)
        # Every engine call of this start, run to its end even if the start is cancelled (its
        # thread would anyway), so that the clean-up comes after them, not beside them.
        calls: list[asyncio.Future[Any]] = []

        async def engine(function: Callable[..., T], *args: Any) -> T:
            call = asyncio.ensure_future(self._call(function, *args))
            calls.append(call)
            return await asyncio.shield(call)

        # While it starts, the task's volumes are not swept (its containers may not exist yet).
        self._starting.add(assignment.task_id)
        try:
            created = await engine(
                self._create_blocking, assignment.task_definition, assignment.task_id, specs, volumes
            )
            await self._start_when_ready(assignment, specs, created, started, engine)
        except BaseException:
            # Failed or cancelled (the task was stopped meanwhile): leave nothing behind.
            await asyncio.shield(self._clean_up(assignment.task_id, calls, bool(volumes)))
            raise
        finally:
            self._starting.discard(assignment.task_id)

    async def _clean_up(self, task_id: str, calls: list[asyncio.Future[Any]], volumes: bool) -> None:
        """After a failed or cancelled start: once its engine calls ended, remove what it made."""
        await asyncio.gather(*calls, return_exceptions=True)
        if not calls:
            return  # cancelled before anything was made
        creating = calls[0]  # the create, always the first call
        failure = None if creating.cancelled() else creating.exception()
        if isinstance(failure, StartFailed):
            return  # the create removed what it had made
        created: list[Any] = creating.result() if not creating.cancelled() and failure is None else []
        try:
            await self._call(self._discard_blocking, task_id, created, volumes)
        except Unavailable as error:  # what is left is removed as the task's leftovers later
            log.warning("event=start_cleanup_failed task=%s error=%r", task_id, str(error))

    async def _start_when_ready(
        self,
        assignment: agent_pb.TaskAssignment,
        specs: list[ContainerSpec],
        created: list[Any],
        started: Callable[[ObservedContainer], None],
        engine: Callable[..., Any],
    ) -> None:
        """Start every container once its dependsOn conditions are met (`ordering.next_step`):
        all those ready at each look, so no container waits behind another's wait. Raises
        StartFailed when a condition can never be met or a startTimeout passed. Polls with short
        sleeps on the loop: no thread waits."""
        loop = asyncio.get_running_loop()
        definitions = list(assignment.task_definition.container_definitions)
        ids = {spec.definition_name: container.id for spec, container in zip(specs, created, strict=True)}
        started_at: dict[str, float] = {}  # name -> when the agent started it (loop clock)
        while len(started_at) < len(definitions):
            # Look only at the started containers that a waiting one depends on.
            watched = sorted(
                {
                    d.container_name
                    for c in definitions
                    if c.name not in started_at
                    for d in c.depends_on
                    if d.container_name in started_at
                }
            )
            states = (
                await engine(self._inspect_states_blocking, [ids[name] for name in watched])
                if watched
                else {}
            )
            seen = {}
            for name in watched:
                if not states[ids[name]]:
                    raise StartFailed(f"DependencyError: container {name} was removed while the task started")
                seen[name] = docker_lifecycle.seen(states[ids[name]])
            step = ordering.next_step(definitions, seen, started_at, loop.time())
            if step.failed:
                raise StartFailed(step.failed)
            for index in step.start:
                await engine(self._start_one_blocking, created[index], specs[index], started)
                started_at[definitions[index].name] = loop.time()
            if not step.start:
                await asyncio.sleep(DEPENDENCY_POLL)

    # -- restarting ------------------------------------------------------

    def _restart_blocking(self, runtime_id: str) -> tuple[str, ObservedContainer]:
        """Start the container again; its node and what inspect shows of it now."""
        try:
            self._client.api.start(runtime_id)
        except docker.errors.APIError as error:
            raise _RestartRefused(f"docker refused to start it again: {error}") from error
        return docker_lifecycle.restarted(runtime_id, self._client.api.inspect_container(runtime_id))

    async def restart_container(self, task_id: str, runtime_id: str) -> None:
        """`docker start` the exited container again (Docker's own restart policies cannot say
        ignoredExitCodes or restartAttemptPeriod; the reconciler decided). The engine's refusal
        (an API error from start) is final: the container then counts as an early exit, and its
        task stops if it is essential. Any other error (the engine unreachable) raises
        Unavailable and leaves the exit as it was, so the next pass tries again."""
        since = self._ledger.mark()  # deaths noted from here on are the new run's
        try:
            node_id, container = await self._call(self._restart_blocking, runtime_id)
        except _RestartRefused as refused:
            self._ledger.restart_refused(runtime_id)
            raise Unavailable(str(refused)) from refused
        self._ledger.restarted(node_id, container, since)
        log.info(
            "event=container_restarted task=%s container=%s id=%s running=%s",
            task_id,
            container.name,
            runtime_id[:12],
            container.phase is ContainerPhase.RUNNING,
        )

    # -- stopping --------------------------------------------------------

    def _containers_of(self, task_id: str) -> list[Any]:
        # Task ids are unique, so this never reaches another agent's containers.
        return list(self._client.containers.list(all=True, filters={"label": f"{LABEL_TASK_ID}={task_id}"}))

    def _stop_blocking(self, task_id: str, timeout: int) -> None:
        # Dependents first (the reverse of the start order), each with its own stopTimeout.
        containers = sorted(self._containers_of(task_id), key=docker_lifecycle.start_rank, reverse=True)
        for container in containers:
            if container.status == "running":
                with contextlib.suppress(docker.errors.NotFound):
                    container.stop(timeout=docker_lifecycle.own_timeout(container.labels, timeout))

    def _remove_blocking(self, task_id: str, timeout: int) -> None:
        self._stop_blocking(task_id, timeout)
        for container in self._containers_of(task_id):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
        # The task's own volumes go with its containers (shared ones stay).
        remove_task_volumes(self._client, task_id)

    async def stop_task(self, task_id: str, timeout: int) -> None:
        await self._call(self._stop_blocking, task_id, timeout)

    async def remove_task(self, task_id: str, timeout: int = DEFAULT_STOP_TIMEOUT) -> None:
        await self._call(self._remove_blocking, task_id, timeout)

    # -- output ----------------------------------------------------------

    async def container_logs(self, runtime_id: str, query: LogQuery) -> AsyncIterator[list[str]]:
        loop = asyncio.get_running_loop()
        batches: asyncio.Queue[list[str] | BaseException | None] = asyncio.Queue(LOG_BATCHES)
        stopped = threading.Event()
        streams: list[Any] = []

        def hand_over(item: list[str] | BaseException | None) -> None:
            """In the thread: queue one item, waiting for room; give up once the reader is gone."""
            handed = asyncio.run_coroutine_threadsafe(batches.put(item), loop)
            while not stopped.is_set():
                try:
                    handed.result(timeout=0.5)
                    return
                except TimeoutError:
                    continue
            handed.cancel()

        def read() -> None:
            try:
                stream = self._client.api.logs(
                    runtime_id,
                    stdout=True,
                    stderr=True,
                    stream=True,
                    follow=query.follow,
                    since=query.since,
                    tail=query.tail or "all",
                )
                streams.append(stream)
                splitter = LineSplitter()
                for data in stream:
                    if stopped.is_set():
                        return
                    if lines := splitter.feed(data):
                        hand_over(lines)
                if lines := splitter.flush():
                    hand_over(lines)
                hand_over(None)
            except docker.errors.NotFound:
                hand_over(Unavailable(f"container {runtime_id[:12]} is gone"))
            except docker.errors.APIError as error:
                if not stopped.is_set():
                    hand_over(Unavailable(unreadable_reason(error)))
            except Exception as error:  # the reader learns why; the thread ends either way
                if not stopped.is_set():
                    hand_over(Unavailable(f"docker: {error}"))

        reader = threading.Thread(target=read, name="docker-logs", daemon=True)
        reader.start()
        try:
            while True:
                item = await batches.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stopped.set()
            for stream in streams:
                # Wakes a thread blocked reading a quiet follower's socket.
                with contextlib.suppress(Exception):
                    stream.close()

    # -- exec --------------------------------------------------------------

    async def exec(self, runtime_id: str, spec: ExecSpec) -> DockerExec:
        """A command in the container (`agent.runtime.docker_exec`)."""
        async with self._semaphore:
            return await asyncio.to_thread(DockerExec.start, self._client.api, runtime_id, spec)

    # -- change feed -----------------------------------------------------

    async def changes(self, node_id: str) -> AsyncIterator[str]:
        """This node's task ids from Docker's event stream (one stream shared by all feeds)."""
        self._nodes.add(node_id)
        self._start_events_thread(asyncio.get_running_loop())
        async for task_id in self._feeds.follow(node_id):
            yield task_id

    def _on_event(self, event: ContainerEvent) -> None:
        """On the loop: note the event, then wake the feeds of its node."""
        if event.node_id and event.node_id not in self._nodes:
            return  # another agent's container on the same engine
        self._ledger.record(event)
        if event.action not in WATCHED_ACTIONS:
            return
        # A container without a node label should not exist; waking every node is the safe side.
        if event.node_id:
            self._feeds.publish(event.node_id, event.task_id)
        else:
            self._feeds.publish_all(event.task_id)

    def _on_reconnected(self) -> None:
        """On the loop: events may have been missed while disconnected; every node resyncs."""
        self._ledger.forget_health()
        self._feeds.publish_all()

    def _start_events_thread(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._events_thread is not None:
            return

        def pump() -> None:
            while not self._closed.is_set():
                try:
                    self._events_stream = self._open_events(
                        self._base_url, {"type": ["container"], "label": [f"{LABEL_MANAGED}=true"]}
                    )
                    loop.call_soon_threadsafe(self._on_reconnected)
                    for raw in self._events_stream:
                        loop.call_soon_threadsafe(self._on_event, parse_event(raw))
                except Exception as error:
                    if self._closed.is_set():
                        return
                    log.warning("event=docker_events_broken error=%r", str(error))
                self._closed.wait(1.0)

        self._events_thread = threading.Thread(target=pump, name="docker-events", daemon=True)
        self._events_thread.start()

    def _subnets_blocking(self) -> list[str]:
        subnets = []
        for network in self._client.networks.list():
            for config in (network.attrs.get("IPAM") or {}).get("Config") or []:
                if config.get("Subnet"):
                    subnets.append(str(config["Subnet"]))
        return subnets

    async def network_subnets(self) -> list[str]:
        """The subnets of the engine's networks (containers' source addresses, for Berth's DNS)."""
        return await self._call(self._subnets_blocking)

    def _task_addresses_blocking(self, node_id: str) -> dict[str, str]:
        summaries = self._client.api.containers(
            filters={"label": [f"{LABEL_MANAGED}=true", f"{LABEL_NODE}={node_id}"], "status": "running"}
        )
        return docker_state.task_addresses(summaries)

    async def task_addresses(self, node_id: str) -> dict[str, str]:
        """IP address -> task id of this node's running containers, on the engine's networks
        (how the agent's metric endpoint knows which task is calling)."""
        return await self._call(self._task_addresses_blocking, node_id)

    def _bridge_gateway_blocking(self) -> str:
        network = self._client.api.inspect_network("bridge")
        for config in (network.get("IPAM") or {}).get("Config") or []:
            if config.get("Gateway"):
                return str(config["Gateway"])
        raise Unavailable("docker's bridge network has no gateway address")

    async def bridge_gateway(self) -> str:
        """The host's address on the engine's default bridge: what its containers reach it at."""
        return await self._call(self._bridge_gateway_blocking)

    async def close(self) -> None:
        self._closed.set()
        if self._events_stream is not None:
            with contextlib.suppress(Exception):
                self._events_stream.close()
        with contextlib.suppress(Exception):
            self._client.close()
