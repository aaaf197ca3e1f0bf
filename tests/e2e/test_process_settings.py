"""ECS's process and security settings reach the container (real Docker): seen on the
engine (`docker inspect`) and from inside (id, pwd, hostname, /etc/hosts, a read-only /)."""

from __future__ import annotations

import json
from pathlib import Path

import docker

from berth.testing.cli import Berth
from berth.testing.daemons import AgentProcess, ControlPlaneProcess
from berth.testing.waiting import wait_until

DEFINITION = {
    "name": "app",
    "image": "berth-busybox:2",
    "memory": 64,
    "essential": True,
    "entryPoint": ["sh", "-c"],
    "command": ["trap 'exit 0' TERM; sleep 3600 & wait"],
    "stopTimeout": 2,
    "user": "1000:1000",
    "workingDirectory": "/var",
    "hostname": "berth-e2e-host",
    "readonlyRootFilesystem": True,
    "ulimits": [{"name": "nofile", "softLimit": 1024, "hardLimit": 2048}],
    "dockerLabels": {"com.example.team": "e2e"},
    "extraHosts": [{"hostname": "db.internal", "ipAddress": "10.1.2.3"}],
    "linuxParameters": {"initProcessEnabled": True},
}


def _file(tmp_path: Path, definitions: list[dict[str, object]]) -> str:
    path = tmp_path / "defs.json"
    path.write_text(json.dumps(definitions))
    return f"file://{path}"


def test_process_settings_reach_the_engine_and_the_container(
    berth: Berth, agent: AgentProcess, tmp_path: Path
) -> None:
    berth.ok("cluster", "create", "proc")
    berth.ok(
        "taskdef", "register", "--family", "proc", "--container-definitions", _file(tmp_path, [DEFINITION])
    )
    berth.ok(
        "service",
        "create",
        "--cluster",
        "proc",
        "--name",
        "app",
        "--task-definition",
        "proc",
        "--desired-count",
        "1",
    )
    wait_until(lambda: berth.running_exactly("proc", 1, "app"), 30, "1 RUNNING task")
    (info,) = [c for c in agent.containers() if c.labels.get("berth.cluster") == "proc"]

    client = docker.DockerClient(base_url=agent.docker_url)
    try:
        details = client.api.inspect_container(info.id)
        config, host = details["Config"], details["HostConfig"]
        assert config["User"] == "1000:1000"
        assert config["WorkingDir"] == "/var"
        assert config["Hostname"] == "berth-e2e-host"
        assert host["ReadonlyRootfs"] is True
        assert host["Ulimits"] == [{"Name": "nofile", "Soft": 1024, "Hard": 2048}]
        assert config["Labels"]["com.example.team"] == "e2e"
        assert config["Labels"]["berth.managed"] == "true"  # Berth's own labels stay
        assert host["ExtraHosts"] == ["db.internal:10.1.2.3"]
        assert host["Init"] is True
        assert "no-new-privileges:true" in host["SecurityOpt"]

        container = client.containers.get(info.id)

        def run(command: str) -> tuple[int, str]:
            code, output = container.exec_run(["sh", "-c", command])
            return code, output.decode().strip()

        assert run("id -u") == (0, "1000")
        assert run("id -g") == (0, "1000")
        assert run("pwd") == (0, "/var")
        assert run("hostname") == (0, "berth-e2e-host")
        # The kernel's view of the task's own processes: docker-init (PID 1) seen from inside,
        # and the same process seen from the host. Not a `docker exec` process: on this engine
        # (20.10 with a Go-built runc) an exec'd process may inherit runc's raised soft limit
        # (soft = hard), which says nothing about the task.
        code, limits = run("grep 'Max open files' /proc/1/limits")
        assert code == 0 and limits.split()[3:5] == ["1024", "2048"], limits
        host_pid = client.api.inspect_container(info.id)["State"]["Pid"]
        with open(f"/proc/{host_pid}/limits") as kernel:
            (line,) = [line for line in kernel if line.startswith("Max open files")]
        assert line.split()[3:5] == ["1024", "2048"], line
        code, hosts = run("cat /etc/hosts")
        assert code == 0 and "10.1.2.3\tdb.internal" in hosts
        # The init process (docker-init) is PID 1, the task's shell its child.
        assert run("cat /proc/1/comm") == (0, "docker-init")
        # / is read-only: the kernel says so (without it, uid 1000 would get "Permission denied").
        code, output = run("touch /x")
        assert code != 0 and "Read-only file system" in output
    finally:
        client.close()

    berth.ok("service", "update", "app", "--cluster", "proc", "--desired-count", "0")


def test_privileged_without_the_policy_is_refused_and_nothing_is_written(
    controlplane: ControlPlaneProcess, tmp_path: Path
) -> None:
    berth = Berth.of(controlplane)
    before = _taskdefs(controlplane)
    result = berth(
        "taskdef",
        "register",
        "--family",
        "priv",
        "--container-definitions",
        _file(tmp_path, [{"name": "app", "image": "busybox", "memory": 16, "privileged": True}]),
    )
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: containerDefinitions[0].privileged is refused: "
        "the control plane runs without --allow-privileged"
    )
    assert _taskdefs(controlplane) == before, "a refused registration wrote a task definition"


def _taskdefs(plane: ControlPlaneProcess) -> dict[bytes, bytes]:
    # What a registration writes; controllers keep writing events meanwhile (the store's
    # revision moves), so comparing the whole store would fail at random.
    return {k: v for k, v in plane.etcd_snapshot()[1].items() if b"/taskdefs/" in k}
