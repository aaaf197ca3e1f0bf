"""ECS's storage on real Docker: an empty volume two containers share (one writes, the other
reads; read-only refuses writes), volumesFrom, a task-scoped Docker volume removed with its
task while a shared one survives, a missing shared volume without autoprovision failing the
start, host paths judged by the control plane's --allow-host-path policy (and a symbolic link
on an allowed path failing the start), local volume options and drivers judged by the
volume-driver policy, a shared volume naming a task's own refused, and an EFS volume accepted
with its note and failing the start on a node without an AWS region (no NFS traffic), while
transitEncryption ENABLED is refused."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from agent.runtime.docker_volumes import SWEEP_MIN_AGE, sweep_task_volumes
from berth.testing.cli import Berth, id_of
from berth.testing.daemons import AgentProcess, ControlPlaneProcess
from berth.testing.waiting import wait_until

IMAGE = "berth-busybox:2"
SLEEP = {"entryPoint": ["sh", "-c"], "stopTimeout": 2}
HOST_FILE = "from-the-host.txt"


@pytest.fixture(scope="module")
def host_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The only host path this module's control plane allows (pytest removes it)."""
    root = tmp_path_factory.mktemp("hostpaths")
    (root / "allowed").mkdir()
    (root / "allowed" / HOST_FILE).write_text("hello from the host\n")
    return root / "allowed"


