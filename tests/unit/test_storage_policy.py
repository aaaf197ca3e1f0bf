"""What of the node a task definition may mount: the volume-driver policy's table (default,
--allow-volume-driver, --allow-network-volumes), shared names reserved, and the host-path
and driver policy judged again when a task is run or a service takes a definition."""

from __future__ import annotations

import re
from typing import Any

import pytest

from berth.errors import InvalidArgument
from berth.taskdef import parse_register_document, validate_task_definition
from berth.v1 import resources_pb2 as pb
from controlplane.cache import ClusterCache
from controlplane.main import parse_args
from controlplane.operations.clusters import Clusters, ensure_default_cluster
from controlplane.operations.services import ServiceChange, Services, ServiceSpec
from controlplane.operations.taskdefs import TaskDefinitions
from controlplane.operations.tasks import Tasks
from controlplane.store import keys
from controlplane.store.memory import MemoryStore
from controlplane.validation.host_paths import HostPathPolicy
from controlplane.validation.volume_drivers import volume_driver_refusal
from controlplane.vips import VipAllocator

APP = {
    "name": "app",
    "image": "busybox",
    "memory": 64,
    "mountPoints": [{"sourceVolume": "v", "containerPath": "/v"}],
}
WHERE = "volumes[0].dockerVolumeConfiguration"


def _docker_volume(config: dict[str, Any], name: str = "v") -> pb.TaskDefinition:
    app = APP | {"mountPoints": [{"sourceVolume": name, "containerPath": "/v"}]}
    td, _ = parse_register_document(
        {
            "family": "app",
            "volumes": [{"name": name, "dockerVolumeConfiguration": config}],
            "containerDefinitions": [app],
        }
    )
    return td


def _local(**options: str) -> pb.TaskDefinition:
    return _docker_volume({"driver": "local", "driverOpts": options})


@pytest.mark.parametrize(
    ("options", "refused"),
    [
        ({}, None),
        ({"type": "tmpfs", "device": "tmpfs"}, None),
        ({"type": "tmpfs", "device": "tmpfs", "o": "size=64m,mode=1777,uid=1000"}, None),
        ({"type": "tmpfs", "device": "tmpfs", "o": "size=64g"}, None),
        ({"type": "tmpfs", "device": "tmpfs", "o": "size=65g"}, "o 'size=65g' (tmpfs takes size up to 64g"),
        ({"type": "tmpfs", "device": "tmpfs", "o": "size=50%"}, "o 'size=50%'"),
        ({"type": "tmpfs", "device": "tmpfs", "o": "lowerdir=/"}, "o 'lowerdir=/'"),
        ({"type": "none", "o": "bind", "device": "/srv/data"}, None),  # the host-path policy judges it
        ({"o": "rbind,ro,nosuid", "device": "/srv/data"}, None),
        (
            {"type": "none", "o": "bind,lowerdir=/", "device": "/srv/data"},
            "o 'lowerdir=/' (a bind takes mount",
        ),
        (
            {"type": "overlay", "device": "/srv/o", "o": "lowerdir=/,upperdir=/u,workdir=/w"},
            "type 'overlay'",
        ),
        ({"type": "ext4", "device": "/dev/sda1"}, "type 'ext4'"),
        ({"type": "none", "device": "/srv/data"}, "type 'none'"),
        ({"device": "/srv/data"}, "without a type (a bind needs o=bind and a device)"),
        ({"mountpoint": "/etc"}, "key 'mountpoint' (the local driver takes type, o and device)"),
    ],
)
def test_the_default_allows_plain_tmpfs_and_binds_only(options: dict[str, str], refused: str | None) -> None:
    reason = volume_driver_refusal(_local(**options))
    if refused is None:
        assert reason is None
        return
    assert reason is not None and reason.startswith(f"{WHERE}.driverOpts {refused}")
    assert reason.endswith(
        "is refused by the volume-driver policy: mount(2) options that reach the node (the default "
        "allows only the local driver without options, type tmpfs or a bind of an allowed host path; "
        "start the control plane with --allow-volume-driver local)"
    )
    assert volume_driver_refusal(_local(**options), drivers=("local",)) is None  # the operator's trust


@pytest.mark.parametrize("kind", ["nfs", "nfs4", "cifs", "smb3"])
def test_network_volumes_need_their_flag(kind: str) -> None:
    td = _local(type=kind, device=":/", o="addr=127.0.0.1")
    assert volume_driver_refusal(td) == (
        f"{WHERE}.driverOpts type '{kind}' is refused by the volume-driver policy: a network volume makes "
        "the node's kernel mount any server the task names (start the control plane with "
        "--allow-network-volumes)"
    )
    assert volume_driver_refusal(td, network=True) is None


