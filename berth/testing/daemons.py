"""Real control-plane and agent processes for tests, started as an operator would.

Each runs the installed console script in its own process group with its
own data directory; `kill9` and `restart` let tests crash and revive them.
Containers an agent started are removed when its fixture ends, even after
a failed test.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import grpc

from berth import pki
from berth.clientconfig import ClientConfig, channel_options
from berth.v1 import operator_pb2 as api
from berth.v1 import operator_pb2_grpc
from controlplane.store import EtcdTLS, Store, keys
from controlplane.store.tls import EmbeddedFiles

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Daemon:
    def __init__(
        self, name: str, command: list[str], log_path: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.command = command
        self.log_path = log_path
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(self.env or {})},
            start_new_session=True,
        )
        log.close()

    def kill9(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def stop(self, timeout: float = 20) -> int | None:
        """SIGTERM, and SIGKILL the whole group if it does not stop in time."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.terminate()
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait(10)

    def keep_log(self, directory: Path) -> None:
        """Copy this daemon's log into directory (benchmarks' --log-dir)."""
        directory.mkdir(parents=True, exist_ok=True)
        if self.log_path.exists():
            shutil.copy(self.log_path, directory / f"{self.name}.log")

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class ControlPlaneProcess(Daemon):
    def __init__(
        self, data_dir: Path, extra_args: list[str] | None = None, listen: str = "127.0.0.1:0"
    ) -> None:
        self.data_dir = data_dir
        host, _, port = listen.rpartition(":")
        self.address = f"{host}:{port if port != '0' else free_port()}"
        self.join_address = f"{host}:{free_port()}"
        # Its own free port: the default (--listen's port + 2) may be another test's.
        self.ecs_address = f"{host}:{free_port()}"
        # The administrator's credentials, written by the control plane at first start.
        self.admin_config = data_dir.parent / f"{data_dir.name}-admin.conf"
        command = [
            sys.executable,
            "-m",
            "controlplane.main",
            "--listen",
            self.address,
            "--join-listen",
            self.join_address,
            "--ecs-listen",
            self.ecs_address,
            "--admin-config",
            str(self.admin_config),
            "--data-dir",
            str(data_dir),
            "--log-level",
            "info",
            *(extra_args or []),
        ]
        super().__init__("controlplane", command, data_dir.parent / f"{data_dir.name}.log")

    def start(self) -> None:
        super().start()
        self.wait_ready()

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"control plane exited early:\n{self.log_tail()}")
            if self.admin_config.exists():
                try:
                    with self.admin_channel() as channel:
                        stub = operator_pb2_grpc.OperatorStub(channel)
                        stub.ListClusters(api.ListClustersRequest(), timeout=1)
                    return
                except grpc.RpcError:
                    pass
            time.sleep(0.1)
        raise RuntimeError(f"control plane not ready in {timeout}s:\n{self.log_tail()}")

    def admin_channel(self, options: list[tuple[str, Any]] | None = None) -> grpc.Channel:
        """A channel with the administrator's credentials."""
        config = ClientConfig.load(self.admin_config)
        return grpc.secure_channel(
            self.address, config.credentials(), options=[*channel_options(), *(options or [])]
        )

    def admin_aio_channel(self) -> grpc.aio.Channel:
        config = ClientConfig.load(self.admin_config)
        return grpc.aio.secure_channel(self.address, config.credentials(), options=channel_options())

    def create_join_token(self, uses: int = 0, ttl: int = 3600) -> tuple[str, str]:
        """A join token for agents the tests start, and the CA hash they pin."""
        with self.admin_channel() as channel:
            created = operator_pb2_grpc.OperatorStub(channel).CreateJoinToken(
                api.CreateJoinTokenRequest(ttl_seconds=ttl, uses=uses, description="tests"), timeout=10
            )
        return created.token, created.ca_hash

    def restart(self) -> None:
        self.start()

    @property
    def etcd_endpoint(self) -> str:
        ports = json.loads((self.data_dir / "etcd-ports.json").read_text())
        return f"https://127.0.0.1:{ports['client']}"

    @property
    def etcd_tls(self) -> EtcdTLS:
        """The client certificate the embedded etcd asks for (the control plane's own)."""
        return EmbeddedFiles(self.data_dir / "etcd-tls").client()

    def etcd_store(self, prefix: str = "/berth/", timeout: float = 10.0) -> Store:
        """A store on this control plane's embedded etcd, with its client certificate (connect it)."""
        return Store([self.etcd_endpoint], prefix=prefix, timeout=timeout, tls=self.etcd_tls)

    def etcd_snapshot(self) -> tuple[int, dict[bytes, bytes]]:
        """The etcd revision and every key/value under /berth/ (to prove nothing was written)."""

        async def read() -> tuple[int, dict[bytes, bytes]]:
            store = self.etcd_store()
            await store.connect()
            try:
                entries, revision = await store.scan_raw("")
            finally:
                await store.close()
            return revision, {f"/berth/{e.key}".encode(): e.value or b"" for e in entries}

        return asyncio.run(read())

    def operator_records(self) -> dict[bytes, bytes]:
        """The records operators' calls write (clusters, task definitions, services, tasks, VIPs,
        secrets, users, join tokens, access keys): what a refused call must leave unchanged. Not what the
        control plane and agents keep writing on their own (events, leader, heartbeats,
        identities), so a comparison cannot fail at random while the plane is busy."""
        _, entries = self.etcd_snapshot()
        return {key: value for key, value in entries.items() if key.startswith(OPERATOR_RECORDS)}


