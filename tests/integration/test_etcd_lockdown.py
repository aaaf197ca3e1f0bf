"""The embedded etcd answers only loopback clients holding its own client certificate.

Read with the real `etcdctl` (Debian's etcd-client) and with the store: plain
HTTP, HTTPS without a certificate, and HTTPS with a certificate from the
cluster CA (what every agent and operator holds) are all refused; the
control plane's own client certificate gets in.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import shutil
import stat
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest

from berth import pki
from berth.errors import Unavailable
from berth.testing.daemons import ControlPlaneProcess
from berth.v1 import operator_pb2 as api
from berth.v1 import operator_pb2_grpc
from berth.v1 import resources_pb2 as pb
from controlplane import tls as cluster_tls
from controlplane.store import EtcdTLS, Put, Store, keys
from controlplane.store.embedded import EmbeddedEtcd

SECRET_NAME = "locked-down"


@pytest.fixture()
async def etcd(tmp_path: Path) -> AsyncIterator[EmbeddedEtcd]:
    server = EmbeddedEtcd(tmp_path / "cp")
    await server.start()
    store = Store([server.endpoint], prefix="/berth/", tls=server.client_tls)
    await store.connect()
    try:
        assert await store.commit([Put(keys.cluster(SECRET_NAME), pb.Cluster(name=SECRET_NAME))])
    finally:
        await store.close()
    yield server
    await server.stop()


def etcdctl(endpoint: str, *flags: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("etcdctl")
    if binary is None:
        pytest.skip("etcdctl is not installed (apt-get install etcd-client)")
    return subprocess.run(
        [
            binary,
            "--endpoints",
            endpoint,
            "--dial-timeout",
            "3s",
            "--command-timeout",
            "5s",
            *flags,
            "get",
            "--prefix",
            "/berth/",
        ],
        env={**os.environ, "ETCDCTL_API": "3"},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_etcdctl_without_the_client_certificate_reads_nothing(etcd: EmbeddedEtcd, tmp_path: Path) -> None:
    plain = etcdctl(f"http://127.0.0.1:{etcd.client_port}")
    assert plain.returncode != 0 and SECRET_NAME not in plain.stdout
    files = tmp_path / "cp" / "etcd-tls"
    no_certificate = etcdctl(etcd.endpoint, "--cacert", str(files / "ca.crt"))
    assert no_certificate.returncode != 0 and SECRET_NAME not in no_certificate.stdout
    # The real client certificate works, so the refusals above are the lock, not a broken etcd.
    allowed = etcdctl(
        etcd.endpoint,
        "--cacert",
        str(files / "ca.crt"),
        "--cert",
        str(files / "client.crt"),
        "--key",
        str(files / "client.key"),
    )
    assert allowed.returncode == 0, allowed.stderr
    assert SECRET_NAME in allowed.stdout


async def test_a_certificate_from_the_cluster_ca_does_not_open_etcd(
    etcd: EmbeddedEtcd, tmp_path: Path
) -> None:
    # What an agent or an operator holds: a certificate the cluster CA signed.
    cluster_ca, _ = cluster_tls.load_or_create_ca(tmp_path / "cp" / "pki", "test")
    member = pki.issue_with_key(cluster_ca, "user", "admin", datetime.timedelta(hours=1))
    server_ca = etcd.client_tls.ca
    attempts = {
        "plain": Store([f"127.0.0.1:{etcd.client_port}"], timeout=3),
        "no certificate": Store([etcd.endpoint], timeout=3, tls=EtcdTLS(ca=server_ca)),
        "cluster CA": Store(
            [etcd.endpoint], timeout=3, tls=EtcdTLS(server_ca, member.certificate, member.key)
        ),
    }
    for what, store in attempts.items():
        with pytest.raises(Unavailable):
            await store.connect()
            await store.close()
            pytest.fail(f"{what}: connected")


async def test_embedded_etcd_listens_on_loopback_only_and_keeps_its_keys_private(
    etcd: EmbeddedEtcd, tmp_path: Path
) -> None:
    assert etcd._process is not None
    listening = {
        (c.laddr.ip, c.laddr.port)
        for c in psutil.Process(etcd._process.pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    }
    assert (("127.0.0.1", etcd.client_port)) in listening
    assert (("127.0.0.1", etcd.peer_port)) in listening
    assert all(ip in ("127.0.0.1", "::1") for ip, _ in listening), listening
    data = tmp_path / "cp"
    for directory in (data, data / "etcd", data / "etcd-tls", data / "pki"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    for file in [*(data / "etcd-tls").iterdir(), *(data / "pki").iterdir()]:
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file


def test_the_control_plane_works_while_its_etcd_turns_away_everyone_else(plane: ControlPlaneProcess) -> None:
    with plane.admin_channel() as channel:
        clusters = operator_pb2_grpc.OperatorStub(channel).ListClusters(api.ListClustersRequest(), timeout=10)
    assert "default" in [c.name for c in clusters.clusters]
    port = plane.etcd_endpoint.rpartition(":")[2]
    refused = etcdctl(f"http://127.0.0.1:{port}")
    assert refused.returncode != 0 and "default" not in refused.stdout
    # Tests that read etcd directly hold the control plane's client certificate.
    _, entries = plane.etcd_snapshot()
    assert b"/berth/clusters/default" in entries


async def test_an_external_etcd_is_used_over_tls_with_the_files_given(tmp_path: Path) -> None:
    # A TLS-only etcd standing in for an external cluster, with its client files.
    external = EmbeddedEtcd(tmp_path / "external")
    await external.start()
    files = tmp_path / "external" / "etcd-tls"
    endpoint = ["--etcd", external.endpoint]
    with_tls = [
        *endpoint,
        "--etcd-cacert",
        str(files / "ca.crt"),
        "--etcd-cert",
        str(files / "client.crt"),
        "--etcd-key",
        str(files / "client.key"),
    ]
    without_certificate = ControlPlaneProcess(
        tmp_path / "refused", [*endpoint, "--etcd-cacert", str(files / "ca.crt")]
    )
    plane = ControlPlaneProcess(tmp_path / "cp", with_tls)
    try:
        with pytest.raises(RuntimeError, match=r"exited early|not ready"):
            await asyncio.to_thread(without_certificate.start)
        await asyncio.to_thread(plane.start)
        store = Store([external.endpoint], tls=external.client_tls)
        await store.connect()
        try:
            assert await store.get(keys.cluster("default"), pb.Cluster) is not None
        finally:
            await store.close()
        assert not (tmp_path / "cp" / "etcd").exists(), "an embedded etcd was started anyway"
    finally:
        without_certificate.stop()
        plane.stop()
        await external.stop()
