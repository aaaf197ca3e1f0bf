"""The agent's side of the storage policy: symbolic links on bound node paths, existing shared
volumes that are not what their definition says, an engine that times out while a task starts
(nothing of the task left), and the volume sweep against a start in flight."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import docker.errors
import pytest
import requests.exceptions

from agent.runtime.docker_driver import DockerDriver
from agent.runtime.docker_volumes import VolumeSpec, ensure_volumes, sweep_task_volumes
from agent.runtime.driver import StartFailed
from agent.runtime.host_path_links import check_no_links, link_in
from berth.taskdef import parse_register_document
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb

APP = {"name": "app", "image": "busybox", "memory": 64}


# -- symbolic links ---------------------------------------------------------------------------


def test_the_walk_finds_the_first_link_and_stops_at_a_missing_component(tmp_path: Path) -> None:
    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "real" / "last").symlink_to("/")
    assert link_in(f"{tmp_path}/real/sub") is None
    assert link_in(f"{tmp_path}/real/missing/deeper") is None  # Docker makes the rest
    assert link_in(f"{tmp_path}/link/sub") == f"{tmp_path}/link"
    assert link_in(f"{tmp_path}/real/last") == f"{tmp_path}/real/last"
    assert link_in("/") is None


def _host_td(path: str) -> pb.TaskDefinition:
    td, _ = parse_register_document(
        {
            "family": "app",
            "volumes": [{"name": "v", "host": {"sourcePath": path}}],
            "containerDefinitions": [APP | {"mountPoints": [{"sourceVolume": "v", "containerPath": "/v"}]}],
        }
    )
    return td


def test_a_link_fails_the_start_naming_the_path_as_registered_not_its_target(tmp_path: Path) -> None:
    secret = tmp_path / "elsewhere"
    secret.mkdir()
    (tmp_path / "allowed").mkdir()
    (tmp_path / "allowed" / "r").symlink_to(secret)
    with pytest.raises(StartFailed) as failed:
        check_no_links(_host_td(f"{tmp_path}/allowed/r/data"))
    assert str(failed.value) == (
        f"CannotCreateContainerError: volumes[0].host.sourcePath {tmp_path}/allowed/r/data: its component "
        f"{tmp_path}/allowed/r is a symbolic link on this node, and Berth binds no symbolic links (the "
        "host-path policy judges the path as written)"
    )
    assert str(secret) not in str(failed.value)
    check_no_links(_host_td(f"{tmp_path}/allowed/data"))  # no link: fine


def test_a_local_volumes_bind_device_is_walked_too(tmp_path: Path) -> None:
    (tmp_path / "d").symlink_to("/")
    td, _ = parse_register_document(
        {
            "family": "app",
            "volumes": [
                {
                    "name": "v",
                    "dockerVolumeConfiguration": {"driverOpts": {"o": "bind", "device": f"{tmp_path}/d"}},
                }
            ],
            "containerDefinitions": [APP | {"mountPoints": [{"sourceVolume": "v", "containerPath": "/v"}]}],
        }
    )
    with pytest.raises(StartFailed, match=r"driverOpts\.device .*/d: it is a symbolic link on this node"):
        check_no_links(td)


# -- existing shared volumes ---------------------------------------------------------------------


class Existing:
    def __init__(self, attrs: dict[str, Any]) -> None:
        self.attrs = attrs


class Volumes:
    def __init__(self, attrs: dict[str, Any]) -> None:
        self._attrs = attrs
        self.created: list[str] = []

    def get(self, name: str) -> Existing:
        return Existing(self._attrs)

    def create(self, name: str, **options: Any) -> None:
        self.created.append(name)


class Client:
    def __init__(self, volumes: Volumes) -> None:
        self.volumes = volumes


BIND = {"type": "none", "o": "bind", "device": "/srv/data"}


@pytest.mark.parametrize(
    ("attrs", "asked", "reason"),
    [
        ({"Driver": "local", "Labels": {"berth.task-id": "t0"}}, {},
         "shared volume data is a task's own volume (it carries berth.task-id): a shared volume must not "
         "name one"),
        ({"Driver": "local", "Options": BIND}, {},
         "shared volume data binds a path of the node that its task definition does not declare"),
        ({"Driver": "local", "Options": BIND}, BIND | {"device": "/srv/other"},
         "shared volume data binds a path of the node that its task definition does not declare"),
        ({"Driver": "local", "Options": None}, None, None),
        ({"Driver": "local", "Options": {"type": "tmpfs", "device": "tmpfs"}}, {}, None),
        ({"Driver": "local", "Options": BIND, "Labels": {"team": "web"}}, BIND, None),
    ],
)  # fmt: skip
def test_an_existing_shared_volume_must_be_what_its_definition_says(
    attrs: dict[str, Any], asked: dict[str, str] | None, reason: str | None
) -> None:
    volumes = Volumes(attrs)
    spec = VolumeSpec(name="data", shared=True, driver_opts=dict(asked or {}))
    if reason is None:
        ensure_volumes(Client(volumes), [spec])
    else:
        with pytest.raises(StartFailed, match=re.escape(f"CannotCreateContainerError: {reason}")):
            ensure_volumes(Client(volumes), [spec])
    assert volumes.created == []


# -- the driver: an engine that times out while a task starts ------------------------------------


class FakeContainer:
    def __init__(self, engine: Engine, name: str, start_error: Exception | None) -> None:
        self.id = name
        self.attrs: dict[str, Any] = {"NetworkSettings": {"Ports": {}}, "State": {}}
        self._engine = engine
        self._start_error = start_error

    def start(self) -> None:
        if self._start_error is not None:
            raise self._start_error

    def reload(self) -> None:
        pass

    def remove(self, force: bool = False) -> None:
        self._engine.removed.append(self.id)


class Engine:
    def __init__(self, create_error: Exception | None = None, start_error: Exception | None = None) -> None:
        self.create_error = create_error
        self.start_error = start_error
        self.created: list[str] = []
        self.removed: list[str] = []
        self.volumes_made: list[str] = []
        self.volume_lists: list[dict[str, Any]] = []


class EngineVolumes:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def create(self, name: str, **options: Any) -> None:
        self._engine.volumes_made.append(name)

    def list(self, filters: dict[str, Any]) -> list[Any]:
        self._engine.volume_lists.append(filters)
        return []


class EngineContainers:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def create(self, image: str, **kwargs: Any) -> FakeContainer:
        if self._engine.create_error is not None and self._engine.created:
            raise self._engine.create_error  # the second container's create times out
        name = kwargs["name"]
        self._engine.created.append(name)
        return FakeContainer(self._engine, name, self._engine.start_error)


class Images:
    def get(self, image: str) -> None:
        return None


class DriverClient:
    def __init__(self, engine: Engine) -> None:
        self.volumes = EngineVolumes(engine)
        self.containers = EngineContainers(engine)
        self.images = Images()
        self.api = None

    def close(self) -> None:
        pass


def _two_containers() -> agent_pb.TaskAssignment:
    mount = {"mountPoints": [{"sourceVolume": "v", "containerPath": "/v"}]}
    td, _ = parse_register_document(
        {
            "family": "app",
            "volumes": [{"name": "v"}],
            "containerDefinitions": [APP | mount, APP | {"name": "side", "essential": False}],
        }
    )
    td.revision = 1
    return agent_pb.TaskAssignment(task_id="t1", task_definition=td)


@pytest.mark.parametrize(
    "error",
    [requests.exceptions.ReadTimeout("read timed out"), requests.exceptions.ConnectionError("reset")],
)
async def test_a_create_that_times_out_fails_the_start_and_leaves_nothing(error: Exception) -> None:
    engine = Engine(create_error=error)
    client: Any = DriverClient(engine)
    driver = DockerDriver("unix:///fake.sock", client=client)
    with pytest.raises(StartFailed, match="CannotCreateContainerError: docker: "):
        await driver.start_task(_two_containers(), "n1")
    assert engine.volumes_made == ["berth-t1-v"]
    assert engine.removed == engine.created == ["berth-t1-app"]  # the one made is removed again
    assert engine.volume_lists == [{"label": "berth.task-id=t1"}]  # and the task's volumes with it
    assert driver._starting == set()
    await driver.close()


async def test_a_start_that_times_out_fails_the_start_and_leaves_nothing() -> None:
    engine = Engine(start_error=requests.exceptions.ReadTimeout("read timed out"))
    client: Any = DriverClient(engine)
    driver = DockerDriver("unix:///fake.sock", client=client)
    with pytest.raises(StartFailed, match="CannotStartContainerError: docker: read timed out"):
        await driver.start_task(_two_containers(), "n1")
    assert sorted(engine.removed) == sorted(engine.created) == ["berth-t1-app", "berth-t1-side"]
    assert engine.volume_lists == [{"label": "berth.task-id=t1"}]
    await driver.close()


async def test_a_symbolic_link_fails_the_start_before_anything_is_made(tmp_path: Path) -> None:
    (tmp_path / "r").symlink_to("/")
    engine = Engine()
    client: Any = DriverClient(engine)
    driver = DockerDriver("unix:///fake.sock", client=client)
    td = _host_td(f"{tmp_path}/r")
    td.revision = 1
    with pytest.raises(StartFailed, match="is a symbolic link on this node"):
        await driver.start_task(agent_pb.TaskAssignment(task_id="t1", task_definition=td), "n1")
    assert (engine.created, engine.volumes_made) == ([], [])
    await driver.close()


# -- the sweep against a start in flight ---------------------------------------------------------


class OldVolume:
    def __init__(self, removed: list[str], name: str, task_id: str) -> None:
        self.name = name
        self.attrs = {"Labels": {"berth.task-id": task_id}, "CreatedAt": "2026-01-01T00:00:00Z"}
        self._removed = removed

    def remove(self, force: bool = False) -> None:
        self._removed.append(self.name)


def test_the_sweep_asks_again_at_removal_time_inside_the_guard() -> None:
    removed: list[str] = []
    starting: set[str] = set()
    guard = threading.Lock()
    held: list[bool] = []

    class SweptVolumes:
        def list(self, filters: dict[str, Any]) -> list[OldVolume]:
            # Listed before the start of "t2" began: only the check at removal time sees it.
            starting.add("t2")
            return [OldVolume(removed, "berth-t1-v", "t1"), OldVolume(removed, "berth-t2-v", "t2")]

    class SweptClient:
        volumes = SweptVolumes()

    def is_starting(task_id: str) -> bool:
        held.append(guard.locked())
        return task_id in starting

    now = 1_900_000_000.0
    assert sweep_task_volumes(SweptClient(), "n1", set(), now, is_starting, guard) == ["berth-t1-v"]
    assert removed == ["berth-t1-v"]
    assert held == [True, True]  # asked with the guard held, as a start makes its volumes


async def test_a_sweep_that_breaks_does_not_fail_the_nodes_listing() -> None:
    class Broken:
        def list(self, filters: dict[str, Any]) -> list[Any]:
            raise requests.exceptions.ReadTimeout("read timed out")

    class Api:
        def containers(self, all: bool, filters: dict[str, Any]) -> list[dict[str, Any]]:
            return []

    class SweepClient:
        volumes = Broken()
        api = Api()

        def close(self) -> None:
            pass

    client: Any = SweepClient()
    driver = DockerDriver("unix:///fake.sock", client=client)
    driver._next_volume_sweep["n1"] = 0.0  # due now
    assert await driver.list_tasks("n1") == {}
    await driver.close()


def test_docker_errors_are_still_docker_errors() -> None:
    # ensure_volumes keeps the engine's own refusal as the reason.
    class Refusing:
        def get(self, name: str) -> None:
            raise docker.errors.NotFound("no such volume")

        def create(self, **options: Any) -> None:
            raise docker.errors.APIError("plugin not found")

    with pytest.raises(StartFailed, match="volume x: plugin not found"):
        ensure_volumes(Client(Refusing()), [VolumeSpec(name="x", shared=True, autoprovision=True)])  # type: ignore[arg-type]
