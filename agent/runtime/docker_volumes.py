"""A task's storage on the Docker engine: which volumes to make, how its containers mount them.

Pure: `volume_specs` (the Docker volumes a task needs), `container_mounts` (one
container's binds and volumes_from, as the SDK's `containers.create` takes them) and
`creation_order` (a container that takes another's volumes is created after it).
I/O, given the SDK client (blocking; the driver runs them in worker threads):
`ensure_volumes` before the containers are created, `remove_task_volumes` after
they are removed, and `sweep_task_volumes` now and then for task volumes left
behind (`stale_task_volumes` decides which).

Lifecycle, as ECS's:

- an empty volume (no host path, no dockerVolumeConfiguration) and a `scope: task`
  Docker volume are made for one task, named from the task id and the volume's name,
  labelled with the task id, and removed with the task's containers (a stop that
  removes, the sweep of tasks no longer desired, and a start that failed);
- a `scope: shared` volume is the node's Docker volume of the volume's own name,
  kept across tasks; with `autoprovision` it is made when missing, without it a
  missing one fails the task's start; an existing one that is a task's own volume
  (it carries a task id) or binds a node path the definition does not declare fails
  the start too (the control plane judged only what the definition says);
- a host path is a bind mount (the control plane's --allow-host-path judged it, and
  agent.runtime.host_path_links refuses a symbolic link on it when the task starts);
  Docker creates a missing directory, as ECS's agent does;
- an EFS volume is the task's own local-driver NFS volume, mounted as ECS's agent
  mounts EFS without Amazon's helper (plain NFSv4.1 from
  FILE_SYSTEM_ID.efs.REGION.amazonaws.com, REGION the agent's --aws-region); a node
  without a region fails the start saying so.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import logging
import math
import re
from collections.abc import Callable, Sequence, Set
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import docker.errors

from agent.runtime.driver import LABEL_MANAGED, LABEL_NODE, LABEL_TASK_ID, StartFailed
from berth.taskdef_storage import LOCAL_DRIVER, local_device
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb

log = logging.getLogger(__name__)

# The volume's name in its task definition, on every volume Berth makes.
LABEL_VOLUME = "berth.volume-name"
# Docker keeps a local volume in a directory of that name: stay well inside NAME_MAX.
_MAX_DOCKER_NAME = 200
# The NFS options ECS's agent mounts EFS with when Amazon's mount helper is not used.
EFS_NFS_OPTIONS = "nfsvers=4.1,rsize=1048576,wsize=1048576,hard,timeo=600,retrans=2,noresvport"
# A task volume whose task has no container on the node any more (removed outside Berth, or
# the agent stopped between removing the containers and their volumes) is swept once it is
# this old, in seconds: a younger one may belong to a start in flight (a task's volumes are
# made just before its containers).
SWEEP_MIN_AGE = 120.0
# us-east-1, eu-central-2, us-gov-west-1, cn-north-1, ap-southeast-4.
AWS_REGION = re.compile(r"[a-z]{2}(-[a-z]+){1,2}-[0-9]{1,2}")


def task_volume_name(task_id: str, name: str) -> str:
    """The Docker volume of one task's volume: unique per task, found again from both names."""
    candidate = f"berth-{task_id}-{name}"
    if len(candidate) <= _MAX_DOCKER_NAME:
        return candidate
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    return f"berth-{task_id}-{name[:64]}-{digest}"


@dataclass(frozen=True)
class VolumeSpec:
    """One Docker volume a task needs on its node."""

    name: str  # Docker's volume name
    driver: str = LOCAL_DRIVER
    driver_opts: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    shared: bool = False  # kept across tasks (scope shared); else the task's own
    autoprovision: bool = False  # shared only: make it when missing


def _is_shared(volume: pb.Volume) -> bool:
    return (
        volume.HasField("docker_volume_configuration")
        and volume.docker_volume_configuration.scope == pb.VOLUME_SCOPE_SHARED
    )


def _docker_source(volume: pb.Volume, task_id: str) -> str:
    """What a mount of this volume names: a host path, a shared volume's name, or the task's own."""
    if volume.HasField("host") and volume.host.source_path:
        return volume.host.source_path
    if _is_shared(volume):
        return volume.name
    return task_volume_name(task_id, volume.name)


def efs_driver_opts(efs: pb.VolumeEfsConfiguration, region: str) -> dict[str, str]:
    """The local driver's options that mount an EFS file system over NFSv4.1 (Docker resolves
    the address when the volume is first mounted)."""
    return {
        "type": "nfs",
        "o": f"addr={efs.file_system_id}.efs.{region}.amazonaws.com,{EFS_NFS_OPTIONS}",
        "device": f":{efs.root_directory or '/'}",
    }


