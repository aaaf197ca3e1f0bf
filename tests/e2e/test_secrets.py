"""Secrets end to end without Docker: a real control plane (real etcd, real TLS), the CLI,
and nodes played by raw gRPC clients holding real node certificates, so what each node is
sent can be read off the wire.
"""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from berth.testing.cli import Berth
from berth.testing.daemons import ControlPlaneProcess
from berth.testing.members import Member, join
from berth.testing.waiting import wait_until
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import agent_pb2_grpc, operator_pb2_grpc
from berth.v1 import operator_pb2 as api
from berth.v1 import resources_pb2 as pb

VALUE = "s3cr3t-DB-value-4711"
JSON_VALUE = json.dumps({"username": "svc-web-user-0815", "password": "pw-0815-very-secret"})
LOG_VALUE = "log-tag-0815-secret"
MARKERS = (VALUE, "svc-web-user-0815", "pw-0815-very-secret", LOG_VALUE)
CONTAINERS = [
    {
        "name": "web",
        "image": "berth-busybox:2",
        "memory": 32,
        "environment": [{"name": "PLAIN", "value": "visible"}],
        "secrets": [
            {
                "name": "DB_PASSWORD",
                "valueFrom": "arn:aws:ssm:eu-west-1:123456789012:parameter/app/DB_PASSWORD",
            },
            {
                "name": "DB_USER",
                "valueFrom": "arn:aws:secretsmanager:eu-west-1:1:secret:app/auth-AbCdEf:username::",
            },
        ],
        "logConfiguration": {
            "logDriver": "json-file",
            "secretOptions": [{"name": "tag", "valueFrom": "app/log-tag"}],
        },
    }
]


class RawNode:
    """A joined node holding its agent stream: registers, says hello, heartbeats, and keeps
    every DesiredState it is sent."""

    def __init__(self, plane: ControlPlaneProcess, member: Member, attributes: dict[str, str]) -> None:
        self.member = member
        self.states: list[agent_pb.DesiredState] = []
        self._outbox: queue.Queue[agent_pb.AgentMessage | None] = queue.Queue()
        self._channel = member.channel(plane.address)
        stub = agent_pb2_grpc.AgentServiceStub(self._channel)
        stub.Register(
            agent_pb.RegisterRequest(
                name=member.name,
                address="127.0.0.1",
                cpu_units=4096,
                memory_mib=4096,
                attributes=attributes,
                agent_version="test",
            ),
            timeout=10,
        )
        self._outbox.put(agent_pb.AgentMessage(hello=agent_pb.Hello(node_id=member.name)))
        self._call = stub.Connect(iter(self._outbox.get, None))
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._read, daemon=True),
            threading.Thread(target=self._beat, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read(self) -> None:
        try:
            for message in self._call:
                if message.HasField("desired_state"):
                    self.states.append(message.desired_state)
        except grpc.RpcError:
            pass

    def _beat(self) -> None:
        while not self._stop.wait(1.0):
            self._outbox.put(agent_pb.AgentMessage(heartbeat=agent_pb.Heartbeat()))

    def assignment(self, task_id: str) -> agent_pb.TaskAssignment | None:
        for state in reversed(self.states):
            for task in state.tasks:
                if task.task_id == task_id:
                    return task
        return None

    def received(self) -> bytes:
        return b"".join(state.SerializeToString() for state in self.states)

    def close(self) -> None:
        self._stop.set()
        self._outbox.put(None)
        self._call.cancel()  # type: ignore[no-untyped-call]
        for thread in self._threads:
            thread.join(timeout=5)
        self._channel.close()


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlaneProcess]:
    process = ControlPlaneProcess(tmp_path_factory.mktemp("secrets") / "cp")
    process.start()
    try:
        yield process
    finally:
        process.stop()


def _user(plane: ControlPlaneProcess, tmp_path: Path, name: str, role: str) -> Berth:
    path = tmp_path / f"{name}.conf"
    Berth.of(plane).ok("user", "create", name, "--role", role, "--out", str(path))
    return Berth(plane.address, path)


