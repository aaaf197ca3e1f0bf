"""Environment files that are Berth secrets: resolved by the control plane for the task's node
only, rebuilt when the secret changes, a missing one said in the assignment (the agent then
stops the task as TASK_FAILED_TO_START); files on the host are left to the agent."""

from __future__ import annotations

from agent import envfiles
from berth.v1 import resources_pb2 as pb
from controlplane.cache import ClusterCache
from controlplane.desired import DesiredStates
from controlplane.operations.secrets import PULL_FAILED, Secrets, SecretValues
from controlplane.sealing import MasterKey
from controlplane.store import keys
from controlplane.store.memory import MemoryStore
from tests.unit.conftest import caught_up, put

SECRET_FILE = "arn:aws:ssm:eu-west-1:123:parameter/shop/prod.env"
HOST_FILE = "arn:aws:s3:::config/shop.env"
DEFINITION = pb.TaskDefinition(
    family="web",
    revision=1,
    container_definitions=[
        pb.ContainerDefinition(
            name="web",
            image="busybox",
            environment_files=[
                pb.EnvironmentFile(value=SECRET_FILE, type="s3"),
                pb.EnvironmentFile(value=HOST_FILE, type="s3"),
            ],
        ),
        pb.ContainerDefinition(name="sidecar", image="busybox"),
    ],
)


def _task(node: str) -> pb.Task:
    return pb.Task(
        id="t1",
        cluster="default",
        node_id=node,
        task_definition="web:1",
        desired_status=pb.DESIRED_RUNNING,
        last_status=pb.PENDING,
    )


async def test_only_the_tasks_node_gets_the_text_and_a_put_rebuilds_it(
    store: MemoryStore, cache: ClusterCache
) -> None:
    master = MasterKey.generate()
    await put(store, keys.taskdef("web", 1), DEFINITION)
    await put(store, keys.task("t1"), _task("n1"))
    await caught_up(cache, store)
    desired = DesiredStates(cache, SecretValues(cache, master))

    first, state = desired.build("n1")
    (assignment,) = state.tasks
    assert assignment.secrets_error == f"{PULL_FAILED}: secret /shop/prod.env does not exist " + (
        "(berth secret put /shop/prod.env)"
    )
    assert not assignment.environment_file_secrets

    await Secrets(store, master).put("/shop/prod.env", b"DB_HOST=db.internal\n", "alice")
    await caught_up(cache, store)
    second, state = desired.build("n1")
    assert second != first
    (assignment,) = state.tasks
    assert not assignment.secrets_error
    assert [
        (g.container, [(p.name, p.value) for p in g.environment]) for g in assignment.environment_file_secrets
    ] == [("web", [(SECRET_FILE, "DB_HOST=db.internal\n")])]  # the host file is the agent's to read
    assert b"db.internal" not in assignment.task_definition.SerializeToString()
    _, other = desired.build("n2")
    assert b"db.internal" not in other.SerializeToString()

    # The agent parses it beside its own files (here the host file's directory is missing).
    resolved = {p.name: p.value for p in assignment.environment_file_secrets[0].environment}
    web = assignment.task_definition.container_definitions[0]
    del web.environment_files[1]
    assert envfiles.container_files(None, web, resolved) == {"DB_HOST": "db.internal"}


async def test_host_files_alone_need_no_secrets(store: MemoryStore, cache: ClusterCache) -> None:
    only_host = pb.TaskDefinition()
    only_host.CopyFrom(DEFINITION)
    del only_host.container_definitions[0].environment_files[0]
    await put(store, keys.taskdef("web", 1), only_host)
    await put(store, keys.task("t1"), _task("n1"))
    await caught_up(cache, store)
    # No secret store at all: a task naming none still gets no error.
    _, state = DesiredStates(cache, None).build("n1")
    (assignment,) = state.tasks
    assert not assignment.secrets_error and not assignment.environment_file_secrets


async def test_an_invalid_value_written_past_registration_fails_naming_the_value(
    store: MemoryStore, cache: ClusterCache
) -> None:
    """A record no registration checked: its start fails with a reason that names the value, not
    an empty secret name."""
    bad = pb.TaskDefinition()
    bad.CopyFrom(DEFINITION)
    bad.container_definitions[0].environment_files[0].value = "s3://bucket/x.env"
    await put(store, keys.taskdef("web", 1), bad)
    await put(store, keys.task("t1"), _task("n1"))
    await caught_up(cache, store)
    _, state = DesiredStates(cache, SecretValues(cache, MasterKey.generate())).build("n1")
    (assignment,) = state.tasks
    assert assignment.secrets_error.startswith(
        f"{PULL_FAILED}: the environment file 's3://bucket/x.env' is invalid: 's3://bucket/x.env' is "
        "neither an S3 object ARN"
    )
    assert "secret  does not exist" not in assignment.secrets_error
    assert not assignment.environment_file_secrets
