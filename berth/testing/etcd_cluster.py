"""A real etcd cluster of several members on this machine, for tests and the lab's HA mode.

Each member is the real `etcd` binary in its own process (a `Daemon`, so a
test can `kill9()` and `start()` it again: its data directory keeps its
membership), on free ports of `host`, speaking TLS only on its client and
peer ports with certificates from a CA made for this cluster; clients and
peers must present a certificate from that CA, as a production cluster is
set up. `controlplane_args()` are the flags that point a control plane at it.

    cluster = EtcdCluster(tmp_path / "etcd")
    cluster.start()
    try:
        ... ControlPlaneProcess(data_dir, extra_args=cluster.controlplane_args()) ...
        cluster.members[0].kill9(); cluster.members[0].start()
    finally:
        cluster.stop()
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

from berth import pki
from berth.errors import Unavailable
from berth.files import private_dir, write_private
from berth.testing.daemons import ControlPlaneProcess, Daemon, free_port
from controlplane.store import EtcdTLS, Store, keys
from controlplane.store.embedded import find_etcd_binary

T = TypeVar("T")
LIFETIME = datetime.timedelta(days=30)


def in_a_thread(work: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion on a fresh loop, so that callers inside a loop can wait too."""

    def run() -> T:
        async def main() -> T:
            return await work()

        return asyncio.run(main())

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result()


