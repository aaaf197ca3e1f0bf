"""Secrets without etcd: sealing, the ECS name mapping, task definitions, resolution per node."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from agent.runtime.docker_spec import container_specs
from agent.runtime.fake import FakeDriver
from agent.supervisor import TaskSupervisor
from berth.errors import InvalidArgument, NotFound
from berth.secretnames import SecretSource, parse_reference, storage_name
from berth.taskdef import parse_container_definitions
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb
from controlplane.cache import ClusterCache
from controlplane.desired import DesiredStates
from controlplane.operations.secrets import PULL_FAILED, Secrets, SecretValues, check_master_key
from controlplane.sealing import MasterKey, SealError, load_or_create_master_key, seal, unseal
from controlplane.store import keys
from controlplane.store.memory import MemoryStore
from tests.unit.conftest import caught_up, put

VALUE = b"hunter2-the-plaintext"

# -- sealing ---------------------------------------------------------------------------


def sealed(master: MasterKey, name: str, value: bytes = VALUE, version: int = 1) -> pb.Secret:
    return seal(master, pb.Secret(name=name, version=version), value)


def test_a_sealed_value_opens_under_its_name_and_holds_no_plaintext() -> None:
    master = MasterKey.generate()
    record = sealed(master, "db-password")
    assert unseal(master, "db-password", record) == VALUE
    assert VALUE not in record.SerializeToString()
    assert master.key not in record.SerializeToString()
    assert record.size == len(VALUE) and record.key_id == master.key_id
    # A fresh data key and nonce each time: the same value never seals the same way twice.
    assert sealed(master, "db-password").ciphertext != record.ciphertext


def test_a_record_moved_to_another_name_or_version_does_not_open() -> None:
    master = MasterKey.generate()
    record = sealed(master, "a")
    with pytest.raises(SealError):
        unseal(master, "b", record)  # copied to secrets/b, name field and all
    record.version = 2
    with pytest.raises(SealError):
        unseal(master, "a", record)


@pytest.mark.parametrize("field", ["ciphertext", "encrypted_key"])
def test_a_flipped_bit_or_a_truncated_ciphertext_is_detected(field: str) -> None:
    master = MasterKey.generate()
    record = sealed(master, "a")
    data = bytearray(getattr(record, field))
    data[-1] ^= 1
    setattr(record, field, bytes(data))
    with pytest.raises(SealError):
        unseal(master, "a", record)
    setattr(record, field, b"short")
    with pytest.raises(SealError):
        unseal(master, "a", record)


def test_another_master_key_cannot_open_it() -> None:
    record = sealed(MasterKey.generate(), "a")
    with pytest.raises(SealError):
        unseal(MasterKey.generate(), "a", record)
    record.key_id = ""  # even without the hint
    with pytest.raises(SealError):
        unseal(MasterKey.generate(), "a", record)


def test_the_master_key_is_created_once_private_and_then_reused(tmp_path: Path) -> None:
    directory = tmp_path / "pki"
    first = load_or_create_master_key(directory)
    path = directory / "secrets.key"
    assert path.stat().st_mode & 0o777 == 0o600
    assert directory.stat().st_mode & 0o077 == 0
    assert load_or_create_master_key(directory) == first
    path.write_bytes(b"short")
    with pytest.raises(RuntimeError, match="not a Berth master key"):
        load_or_create_master_key(directory)


# -- names -------------------------------------------------------------------------------

NAMES = [
    ("db-password", SecretSource("db-password")),
    ("/app/DB_PASSWORD", SecretSource("/app/DB_PASSWORD")),
    ("DB_PASSWORD", SecretSource("DB_PASSWORD")),
    ("arn:aws:ssm:eu-west-1:123456789012:parameter/app/DB_PASSWORD", SecretSource("/app/DB_PASSWORD")),
    ("arn:aws:ssm:us-east-1:123456789012:parameter/DB_PASSWORD", SecretSource("DB_PASSWORD")),
    ("arn:aws-cn:ssm:cn-north-1:123456789012:parameter/a/b", SecretSource("/a/b")),
    ("arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf", SecretSource("prod/db")),
    ("arn:aws:secretsmanager:us-east-1:123456789012:secret:db", SecretSource("db")),
    (
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:appauth-AbCdEf:username::",
        SecretSource("appauth", "username"),
    ),
    (
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:appauth-AbCdEf:password:AWSCURRENT:",
        SecretSource("appauth", "password"),
    ),
    ("arn:aws:secretsmanager:us-east-1:123456789012:secret:appauth-AbCdEf:::", SecretSource("appauth")),
]


@pytest.mark.parametrize(("written", "source"), NAMES)
def test_value_from_maps_to_a_berth_name(written: str, source: SecretSource) -> None:
    assert parse_reference(written) == source


REFUSED = [
    ("", "invalid"),
    ("a b", "invalid"),
    ("a//b", "invalid"),
    ("/app/../x", "invalid"),
    ("app/", "invalid"),
    ("x" * 256, "invalid"),
    ("db\npassword", "invalid"),
    ("arn:aws:s3:::bucket/key", "not an SSM parameter or Secrets Manager ARN"),
    ("arn:aws:ssm:us-east-1:1:document/x", "parameter/NAME"),
    ("arn:aws:secretsmanager:us-east-1:1:secret:db-AbCdEf:key:AWSPREVIOUS:", "only the current version"),
    ("arn:aws:secretsmanager:us-east-1:1:secret:db-AbCdEf:key::0123-abcd", "only the current version"),
    ("arn:aws:secretsmanager:us-east-1:1:secret:db:a:b:c:d", "secret:NAME"),
    ("arn:" + "x" * 3000, "at most"),
]


@pytest.mark.parametrize(("written", "message"), REFUSED)
def test_bad_references_are_refused_in_one_line(written: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message) as caught:
        parse_reference(written)
    assert "\n" not in str(caught.value)


def test_put_stores_under_the_mapped_name_and_refuses_a_json_key() -> None:
    assert storage_name("arn:aws:ssm:us-east-1:1:parameter/app/DB_PASSWORD") == "/app/DB_PASSWORD"
    assert storage_name("arn:aws:secretsmanager:us-east-1:1:secret:appauth-AbCdEf") == "appauth"
    with pytest.raises(InvalidArgument, match="put the whole JSON value under appauth"):
        storage_name("arn:aws:secretsmanager:us-east-1:1:secret:appauth-AbCdEf:username::")


# -- task definitions ----------------------------------------------------------------------


def container(**extra: object) -> dict[str, object]:
    return {"name": "web", "image": "busybox", "memory": 64, **extra}


def test_the_ecs_secrets_field_is_kept_as_references() -> None:
    secrets = [
        {"name": "DB_PASSWORD", "valueFrom": "arn:aws:ssm:us-east-1:1:parameter/app/DB_PASSWORD"},
        {"name": "TOKEN", "valueFrom": "token"},
    ]
    [parsed] = parse_container_definitions([container(secrets=secrets)])
    assert [(s.name, s.value_from) for s in parsed.secrets] == [
        ("DB_PASSWORD", "arn:aws:ssm:us-east-1:1:parameter/app/DB_PASSWORD"),
        ("TOKEN", "token"),
    ]
    assert not parsed.environment


@pytest.mark.parametrize(
    ("secrets", "environment", "message"),
    [
        ([{"name": "A", "valueFrom": "a//b"}], [], r"secrets\[A\]\.valueFrom: secret name"),
        ([{"name": "A=B", "valueFrom": "a"}], [], "name 'A=B' is invalid"),
        ([{"name": "A", "valueFrom": "a"}], [{"name": "A", "value": "x"}], "A is set twice"),
        ([{"name": "A", "valueFrom": "a"}, {"name": "A", "valueFrom": "b"}], [], "A is set twice"),
        ([{"name": "A"}], [], "required field is missing"),
        ([{"name": "A", "valueFrom": "a", "value": "plain"}], [], "unknown field 'value'"),
        ([{"name": f"V{i}", "valueFrom": "a"} for i in range(101)], [], "at most 100"),
    ],
)
def test_bad_secrets_fields_are_refused(
    secrets: list[dict[str, str]], environment: list[dict[str, str]], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse_container_definitions([container(secrets=secrets, environment=environment)])


# -- put, list, delete over the fake store --------------------------------------------------


async def test_put_list_delete_never_store_or_show_the_value(store: MemoryStore) -> None:
    secrets = Secrets(store, MasterKey.generate())
    first = await secrets.put("arn:aws:ssm:us-east-1:1:parameter/app/DB_PASSWORD", VALUE, "alice")
    assert (first.name, first.version, first.size) == ("/app/DB_PASSWORD", 1, len(VALUE))
    second = await secrets.put("/app/DB_PASSWORD", b"new-value", "bob")
    assert (second.version, second.updated_by, second.created_at) == (2, "bob", first.created_at)
    listed = await secrets.all()
    assert [(s.name, s.version) for s in listed] == [("/app/DB_PASSWORD", 2)]
    raw, _ = await store.scan_raw("")
    assert not any(VALUE in e.value or b"new-value" in e.value for e in raw if e.value)
    await secrets.delete("/app/DB_PASSWORD", "bob")
    assert await secrets.all() == []
    with pytest.raises(NotFound):
        await secrets.delete("/app/DB_PASSWORD", "bob")


async def test_secrets_sealed_under_another_master_key_are_reported(store: MemoryStore) -> None:
    first, second = MasterKey.generate(), MasterKey.generate()
    await Secrets(store, first).put("a", VALUE, "alice")
    assert await check_master_key(store, first) == 0
    assert await check_master_key(store, second) == 1


@pytest.mark.parametrize(
    ("value", "message"),
    [(b"", "empty"), (b"x" * 65_537, "65537 bytes"), (b"\xff\xfe", "UTF-8"), (b"a\0b", "NUL")],
)
async def test_bad_values_are_refused_and_nothing_is_written(
    store: MemoryStore, value: bytes, message: str
) -> None:
    before = store.revision
    with pytest.raises(InvalidArgument, match=message):
        await Secrets(store, MasterKey.generate()).put("a", value, "alice")
    assert store.revision == before


# -- resolution for one node -----------------------------------------------------------------

WITH_SECRETS = pb.TaskDefinition(
    family="web",
    revision=1,
    container_definitions=[
        pb.ContainerDefinition(
            name="web",
            image="busybox",
            environment=[pb.KeyValuePair(name="PLAIN", value="1")],
            secrets=[
                pb.SecretReference(name="DB_PASSWORD", value_from="/app/DB_PASSWORD"),
                pb.SecretReference(
                    name="USER", value_from="arn:aws:secretsmanager:r:1:secret:auth-AbCdEf:username::"
                ),
            ],
        ),
        pb.ContainerDefinition(name="sidecar", image="busybox"),
    ],
)


def task(task_id: str, node: str, status: pb.TaskStatus.ValueType = pb.PENDING) -> pb.Task:
    return pb.Task(
        id=task_id,
        cluster="default",
        node_id=node,
        task_definition="web:1",
        desired_status=pb.DESIRED_RUNNING,
        last_status=status,
    )


@pytest.fixture()
def master() -> MasterKey:
    return MasterKey.generate()


async def test_only_the_node_running_the_task_gets_the_values(
    store: MemoryStore, cache: ClusterCache, master: MasterKey
) -> None:
    secrets = Secrets(store, master)
    await secrets.put("/app/DB_PASSWORD", VALUE, "alice")
    await secrets.put("auth", json.dumps({"username": "svc-web", "password": "pw"}).encode(), "alice")
    await put(store, keys.taskdef("web", 1), WITH_SECRETS)
    await put(store, keys.task("t1"), task("t1", "n1"))
    await caught_up(cache, store)
    desired = DesiredStates(cache, SecretValues(cache, master))

    _, state = desired.build("n1")
    [assignment] = state.tasks
    assert not assignment.secrets_error
    assert [
        (g.container, [(v.name, v.value) for v in g.environment]) for g in assignment.secret_environment
    ] == [("web", [("DB_PASSWORD", VALUE.decode()), ("USER", "svc-web")])]
    # The task definition in the assignment carries references only.
    assert VALUE not in assignment.task_definition.SerializeToString()
    _, other = desired.build("n2")
    assert VALUE not in other.SerializeToString() and not other.tasks

    # The agent's container spec puts them in the container's environment, beside the plain ones.
    web, sidecar = container_specs(assignment, "n1")
    assert web.environment == {"PLAIN": "1", "DB_PASSWORD": VALUE.decode(), "USER": "svc-web"}
    assert sidecar.environment == {}


async def test_a_put_rebuilds_the_assignment_and_a_missing_secret_says_why(
    store: MemoryStore, cache: ClusterCache, master: MasterKey
) -> None:
    secrets = Secrets(store, master)
    await put(store, keys.taskdef("web", 1), WITH_SECRETS)
    await put(store, keys.task("t1"), task("t1", "n1"))
    await caught_up(cache, store)
    desired = DesiredStates(cache, SecretValues(cache, master))

    first, state = desired.build("n1")
    assert state.tasks[0].secrets_error.startswith(PULL_FAILED)
    assert "/app/DB_PASSWORD does not exist" in state.tasks[0].secrets_error
    assert not state.tasks[0].secret_environment

    await secrets.put("/app/DB_PASSWORD", VALUE, "alice")
    await secrets.put("auth", b"not json", "alice")
    await caught_up(cache, store)
    second, state = desired.build("n1")
    assert second != first
    assert "auth is not a JSON object with the key 'username'" in state.tasks[0].secrets_error

    await secrets.put("auth", b'{"username": "u"}', "alice")
    await caught_up(cache, store)
    _, state = desired.build("n1")
    assert not state.tasks[0].secrets_error
    assert state.tasks[0].secret_environment[0].environment[1].value == "u"


async def test_a_tampered_record_fails_the_task_instead_of_delivering_anything(
    store: MemoryStore, cache: ClusterCache, master: MasterKey
) -> None:
    await Secrets(store, master).put("/app/DB_PASSWORD", VALUE, "alice")
    await Secrets(store, master).put("auth", b'{"username": "u"}', "alice")
    # Someone with etcd access copies another secret's record over this one.
    await Secrets(store, master).put("other", b"other-value", "alice")
    moved = await store.get(keys.secret("other"), pb.Secret)
    assert moved is not None
    await put(store, keys.secret("/app/DB_PASSWORD"), moved.value)
    await put(store, keys.taskdef("web", 1), WITH_SECRETS)
    await put(store, keys.task("t1"), task("t1", "n1"))
    await caught_up(cache, store)
    _, state = DesiredStates(cache, SecretValues(cache, master)).build("n1")
    assert "cannot be decrypted" in state.tasks[0].secrets_error
    assert b"other-value" not in state.SerializeToString()


async def test_tasks_not_meant_to_run_get_no_values(
    store: MemoryStore, cache: ClusterCache, master: MasterKey
) -> None:
    await Secrets(store, master).put("/app/DB_PASSWORD", VALUE, "alice")
    await put(store, keys.taskdef("web", 1), WITH_SECRETS)
    stopping = task("t1", "n1", pb.RUNNING)
    stopping.desired_status = pb.DESIRED_STOPPED
    await put(store, keys.task("t1"), stopping)
    await caught_up(cache, store)
    _, state = DesiredStates(cache, SecretValues(cache, master)).build("n1")
    assert [t.task_id for t in state.tasks] == ["t1"]
    assert not state.tasks[0].secret_environment and not state.tasks[0].secrets_error


async def test_the_agent_does_not_start_a_task_whose_secrets_failed() -> None:
    driver = FakeDriver()
    supervisor = TaskSupervisor(driver, "n1", resync_interval=0.01)
    reports: list[agent_pb.TaskStatusReport] = []
    reported = asyncio.Event()

    def sink(report: agent_pb.TaskStatusReport) -> None:
        reports.append(report)
        reported.set()

    supervisor.attach(sink)
    reason = f"{PULL_FAILED}: secret x does not exist (berth secret put x)"
    supervisor.set_desired(
        agent_pb.DesiredState(
            revision=1,
            tasks=[
                agent_pb.TaskAssignment(
                    task_id="t1",
                    desired_status=pb.DESIRED_RUNNING,
                    last_status=pb.PENDING,
                    task_definition=WITH_SECRETS,
                    secrets_error=reason,
                )
            ],
        )
    )
    worker = asyncio.create_task(supervisor.run())
    try:
        await asyncio.wait_for(reported.wait(), 5)
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
    assert driver.started == []
    assert (reports[0].last_status, reports[0].stop_code, reports[0].stopped_reason) == (
        pb.STOPPED,
        pb.TASK_FAILED_TO_START,
        reason,
    )