def volume_specs(assignment: agent_pb.TaskAssignment, node_id: str, aws_region: str = "") -> list[VolumeSpec]:
    """The Docker volumes the task's containers mount (host paths need none); only those a
    container mounts, as ECS makes them. aws_region: the node's, for EFS volumes; without
    one a task with an EFS volume fails to start (StartFailed) saying so."""
    td = assignment.task_definition
    mounted = {m.source_volume for c in td.container_definitions for m in c.mount_points}
    specs = []
    for volume in td.volumes:
        if volume.name not in mounted or (volume.HasField("host") and volume.host.source_path):
            continue
        config = volume.docker_volume_configuration
        shared = _is_shared(volume)
        ours = {LABEL_MANAGED: "true", LABEL_VOLUME: volume.name}
        if not shared:
            ours |= {LABEL_TASK_ID: assignment.task_id, LABEL_NODE: node_id}
        if volume.HasField("efs_volume_configuration"):
            efs = volume.efs_volume_configuration
            if not aws_region:
                raise StartFailed(
                    f"CannotCreateContainerError: volume {volume.name}: EFS file system {efs.file_system_id} "
                    "needs the node's AWS region: start the agent with --aws-region or AWS_REGION"
                )
            specs.append(
                VolumeSpec(
                    name=_docker_source(volume, assignment.task_id),
                    driver_opts=efs_driver_opts(efs, aws_region),
                    labels=ours,
                )
            )
            continue
        specs.append(
            VolumeSpec(
                name=_docker_source(volume, assignment.task_id),
                driver=config.driver or LOCAL_DRIVER,
                driver_opts=dict(config.driver_opts),
                # The task's labels never override Berth's own (berth.* keys are refused at registration).
                labels=dict(config.labels) | ours,
                shared=shared,
                autoprovision=shared and config.autoprovision,
            )
        )
    return specs


def _mode(read_only: bool) -> str:
    return "ro" if read_only else "rw"


def container_mounts(
    definition: pb.ContainerDefinition,
    td: pb.TaskDefinition,
    task_id: str,
    container_name: Callable[[str, str], str],
) -> dict[str, Any]:
    """ContainerSpec's `binds` ("SOURCE:PATH:ro|rw") and `volumes_from` ("CONTAINER:ro|rw");
    container_name(task_id, name) is Docker's name of a container of the task."""
    volumes = {v.name: v for v in td.volumes}
    binds = tuple(
        f"{_docker_source(volumes[m.source_volume], task_id)}:{m.container_path}:{_mode(m.read_only)}"
        for m in definition.mount_points
        if m.source_volume in volumes  # checked at registration; never a KeyError on the agent
    )
    volumes_from = tuple(
        f"{container_name(task_id, v.source_container)}:{_mode(v.read_only)}" for v in definition.volumes_from
    )
    return {"binds": binds, "volumes_from": volumes_from}