@pytest.fixture(scope="module")
def no_aws_region() -> Iterator[None]:
    """The module's agent starts without a region: an EFS volume never makes it mount (no traffic)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("AWS_REGION", raising=False)
        yield


@pytest.fixture(scope="module")
def controlplane(
    tmp_path_factory: pytest.TempPathFactory, host_root: Path, no_aws_region: None
) -> Iterator[ControlPlaneProcess]:
    """Overrides conftest's: the module's agent and CLI use a plane that allows one host path."""
    plane = ControlPlaneProcess(tmp_path_factory.mktemp("cp") / "data", ["--allow-host-path", str(host_root)])
    plane.start()
    yield plane
    plane.stop()


@pytest.fixture()
def engine(docker_engine: str) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=docker_engine)
    yield client
    client.close()


def _document(tmp_path: Path, family: str, volumes: list[Any], containers: list[Any]) -> str:
    path = tmp_path / f"{family}.json"
    path.write_text(json.dumps({"family": family, "volumes": volumes, "containerDefinitions": containers}))
    return f"file://{path}"


def _container(name: str, command: str, essential: bool = True, **more: Any) -> dict[str, Any]:
    return {"name": name, "image": IMAGE, "memory": 32, "essential": essential, "command": [command]} | (
        SLEEP | more
    )


def _run(berth: Berth, cluster: str, family: str) -> str:
    task_id = berth.ok("task", "run", "--cluster", cluster, "--task-definition", family).stdout.strip()
    wait_until(lambda: berth.running_exactly(cluster, 1), 60, f"{family}: 1 RUNNING task")
    return task_id


def _exec(engine: docker.DockerClient, task_id: str, container: str, command: str) -> tuple[int, str]:
    found = engine.containers.get(f"berth-{task_id}-{container}")
    code, output = found.exec_run(["sh", "-c", command])
    return code, output.decode().strip()


def _gone(engine: docker.DockerClient, task_id: str) -> bool:
    return not engine.containers.list(all=True, filters={"label": f"berth.task-id={task_id}"})


def _task_volumes(engine: docker.DockerClient, task_id: str) -> list[str]:
    return [v.name for v in engine.volumes.list(filters={"label": f"berth.task-id={task_id}"})]


def _stop(berth: Berth, cluster: str, task_id: str, engine: docker.DockerClient) -> None:
    berth.ok("task", "stop", task_id, "--cluster", cluster)
    wait_until(lambda: _gone(engine, task_id), 60, f"task {task_id}'s containers removed")


def _remove_volume(engine: docker.DockerClient, name: str) -> None:
    try:
        engine.volumes.get(name).remove(force=True)
    except docker.errors.NotFound:
        pass


def test_an_empty_volume_is_shared_read_only_refuses_writes_and_volumes_from_works(
    berth: Berth, agent: AgentProcess, engine: docker.DockerClient, tmp_path: Path
) -> None:
    berth.ok("cluster", "create", "share")
    containers = [
        _container(
            "writer",
            "echo written-by-writer > /data/note && trap 'exit 0' TERM; sleep 3600 & wait",
            mountPoints=[{"sourceVolume": "shared", "containerPath": "/data"}],
        ),
        _container(
            "reader",
            "trap 'exit 0' TERM; sleep 3600 & wait",
            essential=False,
            mountPoints=[{"sourceVolume": "shared", "containerPath": "/data", "readOnly": True}],
        ),
        # Listed first among those taking volumes, created after the writer all the same.
        _container(
            "taker",
            "trap 'exit 0' TERM; sleep 3600 & wait",
            essential=False,
            volumesFrom=[{"sourceContainer": "writer", "readOnly": True}],
        ),
    ]
    containers.insert(0, containers.pop())  # the taker is defined before the writer
    berth.ok(
        "taskdef",
        "register",
        "--cli-input-json",
        _document(tmp_path, "share", [{"name": "shared"}], containers),
    )
    task_id = _run(berth, "share", "share")
    volume = f"berth-{task_id}-shared"
    try:
        # The engine: one Docker volume of the task's, mounted rw in the writer and ro in the reader.
        writer = engine.api.inspect_container(f"berth-{task_id}-writer")
        reader = engine.api.inspect_container(f"berth-{task_id}-reader")
        taker = engine.api.inspect_container(f"berth-{task_id}-taker")
        assert [(m["Type"], m["Name"], m["Destination"], m["RW"]) for m in writer["Mounts"]] == [
            ("volume", volume, "/data", True)
        ]
        assert [(m["Name"], m["RW"]) for m in reader["Mounts"]] == [(volume, False)]
        assert taker["HostConfig"]["VolumesFrom"] == [f"berth-{task_id}-writer:ro"]
        labels = engine.volumes.get(volume).attrs["Labels"]
        assert (labels["berth.task-id"], labels["berth.volume-name"]) == (task_id, "shared")

        # Inside: the reader sees what the writer wrote, and cannot write.
        wait_until(
            lambda: _exec(engine, task_id, "reader", "cat /data/note") == (0, "written-by-writer"),
            30,
            "the reader sees the writer's file",
        )
        code, output = _exec(engine, task_id, "reader", "touch /data/x")
        assert code != 0 and "Read-only file system" in output
        assert _exec(engine, task_id, "writer", "touch /data/y") == (0, "")
        # volumesFrom: the taker has the writer's volume at the same path, read-only.
        assert _exec(engine, task_id, "taker", "cat /data/note") == (0, "written-by-writer")
        code, output = _exec(engine, task_id, "taker", "touch /data/z")
        assert code != 0 and "Read-only file system" in output

        _stop(berth, "share", task_id, engine)
        wait_until(lambda: not _task_volumes(engine, task_id), 30, "the task's volume removed")
    finally:
        for name in ("writer", "reader", "taker"):
            try:
                engine.containers.get(f"berth-{task_id}-{name}").remove(force=True)
            except docker.errors.NotFound:
                pass
        _remove_volume(engine, volume)


def test_a_task_volume_goes_with_its_task_and_a_shared_one_stays(
    berth: Berth, agent: AgentProcess, engine: docker.DockerClient, tmp_path: Path
) -> None:
    berth.ok("cluster", "create", "scopes")
    shared = f"e2e-shared-{uuid.uuid4().hex[:8]}"  # berth-: reserved for task volumes
    volumes = [
        {"name": "scratch", "dockerVolumeConfiguration": {"scope": "task", "labels": {"purpose": "e2e"}}},
        {"name": shared, "dockerVolumeConfiguration": {"scope": "shared", "autoprovision": True}},
    ]
    app = _container(
        "app",
        "echo kept > /shared/mark && trap 'exit 0' TERM; sleep 3600 & wait",
        mountPoints=[
            {"sourceVolume": "scratch", "containerPath": "/scratch"},
            {"sourceVolume": shared, "containerPath": "/shared"},
        ],
    )
    berth.ok("taskdef", "register", "--cli-input-json", _document(tmp_path, "scopes", volumes, [app]))
    task_id = ""
    try:
        task_id = _run(berth, "scopes", "scopes")
        assert _task_volumes(engine, task_id) == [f"berth-{task_id}-scratch"]
        assert engine.volumes.get(f"berth-{task_id}-scratch").attrs["Labels"]["purpose"] == "e2e"
        kept = engine.volumes.get(shared)
        assert "berth.task-id" not in (kept.attrs["Labels"] or {})
        wait_until(lambda: _exec(engine, task_id, "app", "cat /shared/mark") == (0, "kept"), 30, "mark")

        _stop(berth, "scopes", task_id, engine)
        wait_until(lambda: not _task_volumes(engine, task_id), 30, "the task-scoped volume removed")
        engine.volumes.get(shared)  # still there: NotFound would fail the test

        # A second task finds what the first left in the shared volume.
        second = _run(berth, "scopes", "scopes")
        assert _exec(engine, second, "app", "cat /shared/mark") == (0, "kept")
        _stop(berth, "scopes", second, engine)
    finally:
        if task_id:
            _remove_volume(engine, f"berth-{task_id}-scratch")
        wait_until(lambda: _volume_free(engine, shared), 60, "the shared volume unused")
        _remove_volume(engine, shared)


def _volume_free(engine: docker.DockerClient, name: str) -> bool:
    return not engine.containers.list(all=True, filters={"volume": name})


def test_a_missing_shared_volume_without_autoprovision_fails_the_start(
    berth: Berth, agent: AgentProcess, engine: docker.DockerClient, tmp_path: Path
) -> None:
    berth.ok("cluster", "create", "missing")
    absent = f"e2e-absent-{uuid.uuid4().hex[:8]}"
    volumes = [{"name": absent, "dockerVolumeConfiguration": {"scope": "shared", "autoprovision": False}}]
    app = _container("app", "sleep 5", mountPoints=[{"sourceVolume": absent, "containerPath": "/d"}])
    berth.ok("taskdef", "register", "--cli-input-json", _document(tmp_path, "missing", volumes, [app]))
    try:
        result = berth(
            "task", "run", "--cluster", "missing", "--task-definition", "missing", "--wait", "--timeout", "60"
        )
        assert result.exit_code == 1
        assert (
            "failed to start (TaskFailedToStart: CannotCreateContainerError: shared volume "
            f"{absent} does not exist on this node and autoprovision is false"
        ) in result.stderr
        with pytest.raises(docker.errors.NotFound):
            engine.volumes.get(absent)  # nothing made it
    finally:
        _remove_volume(engine, absent)


def test_a_host_path_outside_the_policy_is_refused_and_nothing_is_written(
    berth: Berth, controlplane: ControlPlaneProcess, host_root: Path, tmp_path: Path
) -> None:
    before = _taskdefs(controlplane)
    for path in ("/etc", f"{host_root}-sibling", f"{host_root}/../x"):
        volumes = [{"name": "host", "host": {"sourcePath": path}}]
        app = _container("app", "true", mountPoints=[{"sourceVolume": "host", "containerPath": "/h"}])
        result = berth(
            "taskdef", "register", "--cli-input-json", _document(tmp_path, "outside", volumes, [app])
        )
        assert result.exit_code == 1, path
        if ".." in path:
            assert "volumes[0].host.sourcePath" in result.stderr and "without '..'" in result.stderr
        else:
            assert result.stderr.strip() == (
                f"error: volumes[0].host.sourcePath {path} is refused by the host-path policy: it is under "
                f"none of {host_root} (--allow-host-path)"
            )
    assert _taskdefs(controlplane) == before, "a refused registration wrote a task definition"


def test_an_allowed_host_path_is_mounted_and_the_container_sees_the_file(
    berth: Berth, agent: AgentProcess, engine: docker.DockerClient, host_root: Path, tmp_path: Path
) -> None:
    berth.ok("cluster", "create", "hostpath")
    volumes = [{"name": "host", "host": {"sourcePath": f"{host_root}/"}}]
    app = _container(
        "app",
        "trap 'exit 0' TERM; sleep 3600 & wait",
        mountPoints=[{"sourceVolume": "host", "containerPath": "/host", "readOnly": True}],
    )
    berth.ok("taskdef", "register", "--cli-input-json", _document(tmp_path, "hostpath", volumes, [app]))
    shown = berth.ok("taskdef", "describe", "hostpath", "-o", "json").json()
    assert shown["volumes"] == [{"name": "host", "host": {"sourcePath": str(host_root)}}]
    task_id = _run(berth, "hostpath", "hostpath")
    try:
        mounts = engine.api.inspect_container(f"berth-{task_id}-app")["Mounts"]
        assert [(m["Type"], m["Source"], m["Destination"], m["RW"]) for m in mounts] == [
            ("bind", str(host_root), "/host", False)
        ]
        assert _exec(engine, task_id, "app", f"cat /host/{HOST_FILE}") == (0, "hello from the host")
        code, output = _exec(engine, task_id, "app", "touch /host/new")
        assert code != 0 and "Read-only file system" in output
        _stop(berth, "hostpath", task_id, engine)
        assert (host_root / HOST_FILE).read_text() == "hello from the host\n"  # the host's file stays
    finally:
        try:
            engine.containers.get(f"berth-{task_id}-app").remove(force=True)
        except docker.errors.NotFound:
            pass


def _taskdefs(plane: ControlPlaneProcess) -> dict[bytes, bytes]:
    # What a registration writes (controllers keep writing other keys meanwhile).
    return {k: v for k, v in plane.etcd_snapshot()[1].items() if b"/taskdefs/" in k}


def test_efs_is_accepted_with_its_note_and_a_node_without_a_region_fails_the_start(
    berth: Berth, agent: AgentProcess, engine: docker.DockerClient, tmp_path: Path
) -> None:
    berth.ok("cluster", "create", "efs")
    file_system = "fs-0123456789abcdef0"
    volumes = [
        {
            "name": "shared",
            "efsVolumeConfiguration": {
                "fileSystemId": file_system,
                "rootDirectory": "/app",
                "transitEncryption": "DISABLED",
            },
        }
    ]
    app = _container("app", "sleep 5", mountPoints=[{"sourceVolume": "shared", "containerPath": "/mnt"}])
    registered = berth.ok(
        "taskdef", "register", "--cli-input-json", _document(tmp_path, "efs", volumes, [app])
    )
    assert registered.stderr.splitlines() == [
        f"note: volumes[0].efsVolumeConfiguration: Berth mounts {file_system}.efs.REGION.amazonaws.com:/app "
        "over NFSv4.1 from the node (REGION: the agent's --aws-region or AWS_REGION); the node must reach "
        "the file system's mount targets"
    ]
    shown = berth.ok("taskdef", "describe", "efs", "-o", "json").json()
    assert shown["volumes"] == volumes

    result = berth("task", "run", "--cluster", "efs", "--task-definition", "efs", "--wait", "--timeout", "60")
    assert result.exit_code == 1
    assert (
        "failed to start (TaskFailedToStart: CannotCreateContainerError: volume shared: EFS file system "
        f"{file_system} needs the node's AWS region: start the agent with --aws-region or AWS_REGION)"
    ) in result.stderr
    (task,) = berth.tasks("efs")
    assert _gone(engine, id_of(task)) and not _task_volumes(engine, id_of(task))


def test_the_sweep_finds_a_left_behind_task_volume_on_the_engine(engine: docker.DockerClient) -> None:
    # As a volume is left when its task's containers are removed outside Berth: no container.
    node = f"sweep-{uuid.uuid4().hex[:8]}"
    name = f"berth-{node}-data"
    labels = {"berth.managed": "true", "berth.node-id": node, "berth.task-id": node}
    engine.volumes.create(name=name, labels=labels)
    kept = f"berth-{node}-kept"
    engine.volumes.create(name=kept, labels=labels | {"berth.task-id": "still-running"})
    try:
        now = time.time()
        assert sweep_task_volumes(engine, node, {"still-running"}, now) == []  # too young yet
        assert sweep_task_volumes(engine, node, {"still-running"}, now + SWEEP_MIN_AGE + 1) == [name]
        with pytest.raises(docker.errors.NotFound):
            engine.volumes.get(name)
        engine.volumes.get(kept)
    finally:
        _remove_volume(engine, name)
        _remove_volume(engine, kept)


def test_efs_transit_encryption_is_refused_and_nothing_is_written(
    berth: Berth, controlplane: ControlPlaneProcess, tmp_path: Path
) -> None:
    before = _taskdefs(controlplane)
    volumes = [
        {
            "name": "v",
            "efsVolumeConfiguration": {
                "fileSystemId": "fs-0123456789abcdef0",
                "transitEncryption": "ENABLED",
            },
        }
    ]
    app = _container("app", "true", mountPoints=[{"sourceVolume": "v", "containerPath": "/mnt"}])
    result = berth("taskdef", "register", "--cli-input-json", _document(tmp_path, "tls", volumes, [app]))
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: volumes[0].efsVolumeConfiguration.transitEncryption ENABLED is refused: Berth mounts EFS as "
        "plain NFS (TLS needs Amazon's efs-utils mount helper, which Berth does not run): set DISABLED, or "
        "mount the file system yourself"
    )
    assert _taskdefs(controlplane) == before


@pytest.mark.parametrize(
    ("config", "refusal"),
    [
        (
            {
                "driverOpts": {
                    "type": "overlay",
                    "device": "/srv/o",
                    "o": "lowerdir=/,upperdir=/u,workdir=/w",
                }
            },
            "volumes[0].dockerVolumeConfiguration.driverOpts type 'overlay' is refused by the volume-driver "
            "policy",
        ),
        (
            {"driverOpts": {"type": "nfs", "device": ":/", "o": "addr=127.0.0.1"}},
            "volumes[0].dockerVolumeConfiguration.driverOpts type 'nfs' is refused by the volume-driver "
            "policy: a network volume makes the node's kernel mount any server the task names (start the "
            "control plane with --allow-network-volumes)",
        ),
        (
            {"driver": "local-persist", "driverOpts": {"mountpoint": "/etc"}},
            "volumes[0].dockerVolumeConfiguration.driver local-persist is refused by the volume-driver "
            "policy",
        ),
        (
            {"scope": "shared", "autoprovision": True},
            "is reserved for scope shared: names starting with 'berth-' are Berth's own task volumes",
        ),
    ],
)
def test_volume_drivers_and_options_that_reach_the_node_are_refused_and_nothing_is_written(
    berth: Berth, controlplane: ControlPlaneProcess, tmp_path: Path, config: dict[str, Any], refusal: str
) -> None:
    before = _taskdefs(controlplane)
    name = "berth-0123456789abcdef0123456789abcdef-data" if config.get("scope") == "shared" else "v"
    volumes = [{"name": name, "dockerVolumeConfiguration": config}]
    app = _container("app", "true", mountPoints=[{"sourceVolume": name, "containerPath": "/v"}])
    result = berth("taskdef", "register", "--cli-input-json", _document(tmp_path, "drivers", volumes, [app]))
    assert result.exit_code == 1
    assert refusal in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert _taskdefs(controlplane) == before


def test_a_symbolic_link_on_an_allowed_host_path_fails_the_start_and_nothing_is_left(
    berth: Berth, agent: AgentProcess, engine: docker.DockerClient, host_root: Path, tmp_path: Path
) -> None:
    # As a task with a writable mount of the allowed tree could make it: a link out of the tree.
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("not for tasks\n")
    link = host_root / f"link-{uuid.uuid4().hex[:8]}"
    link.symlink_to(outside)
    try:
        berth.ok("cluster", "create", "links")
        volumes = [{"name": "host", "host": {"sourcePath": f"{link}/sub"}}]
        app = _container("app", "sleep 5", mountPoints=[{"sourceVolume": "host", "containerPath": "/h"}])
        berth.ok("taskdef", "register", "--cli-input-json", _document(tmp_path, "links", volumes, [app]))
        result = berth(
            "task", "run", "--cluster", "links", "--task-definition", "links", "--wait", "--timeout", "60"
        )
        assert result.exit_code == 1
        assert (
            f"failed to start (TaskFailedToStart: CannotCreateContainerError: volumes[0].host.sourcePath "
            f"{link}/sub: its component {link} is a symbolic link on this node, and Berth binds no symbolic "
            "links (the host-path policy judges the path as written))"
        ) in result.stderr
        assert str(outside) not in result.stderr  # where the link points is not told
        (task,) = berth.tasks("links")
        assert _gone(engine, id_of(task)) and not _task_volumes(engine, id_of(task))
        assert sorted(p.name for p in outside.iterdir()) == ["secret"]  # Docker made nothing there
    finally:
        link.unlink()


def test_a_shared_volume_that_is_a_tasks_own_fails_the_start(
    berth: Berth, agent: AgentProcess, engine: docker.DockerClient, tmp_path: Path
) -> None:
    # Made outside Berth with a task's label (the berth- prefix itself is refused at registration).
    name = f"e2e-owned-{uuid.uuid4().hex[:8]}"
    engine.volumes.create(name=name, labels={"berth.task-id": "0123456789abcdef0123456789abcdef"})
    try:
        berth.ok("cluster", "create", "owned")
        volumes = [{"name": name, "dockerVolumeConfiguration": {"scope": "shared"}}]
        app = _container("app", "sleep 5", mountPoints=[{"sourceVolume": name, "containerPath": "/d"}])
        berth.ok("taskdef", "register", "--cli-input-json", _document(tmp_path, "owned", volumes, [app]))
        result = berth(
            "task", "run", "--cluster", "owned", "--task-definition", "owned", "--wait", "--timeout", "60"
        )
        assert result.exit_code == 1
        assert (
            f"CannotCreateContainerError: shared volume {name} is a task's own volume (it carries "
            "berth.task-id): a shared volume must not name one"
        ) in result.stderr
        (task,) = berth.tasks("owned")
        assert _gone(engine, id_of(task))
        engine.volumes.get(name)  # left as it was
    finally:
        _remove_volume(engine, name)