class EtcdMember(Daemon):
    """One etcd member: its name, ports and data directory stay the same across restarts."""

    def __init__(self, name: str, host: str, directory: Path) -> None:
        self.host = host
        self.client_port = free_port()
        self.peer_port = free_port()
        self.directory = directory
        super().__init__(name, [], directory.parent / f"{name}.log")

    @property
    def endpoint(self) -> str:
        return f"https://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"https://{self.host}:{self.peer_port}"

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class EtcdCluster:
    """`members` etcd processes forming one cluster, with TLS between everyone."""

    def __init__(self, root: Path, members: int = 3, host: str = "127.0.0.1") -> None:
        if members < 1:
            raise ValueError("an etcd cluster needs at least one member")
        self.root = root
        self.host = host
        self.members = [EtcdMember(f"etcd{i}", host, root / f"etcd{i}") for i in range(members)]
        self._tls_dir = root / "tls"

    # -- files ---------------------------------------------------------------

    @property
    def ca_file(self) -> Path:
        return self._tls_dir / "ca.crt"

    @property
    def client_certificate_file(self) -> Path:
        return self._tls_dir / "client.crt"

    @property
    def client_key_file(self) -> Path:
        return self._tls_dir / "client.key"

    @property
    def tls(self) -> EtcdTLS:
        """What a client of this cluster presents and trusts."""
        return EtcdTLS.from_files(self.ca_file, self.client_certificate_file, self.client_key_file)

    @property
    def endpoints(self) -> list[str]:
        return [member.endpoint for member in self.members]

    def controlplane_args(self) -> list[str]:
        """The flags of a control-plane replica on this cluster."""
        return [
            "--etcd",
            ",".join(self.endpoints),
            "--etcd-cacert",
            str(self.ca_file),
            "--etcd-cert",
            str(self.client_certificate_file),
            "--etcd-key",
            str(self.client_key_file),
        ]

    def store(self, prefix: str = "/berth/", timeout: float = 10.0) -> Store:
        """A store on every member of this cluster (connect it)."""
        return Store(self.endpoints, prefix=prefix, timeout=timeout, tls=self.tls)

    def _issue(self) -> None:
        private_dir(self._tls_dir)
        ca = pki.create_ca("etcd-test", title="Berth test etcd CA", join_name=None)
        addresses = tuple(dict.fromkeys((self.host, "127.0.0.1", "localhost")))
        server = pki.issue_with_key(ca, "etcd-server", "etcd", LIFETIME, addresses)
        client = pki.issue_with_key(ca, "etcd-client", "controlplane", LIFETIME)
        write_private(self.ca_file, ca.certificate)
        write_private(self._tls_dir / "server.crt", server.certificate)
        write_private(self._tls_dir / "server.key", server.key)
        write_private(self.client_certificate_file, client.certificate)
        write_private(self.client_key_file, client.key)

    def _command(self, member: EtcdMember) -> list[str]:
        tls = self._tls_dir
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        return [
            find_etcd_binary(),
            "--name",
            member.name,
            "--data-dir",
            str(member.directory),
            "--listen-client-urls",
            member.endpoint,
            "--advertise-client-urls",
            member.endpoint,
            "--listen-peer-urls",
            member.peer_url,
            "--initial-advertise-peer-urls",
            member.peer_url,
            "--initial-cluster",
            initial,
            "--initial-cluster-state",
            "new",
            "--initial-cluster-token",
            f"berth-test-{self.members[0].peer_port}",
            # A busy two-core test machine misses 100 ms heartbeats: slower
            # elections than etcd's defaults, so only a real death elects.
            "--heartbeat-interval",
            "200",
            "--election-timeout",
            "2000",
            "--client-cert-auth",
            "--trusted-ca-file",
            str(self.ca_file),
            "--cert-file",
            str(tls / "server.crt"),
            "--key-file",
            str(tls / "server.key"),
            "--peer-client-cert-auth",
            "--peer-trusted-ca-file",
            str(self.ca_file),
            "--peer-cert-file",
            str(tls / "server.crt"),
            "--peer-key-file",
            str(tls / "server.key"),
        ]

    # -- lifecycle -------------------------------------------------------------

    def start(self, timeout: float = 60) -> None:
        """Start every member and wait until the cluster serves linearizable reads on each."""
        private_dir(self.root)
        self._issue()
        try:
            for member in self.members:
                private_dir(member.directory)
                member.command = self._command(member)
                member.start()
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise

    def wait_healthy(self, timeout: float = 60, members: list[EtcdMember] | None = None) -> None:
        """Wait until each of `members` (default: all running ones) answers a quorum read."""
        deadline = time.monotonic() + timeout
        waiting = [m for m in (members or self.members) if m.is_running()]
        last = ""
        while waiting:
            for member in list(waiting):
                if member.process is not None and member.process.poll() is not None:
                    raise RuntimeError(f"etcd member {member.name} exited:\n{member.log_tail()}")
                error = self._probe(member)
                if error is None:
                    waiting.remove(member)
                else:
                    last = f"{member.name}: {error}"
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcd cluster not healthy in {timeout:.0f}s ({last})")
            time.sleep(0.2)

    def _probe(self, member: EtcdMember) -> str | None:
        """None when the member answers a linearizable read (it has a leader and quorum)."""

        async def probe() -> str | None:
            store = Store([member.endpoint], prefix="/health/", timeout=2.0, tls=self.tls)
            try:
                await store.connect()
                await store.get_raw("probe")
            except Unavailable as error:
                return str(error)
            finally:
                await store.close()
            return None

        return in_a_thread(probe)

    def leader(self) -> EtcdMember:
        """The member etcd elected its raft leader (each running member says whether it is)."""
        for member in self.members:
            if not member.is_running():
                continue

            async def status(member: EtcdMember = member) -> tuple[int, int]:
                store = Store([member.endpoint], prefix="/health/", timeout=3.0, tls=self.tls)
                await store.connect()
                try:
                    return await store.member_status()
                finally:
                    await store.close()

            with contextlib.suppress(Unavailable):
                member_id, leader_id = in_a_thread(status)
                if member_id == leader_id:
                    return member
        raise RuntimeError("no running etcd member is the leader")

    def leader_identity(self, prefix: str = "/berth/") -> str:
        """Who the control plane's leader key names ("" when no replica leads)."""

        async def read() -> str:
            store = self.store(prefix=prefix, timeout=5.0)
            await store.connect()
            try:
                entry = await store.get_raw(keys.LEADER)
            finally:
                await store.close()
            return entry.value.decode() if entry is not None and entry.value else ""

        return in_a_thread(read)

    def leading_replica(
        self, replicas: Sequence[ControlPlaneProcess], timeout: float = 30
    ) -> ControlPlaneProcess:
        """The live replica among `replicas` that holds the leader key (waits up to `timeout`)."""
        deadline = time.monotonic() + timeout
        while True:
            holder = self.leader_identity()
            for replica in replicas:
                alive = replica.process is not None and replica.process.poll() is None
                if alive and holder.startswith(f"{replica.address}@"):
                    return replica
            if time.monotonic() > deadline:
                raise RuntimeError(f"no live replica holds the leader key (it names {holder!r})")
            time.sleep(0.1)

    def stop(self) -> None:
        for member in self.members:
            member.stop(timeout=10)