class _Creatable(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def volumes_from(self) -> tuple[str, ...]: ...


T = TypeVar("T", bound=_Creatable)


def creation_order(specs: Sequence[T]) -> list[T]:
    """The specs in task-definition order, except that a container comes after the containers
    it takes volumes from (Docker needs them to exist; cycles are refused at registration)."""
    by_name = {spec.name: spec for spec in specs}
    ordered: list[T] = []
    placed: set[str] = set()

    def place(spec: T, seen: frozenset[str]) -> None:
        if spec.name in placed or spec.name in seen:
            return
        for source in spec.volumes_from:
            dependency = by_name.get(source.rsplit(":", 1)[0])
            if dependency is not None:
                place(dependency, seen | {spec.name})
        placed.add(spec.name)
        ordered.append(spec)

    for spec in specs:
        place(spec, frozenset())
    return ordered


# -- I/O (blocking) ------------------------------------------------------------


# What the SDK raises: its own errors, and requests' timeouts and connection errors (OSError).
EngineError = (docker.errors.DockerException, OSError)


def _failed(volume: str, error: Exception) -> StartFailed:
    detail = getattr(error, "explanation", None) or error
    return StartFailed(f"CannotCreateContainerError: volume {volume}: {detail}")


def _check_existing_shared(spec: VolumeSpec, attrs: dict[str, Any]) -> None:
    """An existing shared volume is used as it is, unless it is not what the definition says."""
    driver = attrs.get("Driver", spec.driver)
    if driver != spec.driver:
        raise StartFailed(
            f"CannotCreateContainerError: shared volume {spec.name} exists with driver "
            f"{driver}, the task definition asks for {spec.driver}"
        )
    if LABEL_TASK_ID in (attrs.get("Labels") or {}):
        raise StartFailed(
            f"CannotCreateContainerError: shared volume {spec.name} is a task's own volume "
            f"(it carries {LABEL_TASK_ID}): a shared volume must not name one"
        )
    options = dict(attrs.get("Options") or {})
    if driver == LOCAL_DRIVER and local_device(pb.VolumeDockerConfiguration(driver_opts=options)) is not None:
        # The same options as the definition's: its device was judged and walked for links.
        if options != spec.driver_opts:
            raise StartFailed(
                f"CannotCreateContainerError: shared volume {spec.name} binds a path of the node that "
                "its task definition does not declare (the host-path policy judged only what it declares)"
            )


def ensure_volumes(client: Any, specs: Sequence[VolumeSpec]) -> None:
    """Make the task's volumes, and the shared ones it may make; raise StartFailed (ECS's
    CannotCreateContainerError) for a missing shared volume without autoprovision."""
    for spec in specs:
        if spec.shared:
            try:
                existing = client.volumes.get(spec.name)
            except docker.errors.NotFound:
                existing = None
            except EngineError as error:
                raise _failed(spec.name, error) from error
            if existing is not None:
                _check_existing_shared(spec, existing.attrs or {})
                continue
            if not spec.autoprovision:
                raise StartFailed(
                    f"CannotCreateContainerError: shared volume {spec.name} does not exist on this node "
                    "and autoprovision is false: create it (docker volume create) or set autoprovision"
                )
        try:
            client.volumes.create(
                name=spec.name, driver=spec.driver, driver_opts=spec.driver_opts, labels=spec.labels
            )
        except EngineError as error:
            raise _failed(spec.name, error) from error
        log.info("event=volume_created volume=%s shared=%s", spec.name, spec.shared)


def remove_task_volumes(client: Any, task_id: str) -> None:
    """Remove the task's own volumes (never a shared one: those carry no task id)."""
    try:
        volumes = client.volumes.list(filters={"label": f"{LABEL_TASK_ID}={task_id}"})
    except EngineError as error:
        log.warning("event=volume_list_failed task=%s error=%r", task_id, str(error))
        return
    for volume in volumes:
        try:
            volume.remove(force=True)
            log.info("event=volume_removed task=%s volume=%s", task_id, volume.name)
        except docker.errors.NotFound:
            pass
        except EngineError as error:
            log.warning(
                "event=volume_remove_failed task=%s volume=%s error=%r", task_id, volume.name, str(error)
            )


def stale_task_volumes(
    volumes: Sequence[tuple[str, str, float]], live_tasks: Set[str], now: float
) -> list[str]:
    """Of (volume, task id, created at) on this node, the volumes to remove: their task has no
    container here any more, and they are older than SWEEP_MIN_AGE."""
    return [
        name
        for name, task_id, created in volumes
        if task_id and task_id not in live_tasks and now - created >= SWEEP_MIN_AGE
    ]


def _created_at(text: str) -> float:
    """Docker's CreatedAt (RFC 3339) as a Unix time; unreadable: never old enough to sweep."""
    try:
        return datetime.datetime.fromisoformat(text).timestamp()
    except (TypeError, ValueError):
        return math.inf


def _never(task_id: str) -> bool:
    return False


def sweep_task_volumes(
    client: Any,
    node_id: str,
    live_tasks: Set[str],
    now: float,
    starting: Callable[[str], bool] = _never,
    guard: AbstractContextManager[Any] | None = None,
) -> list[str]:
    """Remove this node's task volumes left behind by tasks with no container here any more
    (never a shared volume: those carry no task id); return their names.

    `starting(task_id)` is asked again right before each removal, inside `guard`: a start
    that began after the volumes were listed keeps its volume, and a start that begins during
    a removal makes its volumes (ensure_volumes, inside the same guard) only after it."""
    volumes = client.volumes.list(filters={"label": [f"{LABEL_MANAGED}=true", f"{LABEL_NODE}={node_id}"]})
    found = {
        volume.name: (volume, (volume.attrs.get("Labels") or {}).get(LABEL_TASK_ID, "")) for volume in volumes
    }
    stale = stale_task_volumes(
        [
            (name, task_id, _created_at(volume.attrs.get("CreatedAt", "")))
            for name, (volume, task_id) in found.items()
        ],
        live_tasks,
        now,
    )
    swept = []
    for name in stale:
        volume, task_id = found[name]
        with guard if guard is not None else contextlib.nullcontext():
            if starting(task_id):
                continue
            try:
                volume.remove(force=True)
                swept.append(name)
                log.info("event=volume_swept task=%s volume=%s", task_id, name)
            except docker.errors.NotFound:
                pass
            except EngineError as error:
                log.warning("event=volume_sweep_failed task=%s volume=%s error=%r", task_id, name, str(error))
    return swept
