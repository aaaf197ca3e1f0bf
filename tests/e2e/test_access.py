"""Only members get in: mutual TLS, join tokens, node identity, roles and the audit log.

Against a real control plane (real TLS, real etcd); agents are played by raw
gRPC clients holding real node certificates, so no Docker is needed.
"""

from __future__ import annotations

import datetime
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from berth import pki
from berth.testing.cli import Berth
from berth.testing.daemons import ControlPlaneProcess
from berth.testing.members import cluster_ca, forged, join, join_channel
from berth.testing.waiting import wait_until
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import agent_pb2_grpc, operator_pb2_grpc
from berth.v1 import operator_pb2 as api


def _registration(name: str, node_id: str = "") -> agent_pb.RegisterRequest:
    return agent_pb.RegisterRequest(
        node_id=node_id, name=name, address="127.0.0.1", cpu_units=1024, memory_mib=1024, agent_version="test"
    )


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlaneProcess]:
    process = ControlPlaneProcess(tmp_path_factory.mktemp("access") / "cp")
    process.start()
    try:
        yield process
    finally:
        process.stop()


def _list_clusters(channel: grpc.Channel) -> grpc.StatusCode:
    try:
        operator_pb2_grpc.OperatorStub(channel).ListClusters(api.ListClustersRequest(), timeout=5)
    except grpc.RpcError as error:
        return error.code()  # type: ignore[attr-defined, no-any-return]
    return grpc.StatusCode.OK


def test_only_certificates_of_this_cluster_get_through(plane: ControlPlaneProcess) -> None:
    before = plane.etcd_snapshot()[1]
    with plane.admin_channel() as channel:
        assert _list_clusters(channel) == grpc.StatusCode.OK
    with grpc.insecure_channel(plane.address) as channel:
        assert _list_clusters(channel) == grpc.StatusCode.UNAVAILABLE, "plain text got through"
    ca = cluster_ca(plane)
    no_certificate = grpc.ssl_channel_credentials(ca.certificate)
    with grpc.secure_channel(
        plane.address, no_certificate, options=[("grpc.ssl_target_name_override", pki.SERVER_NAME)]
    ) as channel:
        assert _list_clusters(channel) == grpc.StatusCode.UNAVAILABLE, "no client certificate got through"
    other = forged(pki.create_ca("other"), "user", "admin")
    with grpc.secure_channel(
        plane.address,
        grpc.ssl_channel_credentials(ca.certificate, other.bundle.key, other.bundle.certificate),
        options=[("grpc.ssl_target_name_override", pki.SERVER_NAME)],
    ) as channel:
        assert _list_clusters(channel) == grpc.StatusCode.UNAVAILABLE, "another CA's certificate got through"
    expired = forged(ca, "user", "admin", datetime.timedelta(minutes=-1))
    with expired.channel(plane.address) as channel:
        assert _list_clusters(channel) == grpc.StatusCode.UNAVAILABLE, "an expired certificate got through"
    # A genuine certificate of a user the cluster does not list (never issued through it).
    unlisted = forged(ca, "user", "mallory")
    with unlisted.channel(plane.address) as channel:
        assert _list_clusters(channel) == grpc.StatusCode.PERMISSION_DENIED
    # A node's certificate is no operator's.
    node = join(plane, "n1")
    with node.channel(plane.address) as channel:
        assert _list_clusters(channel) == grpc.StatusCode.PERMISSION_DENIED
    after = plane.etcd_snapshot()[1]
    assert {k: v for k, v in after.items() if b"/identities/" not in k and b"/jointokens/" not in k} == {
        k: v for k, v in before.items() if b"/identities/" not in k and b"/jointokens/" not in k
    }, "a refused caller wrote"


def _join_code(plane: ControlPlaneProcess, token: str) -> grpc.StatusCode:
    try:
        join(plane, "x", token)
    except grpc.RpcError as error:
        return error.code()  # type: ignore[attr-defined, no-any-return]
    return grpc.StatusCode.OK


def test_used_expired_revoked_and_forged_tokens_are_refused_and_write_nothing(
    plane: ControlPlaneProcess,
) -> None:
    berth = Berth.of(plane)
    single, _ = plane.create_join_token(uses=1)
    assert _join_code(plane, single) == grpc.StatusCode.OK
    short, _ = plane.create_join_token(uses=0, ttl=1)
    revoked, _ = plane.create_join_token(uses=0)
    berth.ok("join-token", "revoke", revoked.split(".")[0])
    time.sleep(1.5)
    before = plane.etcd_snapshot()[1]
    secret_of_single = single.split(".")[1]
    refused = {
        "used": single,
        "expired": short,
        "revoked": revoked,
        "wrong secret": f"{single.split('.')[0]}.{'0' * 32}",
        "unknown": f"{'f' * 8}.{secret_of_single}",
        "malformed": "not a token",
    }
    for why, token in refused.items():
        assert _join_code(plane, token) == grpc.StatusCode.PERMISSION_DENIED, f"a {why} token was accepted"
    assert plane.etcd_snapshot()[1] == before, "a refused join wrote"
    # Tokens are stored hashed: no secret in etcd, and the list never shows one.
    assert not any(secret_of_single.encode() in value for value in before.values())
    listed = berth.ok("join-token", "list", "-o", "json").json()["tokens"]
    assert {t["id"]: bool(t["revoked"]) for t in listed}[revoked.split(".")[0]]
    assert all(not t.get("secretSha256") for t in listed), "a secret's hash is shown"