# Key prefixes of the records only operators' calls create or change (see operator_records).
OPERATOR_RECORDS = tuple(
    f"/berth/{prefix}".encode()
    for prefix in (
        keys.CLUSTERS,
        keys.TASKDEFS,
        keys.SERVICES,
        keys.TASKS,
        keys.VIPS,
        keys.SECRETS,
        keys.USERS,
        keys.JOIN_TOKENS,
        keys.ACCESS_KEYS,
    )
)


@dataclass(frozen=True)
class JoinFlags:
    """What an agent joins with, passed as the install script passes it: a token, the pinned
    CA hash and the join listener's address."""

    token: str
    ca_hash: str
    join_server: str

    @classmethod
    def of(cls, plane: ControlPlaneProcess, uses: int = 0) -> JoinFlags:
        """A fresh token of a started control plane (uses=0: any number of agents)."""
        token, ca_hash = plane.create_join_token(uses=uses)
        return cls(token, ca_hash, plane.join_address)

    def args(self) -> list[str]:
        return ["--join-token", self.token, "--ca-hash", self.ca_hash, "--join-server", self.join_server]


class HollowAgentsProcess(Daemon):
    """`berth-hollow-agents`: COUNT simulated hosts in one process, on the control plane at `server`,
    each joining with the one multi-use token in `join`."""

    def __init__(
        self,
        log_path: Path,
        server: str,
        count: int,
        extra_args: list[str] | None = None,
        *,
        join: JoinFlags,
        cluster: str = "default",
    ) -> None:
        command = [
            sys.executable,
            "-m",
            "agent.hollow",
            "--server",
            server,
            "--count",
            str(count),
            "--cluster",
            cluster,
            *join.args(),
        ]
        super().__init__("hollow", [*command, *(extra_args or [])], log_path)


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    labels: dict[str, str]
    started_at: str


class AgentProcess(Daemon):
    """`berth-agent` with its data directory; it joins with `join` the first time (None: it
    must hold credentials already) and keeps its certificate across restarts."""

    def __init__(
        self,
        data_dir: Path,
        server: str,
        extra_args: list[str] | None = None,
        docker_url: str = "unix:///var/run/docker.sock",
        address: str = "127.0.0.1",
        *,
        join: JoinFlags | None,
        cluster: str = "default",
    ) -> None:
        self.data_dir = data_dir
        self._log_start = 0
        self.docker_url = docker_url
        command = [
            sys.executable,
            "-m",
            "agent.main",
            "--server",
            server,
            "--data-dir",
            str(data_dir),
            "--address",
            address,
            "--docker-url",
            docker_url,
            "--cluster",
            cluster,
            *(join.args() if join is not None else []),
            *(extra_args or []),
        ]
        super().__init__("agent", command, data_dir.parent / f"{data_dir.name}.log")

    def start(self) -> None:
        # wait_registered looks only at what this run logs.
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        super().start()

    @property
    def node_id(self) -> str:
        """The node its certificate names ("" before it joined)."""
        path = self.data_dir / "node.crt"
        return pki.identity(path.read_bytes()).name if path.exists() else ""

    def connections(self) -> int:
        """How many times this run connected its stream (the first, then each reconnect)."""
        if not self.log_path.exists():
            return 0
        with self.log_path.open("rb") as log:
            log.seek(self._log_start)
            return log.read().count(b"event=connected ")

    def wait_registered(self, timeout: float = 20) -> str:
        """The node id, once this run has joined (or found its certificate) and connected."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.node_id and self.connections():
                return self.node_id
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"agent exited:\n{self.log_tail()}")
            time.sleep(0.1)
        raise RuntimeError(f"agent did not register in {timeout}s:\n{self.log_tail()}")

    def containers(self, all: bool = False) -> list[ContainerInfo]:
        """This agent's containers (by its node label), skipping any removed while we look."""
        client = docker.DockerClient(base_url=self.docker_url)
        try:
            found = []
            for summary in client.api.containers(all=all, filters={"label": f"berth.node-id={self.node_id}"}):
                try:
                    details = client.api.inspect_container(summary["Id"])
                except docker.errors.NotFound:
                    continue
                found.append(
                    ContainerInfo(summary["Id"], summary["Labels"] or {}, details["State"]["StartedAt"])
                )
            return found
        finally:
            client.close()

    def remove_containers(self) -> None:
        if not self.node_id:
            return
        client = docker.DockerClient(base_url=self.docker_url)
        try:
            for container in client.containers.list(
                all=True, filters={"label": f"berth.node-id={self.node_id}"}
            ):
                container.remove(force=True)
        finally:
            client.close()
