"""ECS's storage fields: volumes, mountPoints and volumesFrom parsed as written for AWS, bounded,
their references checked, refused in one line naming the field; the round trip; the host-path
policy; and what the agent hands to Docker."""

from __future__ import annotations

import datetime
import json
from typing import Any

import docker.errors
import pytest

from agent.main import parse_args as agent_args
from agent.runtime.docker_spec import container_name, container_specs
from agent.runtime.docker_volumes import (
    VolumeSpec,
    creation_order,
    ensure_volumes,
    remove_task_volumes,
    stale_task_volumes,
    sweep_task_volumes,
    task_volume_name,
    volume_specs,
)
from agent.runtime.driver import StartFailed
from berth.errors import InvalidArgument
from berth.taskdef import parse_register_document, to_ecs_document, validate_task_definition
from berth.taskdef_storage import AUTOPROVISION_NOTE, host_paths
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb
from controlplane.main import parse_args
from controlplane.operations.taskdefs import TaskDefinitions
from controlplane.store import keys
from controlplane.store.memory import MemoryStore
from controlplane.validation.host_paths import (
    HostPathPolicy,
    host_path_refusal,
    normalize_prefixes,
    under,
)

APP = {"name": "app", "image": "busybox", "memory": 64}
EFS_ID = "fs-0123456789abcdef0"
TMPFS = {"containerPath": "/tmp", "size": 8}
SIDE = {"name": "side", "image": "busybox", "memory": 32, "essential": False}


def doc(volumes: Any, *containers: dict[str, Any]) -> dict[str, Any]:
    return {"family": "app", "volumes": volumes, "containerDefinitions": list(containers) or [APP]}


FULL = doc(
    [
        {"name": "data"},
        {"name": "logs", "host": {"sourcePath": "/srv//logs/./app/"}},
        {
            "name": "cache",
            "dockerVolumeConfiguration": {
                "scope": "task",
                "driver": "local",
                "driverOpts": {"type": "tmpfs", "device": "tmpfs", "o": "size=64m"},
                "labels": {"team": "web"},
            },
        },
        {"name": "db", "dockerVolumeConfiguration": {"scope": "shared", "autoprovision": True}},
    ],
    APP
    | {
        "mountPoints": [
            {"sourceVolume": "data", "containerPath": "/data"},
            {"sourceVolume": "logs", "containerPath": "/var/log/app/", "readOnly": True},
            {"sourceVolume": "cache", "containerPath": "/cache"},
            {"sourceVolume": "db", "containerPath": "/var/lib/db"},
        ]
    },
    SIDE | {"volumesFrom": [{"sourceContainer": "app", "readOnly": True}]},
)


def test_every_kind_parses_as_written_for_aws() -> None:
    td, notes = parse_register_document(FULL)
    assert notes == []
    data, logs, cache, db = td.volumes
    assert (data.name, data.HasField("host"), data.HasField("docker_volume_configuration")) == (
        "data", False, False,
    )  # fmt: skip
    assert logs.host.source_path == "/srv/logs/app"  # normalized
    assert cache.docker_volume_configuration.scope == pb.VOLUME_SCOPE_TASK
    assert dict(cache.docker_volume_configuration.driver_opts) == {
        "type": "tmpfs", "device": "tmpfs", "o": "size=64m",
    }  # fmt: skip
    assert dict(cache.docker_volume_configuration.labels) == {"team": "web"}
    assert (db.docker_volume_configuration.scope, db.docker_volume_configuration.autoprovision) == (
        pb.VOLUME_SCOPE_SHARED, True,
    )  # fmt: skip
    app, side = td.container_definitions
    assert [(m.source_volume, m.container_path, m.read_only) for m in app.mount_points] == [
        ("data", "/data", False),
        ("logs", "/var/log/app", True),
        ("cache", "/cache", False),
        ("db", "/var/lib/db", False),
    ]
    assert [(v.source_container, v.read_only) for v in side.volumes_from] == [("app", True)]