def test_another_driver_needs_its_flag_whatever_its_options() -> None:
    td = _docker_volume({"driver": "local-persist", "driverOpts": {"mountpoint": "/etc"}})
    assert volume_driver_refusal(td) == (
        f"{WHERE}.driver local-persist is refused by the volume-driver policy: a volume plugin acts with the "
        "node's privileges (the default allows only the local driver without options, type tmpfs or a bind "
        "of an allowed host path; start the control plane with --allow-volume-driver local-persist)"
    )
    assert volume_driver_refusal(td, drivers=("local-persist",)) is None
    assert volume_driver_refusal(td, drivers=("local",)) is not None


def test_efs_is_a_network_volume_the_default_allows() -> None:
    td, _ = parse_register_document(
        {
            "family": "app",
            "volumes": [{"name": "v", "efsVolumeConfiguration": {"fileSystemId": "fs-0123456789abcdef0"}}],
            "containerDefinitions": [APP],
        }
    )
    HostPathPolicy().check(td)


def test_a_bind_allowed_by_the_driver_policy_is_still_judged_by_the_host_path_policy() -> None:
    td = _local(type="none", o="bind", device="/etc")
    with pytest.raises(InvalidArgument, match=r"driverOpts\.device /etc is refused by the host-path policy"):
        HostPathPolicy(volume_drivers=("local",)).check(td)
    HostPathPolicy(allowed=("/etc",)).check(td)


@pytest.mark.parametrize("name", ["berth-0123456789abcdef0123456789abcdef-data", "Berth-x", "berth-"])
def test_a_shared_volume_may_not_take_a_task_volumes_name(name: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        _docker_volume({"scope": "shared"}, name=name)
    assert str(refused.value) == (
        f"volumes[0].name {name!r} is reserved for scope shared: names starting with 'berth-' are Berth's "
        "own task volumes"
    )
    td = _docker_volume({"scope": "shared"}, name="data")
    td.volumes[0].name = name  # a gRPC client skips the CLI
    td.container_definitions[0].mount_points[0].source_volume = name
    with pytest.raises(InvalidArgument, match="is reserved for scope shared"):
        validate_task_definition(td)
    _docker_volume({"scope": "task"}, name="berth-x")  # a task volume's own name is Berth's to make


def test_the_flags_reach_the_settings(capsys: pytest.CaptureFixture[str]) -> None:
    settings = parse_args(
        [
            *("--data-dir", "/tmp/x", "--allow-volume-driver", "local-persist"),
            *("--allow-volume-driver", "local", "--allow-network-volumes"),
        ]
    )
    assert (settings.allowed_volume_drivers, settings.allow_network_volumes) == (
        ("local-persist", "local"),
        True,
    )
    assert (
        parse_args(["--data-dir", "/tmp/x"]).allowed_volume_drivers,
        parse_args(["--data-dir", "/x"]).allow_network_volumes,
    ) == ((), False)
    with pytest.raises(SystemExit):
        parse_args(["--data-dir", "/tmp/x", "--allow-volume-driver", "-bad name"])
    assert "--allow-volume-driver" in capsys.readouterr().err


async def test_registration_refuses_and_writes_nothing() -> None:
    store = MemoryStore()
    with pytest.raises(InvalidArgument, match="refused by the volume-driver policy"):
        await TaskDefinitions(store).register(_local(type="overlay", device="/srv/o", o="lowerdir=/"))
    assert (await store.scan(keys.TASKDEFS, pb.TaskDefinition))[0] == []


async def test_a_narrowed_policy_holds_back_revisions_registered_under_a_wider_one(
    store: MemoryStore, cache: ClusterCache
) -> None:
    await ensure_default_cluster(store)
    host, _ = parse_register_document(
        {
            "family": "app",
            "volumes": [{"name": "v", "host": {"sourcePath": "/srv/data"}}],
            "containerDefinitions": [APP],
        }
    )
    await TaskDefinitions(store, host_paths=HostPathPolicy(("/srv",))).register(host)
    # The control plane restarted with --allow-host-path /opt only.
    narrowed = TaskDefinitions(store, host_paths=HostPathPolicy(("/opt",)))
    clusters = Clusters(store, cache)
    tasks = Tasks(store, cache, clusters, narrowed)
    services = Services(store, cache, clusters, narrowed, VipAllocator(store, "10.96.0.0/24"))
    refusal = re.escape(
        "volumes[0].host.sourcePath /srv/data is refused by the host-path policy: it is under none of /opt "
        "(--allow-host-path)"
    )
    with pytest.raises(InvalidArgument, match=refusal):
        await tasks.run("default", "app:1")
    with pytest.raises(InvalidArgument, match=refusal):
        await services.create(
            ServiceSpec(cluster="default", name="api", task_definition="app", desired_count=1)
        )
    # A service made before the narrowing cannot move to the old revision either.
    plain, _ = parse_register_document(
        {"family": "plain", "containerDefinitions": [APP | {"mountPoints": []}]}
    )
    await narrowed.register(plain)
    await services.create(
        ServiceSpec(cluster="default", name="web", task_definition="plain", desired_count=0)
    )
    with pytest.raises(InvalidArgument, match=refusal):
        await services.update("default", "web", ServiceChange(task_definition="app:1"))
    assert [k for k in (await store.scan(keys.TASKS, pb.Task))[0]] == []