def test_the_join_listener_shows_the_ca_a_joining_agent_pins(plane: ControlPlaneProcess) -> None:
    import ssl

    host, _, port = plane.join_address.rpartition(":")
    presented = ssl.get_server_certificate((host, int(port))).encode()
    _, ca_hash = plane.create_join_token()
    assert pki.matches_hash(presented, ca_hash)
    with join_channel(plane) as channel:
        # Nothing but Join is served there.
        stub = operator_pb2_grpc.OperatorStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ListClusters(api.ListClustersRequest(), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]


def test_a_node_acts_only_as_itself_and_a_removed_node_is_shut_out(plane: ControlPlaneProcess) -> None:
    a, b = join(plane, "node-a"), join(plane, "node-b")
    with a.channel(plane.address) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        with pytest.raises(grpc.RpcError) as posing:
            stub.Register(_registration("node-b", b.name), timeout=5)
        assert posing.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
        registered = stub.Register(_registration("node-a"), timeout=5)
        assert registered.node_id == a.name

        def hello(node_id: str) -> Iterator[agent_pb.AgentMessage]:
            yield agent_pb.AgentMessage(hello=agent_pb.Hello(node_id=node_id))

        with pytest.raises(grpc.RpcError) as connecting:
            for _ in stub.Connect(hello(b.name), timeout=5):
                pass
        assert connecting.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]

        # A renewal whose answer was lost: the old certificate still works for a
        # short grace, long enough to renew again with it.
        lost = stub.RenewCertificate(
            agent_pb.RenewCertificateRequest(csr=pki.csr_pem(pki.new_key())), timeout=5
        )
        assert pki.identity(lost.certificate).name == a.name
        stub.Register(_registration("node-a"), timeout=5)
        key = pki.new_key()
        renewed = stub.RenewCertificate(agent_pb.RenewCertificateRequest(csr=pki.csr_pem(key)), timeout=5)
        # Two renewals on, the first certificate is refused.
        with pytest.raises(grpc.RpcError) as stale:
            stub.Register(_registration("node-a"), timeout=5)
        assert stale.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]

    fresh = type(a)(a.name, pki.KeyPair(renewed.certificate, pki.key_pem(key)), a.ca_certificate)
    with fresh.channel(plane.address) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        stub.Register(_registration("node-a"), timeout=5)
        Berth.of(plane).ok("node", "remove", a.name, "--force")
        with pytest.raises(grpc.RpcError) as removed:
            stub.Register(_registration("node-a"), timeout=5)
        assert removed.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def people(plane: ControlPlaneProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Berth]:
    directory = tmp_path_factory.mktemp("people")
    admin = Berth.of(plane)
    for name, role in (("vera", "viewer"), ("dan", "deployer")):
        admin.ok("user", "create", name, "--role", role, "--out", str(directory / name))
    admin.ok(
        "taskdef", "register", "--family", "web", "--container-definitions",
        json.dumps([{"name": "web", "image": "anything:1", "memory": 16}]),
    )  # fmt: skip
    return {
        "admin": admin,
        "viewer": Berth(plane.address, directory / "vera"),
        "deployer": Berth(plane.address, directory / "dan"),
    }


@pytest.fixture(scope="module")
def targets(plane: ControlPlaneProcess, people: dict[str, Berth]) -> dict[str, str]:
    """Real objects for refused calls to aim at, so "nothing changed" means something: a
    service, a task, a joined node (identity only: no stream, so nothing changes on its own)
    and a join token."""
    admin = people["admin"]
    admin.ok("service", "create", "--name", "kept", "--task-definition", "web", "--desired-count", "0")
    task = admin.ok("task", "run", "--task-definition", "web").stdout.strip()
    # No node takes it: it stays PENDING, and once the scheduler said why, nothing writes it again.
    wait_until(
        lambda: admin.ok("task", "describe", task, "-o", "json").json()["berth"].get("pendingReason"),
        15,
        "the task is pending with a reason",
        interval=0.2,
    )
    node = join(plane, "node-r").name
    token = plane.create_join_token(uses=1)[0].split(".", 1)[0]
    return {"TASK": task, "NODE": node, "TOKEN": token}


