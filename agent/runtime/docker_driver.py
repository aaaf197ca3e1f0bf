"""The Docker engine driver, through the `docker` SDK.

The SDK blocks, so every call runs in a worker thread, at most
`concurrency` at a time, never on the event loop. Exits are learned from
Docker's event stream (read in its own thread), not by polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import docker
import docker.errors

from agent.runtime.docker_events import EventStream
from agent.runtime.driver import (
    DEFAULT_STOP_TIMEOUT,
    LABEL_CLUSTER,
    LABEL_CONTAINER,
    LABEL_ESSENTIAL,
    LABEL_MANAGED,
    LABEL_NODE,
    LABEL_SERVICE,
    LABEL_STOP_TIMEOUT,
    LABEL_TASK_DEFINITION,
    LABEL_TASK_ID,
    ContainerPhase,
    ObservedContainer,
    ObservedTask,
    StartFailed,
)
from berth.errors import Unavailable
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb

log = logging.getLogger(__name__)

T = TypeVar("T")

_WATCHED_ACTIONS = {"start", "die", "destroy", "oom", "create"}


def container_name(task_id: str, name: str) -> str:
    # Unique per task and container: Docker itself refuses a duplicate start.
    return f"berth-{task_id}-{name}"


def _bindings(name: str, ports: list[dict[str, Any]]) -> tuple[pb.NetworkBinding, ...]:
    found: dict[tuple[int, str], pb.NetworkBinding] = {}
    for port in ports or []:
        if not port.get("PublicPort"):
            continue
        key = (int(port["PrivatePort"]), port.get("Type", "tcp"))
        ip = port.get("IP", "")
        if key in found and ":" in ip:
            continue  # prefer the IPv4 binding Docker lists beside the IPv6 one
        found[key] = pb.NetworkBinding(
            container_name=name,
            container_port=key[0],
            host_port=int(port["PublicPort"]),
            protocol=pb.UDP if key[1] == "udp" else pb.TCP,
            bind_ip=ip,
        )
    return tuple(found[k] for k in sorted(found))


class DockerDriver:
    def __init__(self, base_url: str, concurrency: int = 8, dns_servers: list[str] | None = None) -> None:
        self._base_url = base_url
        # The host's Berth DNS, so containers resolve SERVICE.CLUSTER.berth.
        self._dns_servers = dns_servers or []
        self._client = docker.DockerClient(base_url=base_url)
        self._semaphore = asyncio.Semaphore(concurrency)
        # Exit details of finished containers never change: inspect them once.
        self._finished: dict[str, ObservedContainer] = {}
        # Docker emits `die` ~100 ms before its container list says "exited";
        # the event's exit code lets us act at once instead of at the next event.
        self._died: dict[str, tuple[int, str]] = {}
        self._oom_killed: set[str] = set()
        # The container list also trails a start: until it says "running",
        # what inspect showed right after our own start is the truth.
        self._just_started: dict[str, ObservedContainer] = {}
        self._events_stream: EventStream | None = None
        # Images seen present; forgotten when a create fails (it may have been removed).
        self._present_images: set[str] = set()
        self._closed = threading.Event()

    async def _call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        async with self._semaphore:
            try:
                return await asyncio.to_thread(function, *args, **kwargs)
            except docker.errors.DockerException as error:
                raise Unavailable(f"docker: {error}") from error
            except StartFailed:
                raise

    # -- observing -------------------------------------------------------

    def _list_blocking(self, node_id: str) -> dict[str, ObservedTask]:
        summaries = self._client.api.containers(
            all=True, filters={"label": [f"{LABEL_MANAGED}=true", f"{LABEL_NODE}={node_id}"]}
        )
        by_task: dict[str, list[ObservedContainer]] = {}
        live_ids = set()
        for summary in summaries:
            labels = summary.get("Labels") or {}
            task_id = labels.get(LABEL_TASK_ID)
            if not task_id:
                continue
            live_ids.add(summary["Id"])
            by_task.setdefault(task_id, []).append(self._observe(summary, labels))
        for gone in set(self._finished) - live_ids:
            del self._finished[gone]
        for gone in set(self._just_started) - live_ids:
            del self._just_started[gone]
        for gone in set(self._died) - live_ids:
            self._died.pop(gone, None)
            self._oom_killed.discard(gone)
        return {task_id: ObservedTask(task_id, tuple(cs)) for task_id, cs in by_task.items()}

    def _observe(self, summary: dict[str, Any], labels: dict[str, str]) -> ObservedContainer:
        name = labels.get(LABEL_CONTAINER, "")
        essential = labels.get(LABEL_ESSENTIAL, "true") == "true"
        timeout = int(labels.get(LABEL_STOP_TIMEOUT, DEFAULT_STOP_TIMEOUT))
        state = summary.get("State", "")
        died = self._died.get(summary["Id"])
        if state == "running" and died is not None:
            return ObservedContainer(
                name,
                summary["Id"],
                ContainerPhase.EXITED,
                essential,
                timeout,
                exit_code=died[0],
                reason=died[1],
            )
        if state == "running":
            self._just_started.pop(summary["Id"], None)
            return ObservedContainer(
                name,
                summary["Id"],
                ContainerPhase.RUNNING,
                essential,
                timeout,
                bindings=_bindings(name, summary.get("Ports", [])),
            )
        if summary["Id"] in self._just_started and died is None:
            return self._just_started[summary["Id"]]
        if state == "created":
            return ObservedContainer(name, summary["Id"], ContainerPhase.CREATED, essential, timeout)
        cached = self._finished.get(summary["Id"])
        if cached is not None:
            return cached
        try:
            details = self._client.api.inspect_container(summary["Id"])["State"]
        except docker.errors.NotFound:
            details = {}
        reason = "OOMKilled" if details.get("OOMKilled") else details.get("Error", "")
        observed = ObservedContainer(
            name,
            summary["Id"],
            ContainerPhase.EXITED,
            essential,
            timeout,
            exit_code=int(details.get("ExitCode", -1)),
            reason=reason,
        )
        self._finished[summary["Id"]] = observed
        return observed

    async def list_tasks(self, node_id: str) -> dict[str, ObservedTask]:
        return await self._call(self._list_blocking, node_id)

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

    def _start_blocking(self, assignment: agent_pb.TaskAssignment, node_id: str) -> None:
        td = assignment.task_definition
        created: list[Any] = []
        try:
            for definition in td.container_definitions:
                self._ensure_image(definition.image)
            for definition in td.container_definitions:
                created.append(self._create(assignment, definition, node_id))
            for container, definition in zip(created, td.container_definitions, strict=True):
                try:
                    container.start()
                except docker.errors.APIError as error:
                    raise StartFailed(f"CannotStartContainerError: {error.explanation or error}") from error
                self._remember_started(container, definition)
        except StartFailed:
            for container in created:
                with contextlib.suppress(docker.errors.DockerException):
                    container.remove(force=True)
            raise

    def _remember_started(self, container: Any, definition: pb.ContainerDefinition) -> None:
        container.reload()  # inspect: authoritative, unlike the list
        ports = []
        for spec, bindings in (container.attrs["NetworkSettings"].get("Ports") or {}).items():
            number, _, protocol = spec.partition("/")
            for binding in bindings or []:
                ports.append(
                    {
                        "PrivatePort": int(number),
                        "PublicPort": int(binding["HostPort"]),
                        "Type": protocol,
                        "IP": binding.get("HostIp", ""),
                    }
                )
        self._just_started[container.id] = ObservedContainer(
            definition.name,
            container.id,
            ContainerPhase.RUNNING,
            definition.essential,
            definition.stop_timeout or DEFAULT_STOP_TIMEOUT,
            bindings=_bindings(definition.name, ports),
        )

    def _create(
        self, assignment: agent_pb.TaskAssignment, definition: pb.ContainerDefinition, node_id: str
    ) -> Any:
        td = assignment.task_definition
        labels = {
            LABEL_MANAGED: "true",
            LABEL_TASK_ID: assignment.task_id,
            LABEL_CONTAINER: definition.name,
            LABEL_ESSENTIAL: "true" if definition.essential else "false",
            LABEL_STOP_TIMEOUT: str(definition.stop_timeout or DEFAULT_STOP_TIMEOUT),
            LABEL_CLUSTER: assignment.cluster,
            LABEL_SERVICE: assignment.service,
            LABEL_TASK_DEFINITION: f"{td.family}:{td.revision}",
            LABEL_NODE: node_id,
        }
        ports = {
            f"{p.container_port}/{'udp' if p.protocol == pb.UDP else 'tcp'}": (p.host_port or None)
            for p in definition.port_mappings
        }
        options: dict[str, Any] = {
            "name": container_name(assignment.task_id, definition.name),
            "labels": labels,
            "environment": {e.name: e.value for e in definition.environment},
            "ports": ports,
            # Docker's minimum; ECS uses the same floor for cpu 0.
            "cpu_shares": max(definition.cpu, 2),
            "detach": True,
        }
        if self._dns_servers:
            options["dns"] = self._dns_servers
        if definition.command:
            options["command"] = list(definition.command)
        if definition.entry_point:
            options["entrypoint"] = list(definition.entry_point)
        if definition.memory:
            options["mem_limit"] = f"{definition.memory}m"
        if definition.memory_reservation:
            options["mem_reservation"] = f"{definition.memory_reservation}m"
        try:
            return self._client.containers.create(definition.image, **options)
        except docker.errors.APIError as error:
            self._present_images.discard(definition.image)
            raise StartFailed(f"CannotCreateContainerError: {error.explanation or error}") from error

    async def start_task(self, assignment: agent_pb.TaskAssignment, node_id: str) -> None:
        await self._call(self._start_blocking, assignment, node_id)

    # -- stopping --------------------------------------------------------

    def _containers_of(self, task_id: str) -> list[Any]:
        # Task ids are unique, so this never reaches another agent's containers.
        return list(self._client.containers.list(all=True, filters={"label": f"{LABEL_TASK_ID}={task_id}"}))

    def _stop_blocking(self, task_id: str, timeout: int) -> None:
        for container in self._containers_of(task_id):
            if container.status == "running":
                with contextlib.suppress(docker.errors.NotFound):
                    container.stop(timeout=timeout)

    def _remove_blocking(self, task_id: str, timeout: int) -> None:
        self._stop_blocking(task_id, timeout)
        for container in self._containers_of(task_id):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)

    async def stop_task(self, task_id: str, timeout: int) -> None:
        await self._call(self._stop_blocking, task_id, timeout)

    async def remove_task(self, task_id: str, timeout: int = DEFAULT_STOP_TIMEOUT) -> None:
        await self._call(self._remove_blocking, task_id, timeout)

    # -- change feed -----------------------------------------------------

    async def changes(self, node_id: str) -> AsyncIterator[str]:
        """This node's task ids from Docker's event stream; reconnects if the stream breaks."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str] = asyncio.Queue()
        done = threading.Event()
        filters = {"type": ["container"], "label": [f"{LABEL_MANAGED}=true", f"{LABEL_NODE}={node_id}"]}

        def pump() -> None:
            while not (self._closed.is_set() or done.is_set()):
                try:
                    self._events_stream = EventStream(self._base_url, filters)
                    # A resync marker: events may have been missed while disconnected.
                    loop.call_soon_threadsafe(queue.put_nowait, "")
                    for event in self._events_stream:
                        if done.is_set():
                            return
                        action = event.get("Action", "").split(":")[0]
                        attributes = event.get("Actor", {}).get("Attributes", {})
                        if action == "oom":
                            self._oom_killed.add(event.get("id", ""))
                        elif action == "die":
                            container_id = event.get("id", "")
                            reason = "OOMKilled" if container_id in self._oom_killed else ""
                            self._died[container_id] = (int(attributes.get("exitCode", -1)), reason)
                        if action in _WATCHED_ACTIONS:
                            loop.call_soon_threadsafe(queue.put_nowait, attributes.get(LABEL_TASK_ID, ""))
                except Exception as error:
                    if self._closed.is_set() or done.is_set():
                        return
                    log.warning("event=docker_events_broken error=%r", str(error))
                self._closed.wait(1.0)

        thread = threading.Thread(target=pump, name=f"docker-events-{node_id}", daemon=True)
        thread.start()
        try:
            while True:
                yield await queue.get()
        finally:
            done.set()
            stream = self._events_stream
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()

    async def close(self) -> None:
        self._closed.set()
        if self._events_stream is not None:
            with contextlib.suppress(Exception):
                self._events_stream.close()
        with contextlib.suppress(Exception):
            self._client.close()