def _run(plane: ControlPlaneProcess, family: str, role: str) -> pb.Task:
    """RunTask onto the node registered with attribute role=ROLE."""
    with plane.admin_channel() as channel:
        return operator_pb2_grpc.OperatorStub(channel).RunTask(
            api.RunTaskRequest(
                cluster="default",
                task_definition=family,
                placement_constraints=[
                    pb.PlacementConstraint(type="memberOf", expression=f"attribute:role == {role}")
                ],
            ),
            timeout=10,
        )


def _no_plaintext(data: bytes, where: str) -> None:
    for marker in MARKERS:
        assert marker.encode() not in data, f"a secret's value is in {where}"


def test_put_list_delete_by_role_and_values_never_come_back(
    plane: ControlPlaneProcess, tmp_path: Path
) -> None:
    admin = Berth.of(plane)
    stored = admin.ok(
        "secret", "put", "arn:aws:ssm:eu-west-1:1:parameter/app/DB_PASSWORD", input=VALUE + "\n"
    )
    assert "secret /app/DB_PASSWORD version 1 stored" in stored.stdout
    value_file = tmp_path / "auth.json"
    value_file.write_text(JSON_VALUE)
    admin.ok(
        "secret",
        "put",
        "arn:aws:secretsmanager:eu-west-1:1:secret:app/auth-AbCdEf",
        "--from-file",
        str(value_file),
    )

    listed = admin.ok("secret", "list", "-o", "json")
    _no_plaintext(listed.stdout.encode(), "secret list")
    shown = {s["name"]: s for s in listed.json()["secrets"]}
    assert shown["/app/DB_PASSWORD"]["size"] == len(VALUE)  # stdin's trailing newline dropped
    assert shown["app/auth"]["size"] == len(JSON_VALUE)
    assert set(shown["app/auth"]) <= {"name", "version", "size", "createdAt", "updatedAt", "updatedBy"}

    # A viewer reads nothing of secrets and changes nothing; a deployer may manage them.
    viewer = _user(plane, tmp_path, "sv", "viewer")
    before = plane.operator_records()
    for args in (("secret", "put", "x"), ("secret", "list"), ("secret", "delete", "app/auth")):
        refused = viewer(*args, input="nope")
        assert refused.exit_code != 0 and "it needs deployer" in refused.stderr, refused.stderr
    assert plane.operator_records() == before, "a refused call wrote to etcd"
    deployer = _user(plane, tmp_path, "sd", "deployer")
    assert "version 2" in deployer.ok("secret", "put", "/app/DB_PASSWORD", input=VALUE).stdout
    assert deployer.ok("secret", "put", "scratch", input="x").exit_code == 0
    deployer.ok("secret", "delete", "scratch")
    assert "scratch" not in {s["name"] for s in admin.ok("secret", "list", "-o", "json").json()["secrets"]}

    # Bad input: one line, nothing written.
    before = plane.operator_records()
    for args, text, message in (
        (("secret", "put", "a//b"), "v", "secret name"),
        (
            ("secret", "put", "arn:aws:secretsmanager:r:1:secret:x-AbCdEf:key::"),
            "v",
            "put the whole JSON value",
        ),
        (("secret", "put", "big"), "x" * 70_000, "64 KiB"),
        (("secret", "put", "empty"), "", "empty"),
        (("secret", "delete", "never-was"), "", "does not exist"),
    ):
        refused = admin(*args, input=text)
        assert refused.exit_code != 0 and message in refused.stderr, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert plane.operator_records() == before