# Each refused command and the one RPC it is refused at (TASK, NODE, TOKEN: the targets).
VIEWER_REFUSED: list[tuple[list[str], str]] = [
    (["cluster", "create", "nope"], "CreateCluster"),
    (["cluster", "delete", "default"], "DeleteCluster"),
    (
        [
            "taskdef",
            "register",
            "--family",
            "x",
            "--container-definitions",
            '[{"name": "x", "image": "a:1", "memory": 8}]',
        ],
        "RegisterTaskDefinition",
    ),
    (["taskdef", "deregister", "web:1"], "DeregisterTaskDefinition"),
    (
        ["service", "create", "--name", "v", "--task-definition", "web", "--desired-count", "0"],
        "CreateService",
    ),
    (["service", "update", "kept", "--desired-count", "1"], "UpdateService"),
    (["service", "delete", "kept"], "DeleteService"),
    (["task", "run", "--task-definition", "web"], "RunTask"),
    (["task", "stop", "TASK"], "StopTask"),
    (["node", "drain", "NODE"], "UpdateNodeStatus"),
    (["join-token", "create"], "CreateJoinToken"),
    (["user", "create", "eve", "--role", "admin", "--out", "/nonexistent/eve"], "CreateUser"),
]
DEPLOYER_REFUSED: list[tuple[list[str], str]] = [
    (["node", "drain", "NODE"], "UpdateNodeStatus"),
    (["node", "remove", "NODE", "--force"], "RemoveNode"),
    (["join-token", "create"], "CreateJoinToken"),
    (["join-token", "list"], "ListJoinTokens"),
    (["join-token", "revoke", "TOKEN"], "RevokeJoinToken"),
    (["user", "list"], "ListUsers"),
    (["cluster", "create", "nope"], "CreateCluster"),
]


def _audit(plane: ControlPlaneProcess) -> list[dict[str, str]]:
    return [json.loads(line) for line in (plane.data_dir / "audit.log").read_text().splitlines()]


def test_roles_decide_what_each_user_may_do_and_every_attempt_is_audited(
    plane: ControlPlaneProcess, people: dict[str, Berth], targets: dict[str, str]
) -> None:
    viewer, deployer = people["viewer"], people["deployer"]
    viewer.ok("service", "list")
    viewer.ok("taskdef", "list")
    before = plane.etcd_snapshot()[1]
    audited = len(_audit(plane))
    expected = []
    for user, role, berth, refusals in (
        ("vera", "viewer", viewer, VIEWER_REFUSED),
        ("dan", "deployer", deployer, DEPLOYER_REFUSED),
    ):
        for args, call in refusals:
            berth(*[targets.get(arg, arg) for arg in args]).assert_refused(
                f"user {user} ({role}) may not {call}"
            )
            expected.append((user, call))
    assert {k: v for k, v in plane.etcd_snapshot()[1].items() if b"/events/" not in k} == {
        k: v for k, v in before.items() if b"/events/" not in k
    }, "a refused call wrote"
    # One audit line per refused attempt, in order: who, which call, and that it was denied.
    attempts = _audit(plane)[audited:]
    assert [(e["user"], e["call"]) for e in attempts] == expected
    for entry in attempts:
        assert entry["result"].startswith(f"denied: user {entry['user']} (")
        assert f"may not {entry['call']}: it needs " in entry["result"]
    targeted = {e["call"]: e["target"] for e in attempts if e["user"] == "vera"}
    assert targeted["StopTask"] == f"cluster=default id={targets['TASK']}"
    assert targeted["DeleteService"] == "cluster=default name=kept"

    deployer.ok("service", "create", "--name", "shipped", "--task-definition", "web", "--desired-count", "0")
    deployer.ok("service", "update", "shipped", "--desired-count", "0", "--deregistration-delay", "1")
    deployer.ok("service", "delete", "shipped")

    audit = _audit(plane)
    allowed = {(e["user"], e["call"], e["target"]) for e in audit if e["result"] == "ok"}
    assert ("dan", "CreateService", "cluster=default name=shipped task_definition=web") in allowed
    assert ("dan", "DeleteService", "cluster=default name=shipped") in allowed
    assert all(set(e) == {"time", "user", "call", "target", "result"} for e in audit)
    # Reads are not audited.
    assert not any(e["call"].startswith("List") and e["user"] == "vera" for e in audit)


def test_a_deleted_user_is_refused_at_once(plane: ControlPlaneProcess, tmp_path: Path) -> None:
    admin = Berth.of(plane)
    admin.ok("user", "create", "temp", "--role", "viewer", "--out", str(tmp_path / "temp"))
    temp = Berth(plane.address, tmp_path / "temp")
    temp.ok("cluster", "list")
    admin.ok("user", "delete", "temp")
    wait_until(lambda: temp("cluster", "list").exit_code == 1 or None, 10, "the deleted user refused")
    temp("cluster", "list").assert_refused("revoked")
    admin("user", "delete", "admin").assert_refused("you cannot delete yourself")


def test_removing_a_node_cuts_its_open_stream(plane: ControlPlaneProcess) -> None:
    node = join(plane, "node-c")
    with node.channel(plane.address) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        stub.Register(_registration("node-c"), timeout=5)
        stop = threading.Event()

        def messages() -> Iterator[agent_pb.AgentMessage]:
            yield agent_pb.AgentMessage(hello=agent_pb.Hello(node_id=node.name))
            stop.wait(30)

        stream = stub.Connect(messages(), timeout=30)
        first = next(iter(stream))
        assert first.HasField("desired_state")
        Berth.of(plane).ok("node", "remove", node.name, "--force")
        try:
            with pytest.raises(grpc.RpcError) as cut:
                for _ in stream:
                    pass
            assert cut.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
        finally:
            stop.set()