def test_describe_output_nulls_and_empty_host_read_as_absent() -> None:
    td, _ = parse_register_document(
        doc(
            [
                {
                    "name": "data",
                    "host": {"sourcePath": None},
                    "dockerVolumeConfiguration": None,
                    "efsVolumeConfiguration": None,
                    "fsxWindowsFileServerConfiguration": None,
                    "configuredAtLaunch": False,
                }
            ],
            APP | {"mountPoints": [{"sourceVolume": "data", "containerPath": "/d", "readOnly": None}]},
        )
    )
    (volume,) = td.volumes
    assert not volume.HasField("host") and not volume.HasField("docker_volume_configuration")


def test_autoprovision_with_task_scope_is_kept_with_a_note() -> None:
    _, notes = parse_register_document(
        doc([{"name": "v", "dockerVolumeConfiguration": {"autoprovision": True}}])
    )
    assert notes == [f"volumes[0].{AUTOPROVISION_NOTE}"]


def _mount(path: str = "/d", volume: str = "v", **more: Any) -> dict[str, Any]:
    return APP | {"mountPoints": [{"sourceVolume": volume, "containerPath": path}]} | more


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (doc([{"name": "v", "efsVolumeConfiguration": {"fileSystemId": "fs-1"}}]),
         "volumes[0].efsVolumeConfiguration.fileSystemId 'fs-1' is invalid"),
        (doc([{"name": "v", "efsVolumeConfiguration": {"fileSystemId": EFS_ID,
                                                       "authorizationConfig": {"accessPointId": "fsap-1"}}}]),
         "volumes[0].efsVolumeConfiguration.authorizationConfig.accessPointId is refused: an EFS access "
         "point needs Amazon's efs-utils"),
        (doc([{"name": "v", "efsVolumeConfiguration": {"fileSystemId": EFS_ID, "rootDirectory": "data"}}]),
         "volumes[0].efsVolumeConfiguration.rootDirectory 'data' is invalid"),
        (doc([{"name": "v", "efsVolumeConfiguration": {"fileSystemId": EFS_ID, "transitEncryption": "yes"}}]),
         "volumes[0].efsVolumeConfiguration.transitEncryption: Input should be 'ENABLED' or 'DISABLED'"),
        (doc([{"name": "v", "host": {"sourcePath": "/srv"},
               "efsVolumeConfiguration": {"fileSystemId": EFS_ID}}]),
         "volumes[0]: set one of host.sourcePath, dockerVolumeConfiguration and efsVolumeConfiguration"),
        (doc([{"name": "v", "fsxWindowsFileServerConfiguration": {"fileSystemId": "fs-1"}}]),
         "volumes[0].fsxWindowsFileServerConfiguration is refused: FSx for Windows File Server volumes "
         "need Windows hosts"),
        (doc([{"name": "v", "configuredAtLaunch": True}]),
         "volumes[0].configuredAtLaunch is refused: a volume configured at launch is attached by ECS"),
        (doc([{"name": "v", "host": {"sourcePath": "/srv"}, "dockerVolumeConfiguration": {}}]),
         "volumes[0]: set one of host.sourcePath, dockerVolumeConfiguration and efsVolumeConfiguration"),
        (doc([{"name": "v", "host": {"sourcePath": "srv/data"}}]), "volumes[0].host.sourcePath 'srv/data'"),
        (doc([{"name": "v", "host": {"sourcePath": "/srv/../etc"}}]), "without '..'"),
        (doc([{"name": "v", "host": {"sourcePath": "/srv:/etc"}}]), "without '..', ':'"),
        (doc([{"name": "v", "host": {"sourcePath": "/srv\n"}}]), "control characters"),
        (doc([{"name": "v", "host": {"sourcePath": "/" + "a" * 5000}}]), "volumes[0].host.sourcePath"),
        (doc([{"name": "v", "dockerVolumeConfiguration": {"scope": "global"}}]),
         "volumes[0].dockerVolumeConfiguration.scope: Input should be 'task' or 'shared'"),
        (doc([{"name": "v", "nfs": {}}]), "volumes[0].nfs: unknown field 'nfs'"),
        (doc([{"name": "a b"}]), "volumes[0].name 'a b' is invalid"),
        (doc([{"name": ""}]), "volumes[0].name '' is invalid"),
        (doc([{"name": "v"}, {"name": "v"}]), "volumes[1].name v is used by another volume"),
        (doc([{"name": "_v", "dockerVolumeConfiguration": {"scope": "shared"}}]),
         "volumes[0].name '_v' is invalid for scope shared"),
        (doc([{"name": "v", "dockerVolumeConfiguration": {"driver": "bad driver"}}]),
         "volumes[0].dockerVolumeConfiguration.driver 'bad driver' is invalid"),
        (doc([{"name": "v", "dockerVolumeConfiguration": {"labels": {"berth.task-id": "x"}}}]),
         "volumes[0].dockerVolumeConfiguration.labels: key 'berth.task-id' is reserved"),
        (doc([{"name": "v", "dockerVolumeConfiguration": {"driverOpts": {"o": "a\nb"}}}]),
         "volumes[0].dockerVolumeConfiguration.driverOpts['o']: the value must be"),
        (doc([{"name": "v", "dockerVolumeConfiguration": {"driverOpts": {f"k{i}": "v" for i in range(65)}}}]),
         "volumes[0].dockerVolumeConfiguration.driverOpts"),
        (doc([{"name": f"v{i}"} for i in range(101)]), "volumes has 101 entries: the limit is 100"),
        (doc("data"), "volumes must be a JSON array of objects"),
        (doc(["data"]), "volumes[0]: expected a JSON object"),
        (doc([{"name": "v"}], _mount(volume="w")),
         "containerDefinitions[0].mountPoints[0].sourceVolume 'w' names no volume of the task definition "
         "(volumes: v)"),
        (doc([], _mount()), "(it has no volumes)"),
        (doc([{"name": "v"}], _mount(path="d")), "containerDefinitions[0].mountPoints[0].containerPath 'd'"),
        (doc([{"name": "v"}], _mount(path="/")), "containerPath must not be '/'"),
        (doc([{"name": "v"}], _mount(path="/a/../b")), "without '..'"),
        (doc([{"name": "v"}],
             APP | {"mountPoints": [{"sourceVolume": "v", "containerPath": "/d"},
                                    {"sourceVolume": "v", "containerPath": "/d/"}]}),
         "containerDefinitions[0].mountPoints[1].containerPath /d is mounted twice"),
        (doc([{"name": "v"}], _mount(path="/tmp", linuxParameters={"tmpfs": [TMPFS]})),
         "containerDefinitions[0].mountPoints[0].containerPath /tmp is mounted twice"),
        (doc([{"name": "v"}], APP | {"mountPoints": [{"sourceVolume": "v"}]}),
         "containerDefinitions[0].mountPoints[0].containerPath: required field is missing"),
        (doc([], APP | {"volumesFrom": [{"sourceContainer": "db"}]}),
         "containerDefinitions[0].volumesFrom[0].sourceContainer 'db' names no container"),
        (doc([], APP | {"volumesFrom": [{"sourceContainer": "app"}]}),
         "containerDefinitions[0].volumesFrom[0].sourceContainer 'app' is this container itself"),
        (doc([], APP | {"volumesFrom": [{"sourceContainer": "side"}, {"sourceContainer": "side"}]}, SIDE),
         "containerDefinitions[0].volumesFrom[1].sourceContainer 'side' is listed twice"),
        (doc([], APP | {"volumesFrom": [{"sourceContainer": "side"}]},
             SIDE | {"volumesFrom": [{"sourceContainer": "app"}]}),
         "containerDefinitions[0].volumesFrom goes round in a circle: app -> side -> app"),
    ],
)  # fmt: skip
def test_refused_in_one_line_naming_the_field(document: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        parse_register_document(document)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def _td(volumes: list[pb.Volume], *mounts: pb.MountPoint) -> pb.TaskDefinition:
    return pb.TaskDefinition(
        family="app",
        volumes=volumes,
        container_definitions=[
            pb.ContainerDefinition(
                name="app", image="busybox", memory=64, essential=True, mount_points=mounts
            )
        ],
    )


UNKNOWN_SCOPE = pb.VolumeDockerConfiguration(scope=pb.VolumeScope.ValueType(7))
ACCESS_POINT = pb.VolumeEfsConfiguration(
    file_system_id=EFS_ID, authorization_config=pb.VolumeEfsAuthorization(access_point_id="fsap-1")
)


@pytest.mark.parametrize(
    ("td", "message"),
    [
        (_td([pb.Volume(name="v", host=pb.VolumeHost(source_path="/srv/./data"))]),
         "volumes[0].host.sourcePath '/srv/./data' is not normalized: write it as '/srv/data'"),
        (_td([pb.Volume(name="v")], pb.MountPoint(source_volume="v", container_path="/d//e")),
         "containerDefinitions[0].mountPoints[0].containerPath '/d//e' is not normalized"),
        (_td([pb.Volume(name="v", docker_volume_configuration=UNKNOWN_SCOPE)]),
         "volumes[0].dockerVolumeConfiguration.scope 7 is unknown"),
        (_td([pb.Volume(name="v", host=pb.VolumeHost(source_path="/a"),
                        docker_volume_configuration=pb.VolumeDockerConfiguration())]),
         "set one of"),
        (_td([pb.Volume(name="v", efs_volume_configuration=ACCESS_POINT)]),
         "volumes[0].efsVolumeConfiguration.authorizationConfig.accessPointId is refused"),
    ],
)  # fmt: skip
def test_a_grpc_client_is_checked_too(td: pb.TaskDefinition, message: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        validate_task_definition(td)
    assert message in str(error.value)


def test_the_round_trip_shows_ecs_shape_and_registers_unchanged() -> None:
    td, _ = parse_register_document(FULL)
    stored = pb.TaskDefinition()
    stored.CopyFrom(td)
    stored.revision, stored.status = 3, pb.ACTIVE
    shown = json.loads(json.dumps(to_ecs_document(stored)))
    assert shown["volumes"] == [
        {"name": "data"},
        {"name": "logs", "host": {"sourcePath": "/srv/logs/app"}},
        {
            "name": "cache",
            "dockerVolumeConfiguration": {
                "scope": "task",
                "driver": "local",
                "driverOpts": {"device": "tmpfs", "o": "size=64m", "type": "tmpfs"},
                "labels": {"team": "web"},
            },
        },
        {"name": "db", "dockerVolumeConfiguration": {"scope": "shared", "autoprovision": True}},
    ]
    app, side = shown["containerDefinitions"]
    assert app["mountPoints"][1] == {
        "sourceVolume": "logs",
        "containerPath": "/var/log/app",
        "readOnly": True,
    }
    assert side["volumesFrom"] == [{"sourceContainer": "app", "readOnly": True}]
    again, _ = parse_register_document(shown)
    assert again == td


# -- the host-path policy ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "prefix", "inside"),
    [
        ("/srv/data", "/srv/data", True),
        ("/srv/data/app", "/srv/data", True),
        ("/srv/database", "/srv/data", False),  # a string prefix, not a component prefix
        ("/srv", "/srv/data", False),
        ("/etc/passwd", "/", True),
        ("/", "/srv", False),
    ],
)
def test_prefixes_compare_by_path_components(path: str, prefix: str, inside: bool) -> None:
    assert under(path, prefix) is inside


def _host(path: str) -> pb.TaskDefinition:
    td, _ = parse_register_document(doc([{"name": "v", "host": {"sourcePath": path}}], _mount()))
    return td


def test_refusals_name_the_policy_and_the_flag() -> None:
    assert host_path_refusal(_host("/srv/data"), ()) == (
        "volumes[0].host.sourcePath /srv/data is refused by the host-path policy: the control plane "
        "allows no host paths (start it with --allow-host-path PREFIX)"
    )
    assert host_path_refusal(_host("/srv/database"), ("/srv/data", "/opt")) == (
        "volumes[0].host.sourcePath /srv/database is refused by the host-path policy: it is under none of "
        "/srv/data, /opt (--allow-host-path)"
    )
    assert host_path_refusal(_host("/srv/data/x"), ("/srv/data",)) is None


@pytest.mark.parametrize(
    ("options", "judged"),
    [
        ({"type": "none", "o": "bind", "device": "/etc"}, "/etc"),
        ({"o": "rbind,ro", "device": "/var/run"}, "/var/run"),
        ({"type": "ext4", "device": "/dev/sda1"}, "/dev/sda1"),
        ({"type": "nfs", "o": "addr=10.0.0.2,nfsvers=4.1", "device": ":/export"}, None),
        ({"type": "tmpfs", "device": "tmpfs"}, None),
        ({"type": "nfs", "o": "bind", "device": "/etc"}, "/etc"),
        ({}, None),
    ],
)
def test_a_local_volume_that_binds_a_node_path_is_judged_like_a_host_path(
    options: dict[str, str], judged: str | None
) -> None:
    td, _ = parse_register_document(
        doc([{"name": "v", "dockerVolumeConfiguration": {"driver": "local", "driverOpts": options}}])
    )
    found = host_paths(td)
    assert found == ([("volumes[0].dockerVolumeConfiguration.driverOpts.device", judged)] if judged else [])
    if judged:
        assert "refused by the host-path policy" in (host_path_refusal(td, ()) or "")


def test_a_relative_bind_device_is_refused() -> None:
    with pytest.raises(InvalidArgument, match=r"driverOpts\.device 'etc' is invalid"):
        parse_register_document(
            doc([{"name": "v", "dockerVolumeConfiguration": {"driverOpts": {"o": "bind", "device": "etc"}}}])
        )


def test_the_flag_is_repeatable_and_normalized() -> None:
    settings = parse_args(
        ["--data-dir", "/tmp/x", "--allow-host-path", "/srv//data/", "--allow-host-path", "/opt"]
    )
    assert settings.allowed_host_paths == ("/srv/data", "/opt")
    assert parse_args(["--data-dir", "/tmp/x"]).allowed_host_paths == ()
    with pytest.raises(ValueError, match="--allow-host-path"):
        normalize_prefixes(["relative"])


def test_a_bad_flag_value_stops_the_control_plane(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--data-dir", "/tmp/x", "--allow-host-path", "/srv/../etc"])
    assert "--allow-host-path" in capsys.readouterr().err


def test_the_help_mentions_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    assert "--allow-host-path PREFIX" in capsys.readouterr().out


async def test_registration_refuses_and_writes_nothing_then_allows_under_the_flag() -> None:
    store = MemoryStore()
    with pytest.raises(InvalidArgument, match="refused by the host-path policy"):
        await TaskDefinitions(store).register(_host("/srv/data"))
    assert (await store.scan(keys.TASKDEFS, pb.TaskDefinition))[0] == []
    policy = HostPathPolicy(normalize_prefixes(["/srv"]))
    registered = await TaskDefinitions(store, host_paths=policy).register(_host("/srv/data"))
    assert registered.revision == 1


# -- the agent: what Docker is asked for ------------------------------------------------------


def _assignment(task_id: str = "t1") -> agent_pb.TaskAssignment:
    td, _ = parse_register_document(FULL)
    td.revision = 1
    return agent_pb.TaskAssignment(task_id=task_id, task_definition=td)


def test_containers_mount_their_volumes_and_take_a_siblings() -> None:
    app, side = container_specs(_assignment(), "n1")
    assert app.create_kwargs()["volumes"] == [
        f"{task_volume_name('t1', 'data')}:/data:rw",
        "/srv/logs/app:/var/log/app:ro",
        f"{task_volume_name('t1', 'cache')}:/cache:rw",
        "db:/var/lib/db:rw",  # shared: the node's volume of that name
    ]
    assert "volumes_from" not in app.create_kwargs()
    assert side.create_kwargs()["volumes_from"] == [f"{container_name('t1', 'app')}:ro"]
    assert "volumes" not in side.create_kwargs()


def test_volume_specs_name_and_label_the_tasks_own_and_keep_shared_ones_apart() -> None:
    data, cache, db = volume_specs(_assignment(), "n1")  # no spec for the host path
    assert data == VolumeSpec(
        name="berth-t1-data",
        labels={
            "berth.managed": "true",
            "berth.volume-name": "data",
            "berth.task-id": "t1",
            "berth.node-id": "n1",
        },
    )
    assert (cache.driver, cache.driver_opts["type"], cache.labels["team"]) == ("local", "tmpfs", "web")
    assert cache.labels["berth.task-id"] == "t1"
    assert (db.name, db.shared, db.autoprovision) == ("db", True, True)
    assert "berth.task-id" not in db.labels  # never removed with a task


def test_a_volume_no_container_mounts_is_not_made() -> None:
    assignment = _assignment()
    del assignment.task_definition.container_definitions[0].mount_points[:]
    assert volume_specs(assignment, "n1") == []


def test_long_volume_names_stay_inside_dockers_limits() -> None:
    name = task_volume_name("a" * 36, "v" * 255)
    assert len(name) <= 200 and name != task_volume_name("a" * 36, "v" * 254 + "w")


def test_a_container_is_created_after_the_containers_it_takes_volumes_from() -> None:
    document = doc(
        [],
        APP | {"volumesFrom": [{"sourceContainer": "side"}]},
        SIDE | {"volumesFrom": [{"sourceContainer": "base"}]},
        {"name": "base", "image": "busybox", "memory": 16, "essential": False},
    )
    td, _ = parse_register_document(document)
    specs = container_specs(agent_pb.TaskAssignment(task_id="t1", task_definition=td), "n1")
    assert [s.definition_name for s in creation_order(specs)] == ["base", "side", "app"]
    assert [s.definition_name for s in specs] == ["app", "side", "base"]  # start order unchanged


class FakeVolume:
    def __init__(self, engine: FakeVolumes, name: str, driver: str) -> None:
        self.name, self.attrs, self._engine = name, {"Driver": driver}, engine

    def remove(self, force: bool = False) -> None:
        self._engine.removed.append(self.name)


class FakeVolumes:
    """The parts of the SDK's `client.volumes` the agent uses."""

    def __init__(self, **existing: str) -> None:
        self.existing = existing  # name -> driver
        self.created: list[dict[str, Any]] = []
        self.removed: list[str] = []
        self.listed: list[dict[str, Any]] = []

    def get(self, name: str) -> FakeVolume:
        if name not in self.existing:
            raise docker.errors.NotFound(f"no such volume: {name}")
        return FakeVolume(self, name, self.existing[name])

    def create(self, **options: Any) -> None:
        self.created.append(options)

    def list(self, filters: dict[str, Any]) -> list[FakeVolume]:
        self.listed.append(filters)
        return [FakeVolume(self, "berth-t1-data", "local")]


class FakeClient:
    def __init__(self, volumes: FakeVolumes) -> None:
        self.volumes = volumes


def test_ensure_makes_the_tasks_volumes_and_a_missing_autoprovisioned_shared_one() -> None:
    volumes = FakeVolumes()
    ensure_volumes(FakeClient(volumes), volume_specs(_assignment(), "n1"))
    assert [v["name"] for v in volumes.created] == ["berth-t1-data", "berth-t1-cache", "db"]
    assert volumes.created[1]["driver_opts"] == {"type": "tmpfs", "device": "tmpfs", "o": "size=64m"}


def test_an_existing_shared_volume_is_used_as_it_is() -> None:
    volumes = FakeVolumes(db="local")
    ensure_volumes(FakeClient(volumes), [VolumeSpec(name="db", shared=True)])
    assert volumes.created == []


@pytest.mark.parametrize(
    ("spec", "existing", "reason"),
    [
        (VolumeSpec(name="db", shared=True), {},
         "CannotCreateContainerError: shared volume db does not exist on this node and autoprovision is "
         "false"),
        (VolumeSpec(name="db", shared=True, autoprovision=True), {"db": "rexray/ebs"},
         "CannotCreateContainerError: shared volume db exists with driver rexray/ebs, the task definition "
         "asks for local"),
    ],
)  # fmt: skip
def test_a_shared_volume_that_cannot_be_used_fails_the_start(
    spec: VolumeSpec, existing: dict[str, str], reason: str
) -> None:
    volumes = FakeVolumes(**existing)
    with pytest.raises(StartFailed, match=reason):
        ensure_volumes(FakeClient(volumes), [spec])
    assert volumes.created == []


def test_removal_takes_only_the_tasks_own_volumes() -> None:
    volumes = FakeVolumes()
    remove_task_volumes(FakeClient(volumes), "t1")
    assert volumes.listed == [{"label": "berth.task-id=t1"}]
    assert volumes.removed == ["berth-t1-data"]


# -- EFS ----------------------------------------------------------------------------------------


def _efs(**config: Any) -> dict[str, Any]:
    volume = {"name": "shared", "efsVolumeConfiguration": {"fileSystemId": EFS_ID} | config}
    return doc([volume], APP | {"mountPoints": [{"sourceVolume": "shared", "containerPath": "/mnt/efs"}]})


def test_efs_is_accepted_with_a_note_saying_what_berth_does() -> None:
    td, notes = parse_register_document(_efs(rootDirectory="/app//data/"))
    assert td.volumes[0].efs_volume_configuration.root_directory == "/app/data"
    assert notes == [
        f"volumes[0].efsVolumeConfiguration: Berth mounts {EFS_ID}.efs.REGION.amazonaws.com:/app/data over "
        "NFSv4.1 from the node (REGION: the agent's --aws-region or AWS_REGION); the node must reach the "
        "file system's mount targets"
    ]


def test_efs_says_what_it_does_not_apply() -> None:
    _, notes = parse_register_document(
        _efs(transitEncryption="DISABLED", transitEncryptionPort=2049, authorizationConfig={"iam": "ENABLED"})
    )
    assert notes[0].endswith("; not applied: IAM authorization")


def test_efs_transit_encryption_is_refused_not_downgraded_to_plain_nfs() -> None:
    with pytest.raises(InvalidArgument) as refused:
        parse_register_document(_efs(transitEncryption="ENABLED"))
    assert str(refused.value) == (
        "volumes[0].efsVolumeConfiguration.transitEncryption ENABLED is refused: Berth mounts EFS as plain "
        "NFS (TLS needs Amazon's efs-utils mount helper, which Berth does not run): set DISABLED, or mount "
        "the file system yourself"
    )
    td, _ = parse_register_document(_efs(transitEncryption="DISABLED"))
    td.volumes[0].efs_volume_configuration.transit_encryption = True  # a gRPC client skips the CLI
    with pytest.raises(InvalidArgument, match="transitEncryption ENABLED is refused"):
        validate_task_definition(td)


def test_efs_round_trips() -> None:
    td, _ = parse_register_document(
        _efs(rootDirectory="/", transitEncryption="DISABLED", authorizationConfig={"iam": "DISABLED"})
    )
    shown = json.loads(json.dumps(to_ecs_document(td)))
    assert shown["volumes"] == [
        {
            "name": "shared",
            "efsVolumeConfiguration": {
                "fileSystemId": EFS_ID,
                "rootDirectory": "/",
                "transitEncryption": "DISABLED",
                "authorizationConfig": {"iam": "DISABLED"},
            },
        }
    ]
    again, _ = parse_register_document(shown)
    assert again == td


def _efs_assignment() -> agent_pb.TaskAssignment:
    td, _ = parse_register_document(_efs(rootDirectory="/exports"))
    return agent_pb.TaskAssignment(task_id="t1", task_definition=td)


def test_the_agent_mounts_efs_over_nfs_with_its_region() -> None:
    (spec,) = volume_specs(_efs_assignment(), "n1", "eu-west-1")
    assert spec.name == "berth-t1-shared" and not spec.shared
    assert spec.driver == "local"
    assert spec.driver_opts == {
        "type": "nfs",
        "o": f"addr={EFS_ID}.efs.eu-west-1.amazonaws.com,nfsvers=4.1,rsize=1048576,wsize=1048576,hard,"
        "timeo=600,retrans=2,noresvport",
        "device": ":/exports",
    }
    assert spec.labels["berth.task-id"] == "t1"  # removed with the task
    (app,) = container_specs(_efs_assignment(), "n1")
    assert app.create_kwargs()["volumes"] == ["berth-t1-shared:/mnt/efs:rw"]


def test_without_a_region_the_start_fails_saying_so() -> None:
    with pytest.raises(StartFailed, match="needs the node's AWS region: start the agent with --aws-region"):
        volume_specs(_efs_assignment(), "n1", "")


AGENT = ["--server", "127.0.0.1:7400", "--data-dir", "/tmp/x", "--name", "n1", "--address", "10.0.0.1"]


def test_the_agents_region_comes_from_the_flag_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    assert agent_args(AGENT)[0].aws_region == ""
    monkeypatch.setenv("AWS_REGION", "us-gov-west-1")
    assert agent_args(AGENT)[0].aws_region == "us-gov-west-1"
    assert agent_args([*AGENT, "--aws-region", "eu-central-2"])[0].aws_region == "eu-central-2"


def test_a_bad_region_stops_the_agent(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        agent_args([*AGENT, "--aws-region", "eu-west-1.evil.example"])
    assert "--aws-region 'eu-west-1.evil.example' is not an AWS region" in capsys.readouterr().err


# -- task volumes left behind ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("volume", "swept"),
    [
        (("berth-gone-data", "gone", 1000.0), True),  # its task has no container here, and it is old
        (("berth-live-data", "live", 1000.0), False),  # its task still has containers
        (("berth-gone-new", "gone", 1000.0 + 3600 - 60), False),  # young: a start may be in flight
        (("db", "", 1000.0), False),  # shared: no task id
    ],
)
def test_stale_task_volumes(volume: tuple[str, str, float], swept: bool) -> None:
    assert stale_task_volumes([volume], {"live"}, now=1000.0 + 3600) == ([volume[0]] if swept else [])


class SweptVolume:
    def __init__(self, engine: list[str], name: str, task_id: str, created: str) -> None:
        self.name = name
        self.attrs = {"Labels": {"berth.task-id": task_id} if task_id else None, "CreatedAt": created}
        self._engine = engine

    def remove(self, force: bool = False) -> None:
        self._engine.append(self.name)


def test_the_sweep_removes_only_old_volumes_of_tasks_gone_from_the_node() -> None:
    removed: list[str] = []
    listed: list[dict[str, Any]] = []

    class Volumes:
        def list(self, filters: dict[str, Any]) -> list[SweptVolume]:
            listed.append(filters)
            return [
                SweptVolume(removed, "berth-gone-data", "gone", "2026-01-01T00:00:00Z"),
                SweptVolume(removed, "berth-live-data", "live", "2026-01-01T00:00:00Z"),
                SweptVolume(removed, "berth-odd-data", "odd", "yesterday"),  # unreadable: kept
            ]

    class Client:
        volumes = Volumes()

    now = datetime.datetime(2026, 1, 1, 1, tzinfo=datetime.UTC).timestamp()
    assert sweep_task_volumes(Client(), "n1", {"live"}, now) == ["berth-gone-data"]
    assert removed == ["berth-gone-data"]
    assert listed == [{"label": ["berth.managed=true", "berth.node-id=n1"]}]