def test_only_the_running_node_receives_values_and_they_are_nowhere_else(plane: ControlPlaneProcess) -> None:
    admin = Berth.of(plane)
    admin.ok("secret", "put", "/app/DB_PASSWORD", input=VALUE)
    admin.ok("secret", "put", "app/auth", input=JSON_VALUE)
    admin.ok("secret", "put", "app/log-tag", input=LOG_VALUE)
    admin.ok("taskdef", "register", "--family", "vault", "--container-definitions", json.dumps(CONTAINERS))
    plain_containers = [{"name": "web", "image": "berth-busybox:2", "memory": 32}]
    admin.ok(
        "taskdef", "register", "--family", "plain", "--container-definitions", json.dumps(plain_containers)
    )
    described = admin.ok("taskdef", "describe", "vault", "-o", "json")
    _no_plaintext(described.stdout.encode(), "taskdef describe")
    assert "parameter/app/DB_PASSWORD" in described.stdout  # the reference is kept
    table = admin.ok("taskdef", "describe", "vault").stdout
    assert "secret DB_PASSWORD from arn:aws:ssm:" in table
    _no_plaintext(table.encode(), "taskdef describe")

    holder = RawNode(plane, join(plane, "holder"), {"role": "holder"})
    other = RawNode(plane, join(plane, "other"), {"role": "other"})
    try:
        wait_until(lambda: (holder.states and other.states) or None, 15, "both nodes get a snapshot")
        task = _run(plane, "vault", "holder")
        assignment, _ = wait_until(
            lambda: holder.assignment(task.id), 20, "the holder gets the task", interval=0.2
        )
        assert not assignment.secrets_error, assignment.secrets_error
        [group] = assignment.secret_environment
        assert group.container == "web"
        assert {v.name: v.value for v in group.environment} == {
            "DB_PASSWORD": VALUE,
            "DB_USER": "svc-web-user-0815",
        }
        [log_group] = assignment.log_secret_options
        assert (log_group.container, {v.name: v.value for v in log_group.environment}) == (
            "web",
            {"tag": LOG_VALUE},
        )
        # The other node is sent snapshots all along (one with a task of its own after the
        # holder's task exists), and never the holder's task or a value.
        plain = _run(plane, "plain", "other")
        wait_until(lambda: other.assignment(plain.id), 20, "the other node gets its own task")
        assert other.assignment(task.id) is None
        _no_plaintext(other.received(), "the other node's snapshots")

        shown = admin.ok("task", "describe", task.id, "-o", "json")
        _no_plaintext(shown.stdout.encode(), "task describe")
        _no_plaintext(json.dumps(admin.tasks("default")).encode(), "task list")

        # A task whose secret is gone is told why instead of getting a value.
        admin.ok("secret", "delete", "app/auth")
        second = _run(plane, "vault", "holder")
        failed, _ = wait_until(lambda: holder.assignment(second.id), 20, "the holder gets the second task")
        assert failed.secrets_error.startswith("ResourceInitializationError: unable to pull secrets")
        assert "app/auth does not exist" in failed.secrets_error
        assert not failed.secret_environment and not failed.log_secret_options
    finally:
        holder.close()
        other.close()

    # etcd holds ciphertexts only: through the store's own reader and with etcdctl.
    _, raw = plane.etcd_snapshot()
    assert any(key.startswith(b"/berth/secrets/") for key in raw)
    _no_plaintext(b"".join(raw.values()), "etcd")
    if shutil.which("etcdctl"):
        dumped = subprocess.run(
            [
                "etcdctl",
                f"--endpoints={plane.etcd_endpoint}",
                # The embedded etcd's client certificate (etcd is locked to it).
                f"--cacert={plane.data_dir / 'etcd-tls' / 'ca.crt'}",
                f"--cert={plane.data_dir / 'etcd-tls' / 'client.crt'}",
                f"--key={plane.data_dir / 'etcd-tls' / 'client.key'}",
                "get",
                "--prefix",
                "/berth/",
            ],
            capture_output=True,
            timeout=30,
            check=True,
            env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
        ).stdout
        assert b"/berth/secrets//app/DB_PASSWORD" in dumped
        _no_plaintext(dumped, "etcdctl's dump")
    # Nor in the control plane's log or audit log, nor the master key in etcd.
    _no_plaintext(Path(plane.log_path).read_bytes(), "the control plane's log")
    _no_plaintext((plane.data_dir / "audit.log").read_bytes(), "the audit log")
    master = (plane.data_dir / "pki" / "secrets.key").read_bytes()
    assert (plane.data_dir / "pki" / "secrets.key").stat().st_mode & 0o777 == 0o600
    assert master not in b"".join(raw.values())
