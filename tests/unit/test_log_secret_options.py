"""logConfiguration.secretOptions: an engine driver's log options whose values are Berth
secrets. Checked like option keys at registration, resolved by the control plane for the
task's node only (checked there as option values, never echoed), merged by the agent into
Docker's LogConfig; awslogs and awsfirelens keep theirs as written, unresolved."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agent.redaction import REDACTED, without_secrets
from agent.runtime.docker_spec import container_specs
from agent.runtime.driver import StartFailed
from agent.runtime.fake import FakeDriver
from agent.supervisor import TaskSupervisor
from berth.errors import InvalidArgument
from berth.taskdef import parse_container_definitions, to_ecs_document, validate_task_definition
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb
from controlplane.cache import ClusterCache
from controlplane.desired import DesiredStates
from controlplane.operations.secrets import PULL_FAILED, Secrets, SecretValues, names_any
from controlplane.sealing import MasterKey
from controlplane.store import keys
from controlplane.store.memory import MemoryStore
from tests.unit.conftest import caught_up, put

TAG = "log-tag-s3cr3t-5150"
TAGGED = {
    "logDriver": "json-file",
    "options": {"max-size": "10m"},
    "secretOptions": [{"name": "tag", "valueFrom": "arn:aws:ssm:eu-west-1:1:parameter/log/tag"}],
}


def _parse(log: Any) -> tuple[pb.ContainerDefinition, list[str]]:
    notes: list[str] = []
    (c,) = parse_container_definitions(
        [{"name": "app", "image": "busybox", "memory": 64, "logConfiguration": log}], notes
    )
    return c, notes


def _definition(*containers: pb.ContainerDefinition) -> pb.TaskDefinition:
    return pb.TaskDefinition(family="web", revision=1, container_definitions=containers)


# -- registration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "log",
    [
        TAGGED,
        {"logDriver": "local", "secretOptions": [{"name": "max-size", "valueFrom": "log/size"}]},
        {
            "logDriver": "syslog",
            "options": {"syslog-address": "udp://10.0.0.5:514"},
            "secretOptions": [{"name": "syslog-facility", "valueFrom": "facility"}],
        },
        {
            "logDriver": "fluentd",
            "options": {"fluentd-address": "192.0.2.7:24224"},
            "secretOptions": [
                {"name": "tag", "valueFrom": "arn:aws:secretsmanager:r:1:secret:fluent-AbCdEf:tag::"}
            ],
        },
    ],
)
def test_an_engine_drivers_secret_options_are_kept_as_references(log: dict[str, Any]) -> None:
    c, notes = _parse(log)
    assert notes == []
    assert names_any(_definition(c))
    document = to_ecs_document(_definition(c))
    assert document["containerDefinitions"][0]["logConfiguration"]["secretOptions"] == log["secretOptions"]


@pytest.mark.parametrize(
    ("log", "expected"),
    [
        (
            {"logDriver": "json-file", "secretOptions": [{"name": "token", "valueFrom": "s"}]},
            "secretOptions: 'token' is not an option of json-file: json-file takes ",
        ),
        (
            {"logDriver": "syslog", "secretOptions": [{"name": "syslog-tls-key", "valueFrom": "s"}]},
            "secretOptions: syslog-tls-key names a file on the host",
        ),
        (
            {
                "logDriver": "gelf",
                "options": {"gelf-address": "udp://10.0.0.1:12201"},
                "secretOptions": [{"name": "gelf-address", "valueFrom": "s"}],
            },
            "secretOptions: gelf-address is set twice (in options or secretOptions)",
        ),
        (
            {"logDriver": "syslog", "secretOptions": [{"name": "syslog-address", "valueFrom": "s"}]},
            "secretOptions: syslog-address is an address, which is checked when registered",
        ),
        (
            {
                "logDriver": "json-file",
                "options": {"tag": "plain"},
                "secretOptions": [{"name": "tag", "valueFrom": "s"}],
            },
            "secretOptions: tag is set twice (in options or secretOptions)",
        ),
        (
            {
                "logDriver": "json-file",
                "secretOptions": [{"name": "tag", "valueFrom": "a"}, {"name": "tag", "valueFrom": "b"}],
            },
            "secretOptions: tag is set twice",
        ),
        (
            {"logDriver": "json-file", "secretOptions": [{"name": "tag", "valueFrom": "a//b"}]},
            "secretOptions[tag].valueFrom: secret name 'a//b' is invalid",
        ),
        (
            {
                "logDriver": "json-file",
                "secretOptions": [{"name": "tag", "valueFrom": "arn:aws:s3:::bucket"}],
            },
            "secretOptions[tag].valueFrom: 'arn:aws:s3:::bucket' is not an SSM parameter",
        ),
        (
            {"logDriver": "json-file", "secretOptions": [{"name": "ta g", "valueFrom": "s"}]},
            "secretOptions: name 'ta g' is invalid",
        ),
    ],
)
def test_an_engine_drivers_secret_option_is_checked_like_an_option_key(
    log: dict[str, Any], expected: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        _parse(log)
    message = str(caught.value)
    assert message.startswith("containerDefinitions[0].logConfiguration.")
    assert expected in message and "\n" not in message


def test_the_control_plane_checks_secret_options_no_cli_checked() -> None:
    for option in (
        pb.SecretReference(name="syslog-tls-cert", value_from="s"),
        pb.SecretReference(name="syslog-address", value_from="s"),
        pb.SecretReference(name="tag", value_from="a/../b"),
    ):
        config = pb.LogConfiguration(log_driver="syslog", secret_options=[option])
        container = pb.ContainerDefinition(
            name="app", image="busybox", memory=64, essential=True, log_configuration=config
        )
        with pytest.raises(
            InvalidArgument, match=r"^containerDefinitions\[0\]\.logConfiguration\.secretOptions"
        ):
            validate_task_definition(_definition(container))


def test_aws_drivers_keep_theirs_as_written_and_nothing_is_resolved() -> None:
    c, notes = _parse(
        {
            "logDriver": "awsfirelens",
            "options": {"Name": "datadog", "apikey": "placeholder"},
            # Not a Berth name (a placeholder real files carry): kept, as it is never resolved.
            "secretOptions": [{"name": "apikey", "valueFrom": "${DD_API_KEY}"}],
        }
    )
    assert "secretOptions are kept as written but not applied" in notes[0]
    assert not names_any(_definition(c))


# -- resolution for the task's node only ---------------------------------------------------


def _task(task_id: str, node: str) -> pb.Task:
    return pb.Task(
        id=task_id,
        cluster="default",
        node_id=node,
        task_definition="web:1",
        desired_status=pb.DESIRED_RUNNING,
        last_status=pb.PENDING,
    )


async def _desired(store: MemoryStore, cache: ClusterCache, master: MasterKey, log: Any) -> DesiredStates:
    c, _ = _parse(log)
    await put(store, keys.taskdef("web", 1), _definition(c, pb.ContainerDefinition(name="plain", image="b")))
    await put(store, keys.task("t1"), _task("t1", "n1"))
    await caught_up(cache, store)
    return DesiredStates(cache, SecretValues(cache, master))


async def test_only_the_node_running_the_task_gets_the_log_options_value(
    store: MemoryStore, cache: ClusterCache
) -> None:
    master = MasterKey.generate()
    secrets = Secrets(store, master)
    await secrets.put("/log/tag", TAG.encode(), "alice")
    desired = await _desired(store, cache, master, TAGGED)

    _, state = desired.build("n1")
    [assignment] = state.tasks
    assert not assignment.secrets_error
    assert [
        (g.container, [(v.name, v.value) for v in g.environment]) for g in assignment.log_secret_options
    ] == [("app", [("tag", TAG)])]
    assert TAG.encode() not in assignment.task_definition.SerializeToString()
    _, other = desired.build("n2")
    assert TAG.encode() not in other.SerializeToString() and not other.tasks

    # The agent merges the value into Docker's LogConfig beside the plain options.
    app, plain = container_specs(assignment, "n1")
    assert app.create_kwargs()["log_config"] == {
        "type": "json-file",
        "config": {"max-size": "10m", "tag": TAG},
    }
    assert TAG not in app.environment.values()
    assert plain.log_config is None

    # A put is a new version of the assignment: the new value is sent.
    first, _ = desired.build("n1")
    await secrets.put("/log/tag", b"second-tag", "alice")
    await caught_up(cache, store)
    second, state = desired.build("n1")
    assert second != first
    assert state.tasks[0].log_secret_options[0].environment[0].value == "second-tag"


async def test_a_missing_or_unfit_secret_fails_the_start_naming_it_and_sends_no_value(
    store: MemoryStore, cache: ClusterCache
) -> None:
    master = MasterKey.generate()
    secrets = Secrets(store, master)
    log = {
        "logDriver": "json-file",
        "secretOptions": [
            {"name": "tag", "valueFrom": "/log/tag"},
            {"name": "max-size", "valueFrom": "size"},
        ],
    }
    desired = await _desired(store, cache, master, log)
    await secrets.put("/log/tag", TAG.encode(), "alice")
    await caught_up(cache, store)

    _, state = desired.build("n1")
    [assignment] = state.tasks
    assert assignment.secrets_error == f"{PULL_FAILED}: secret size does not exist (berth secret put size)"
    # The tag resolved before the missing size is not sent either: the task will not start.
    assert not assignment.log_secret_options and TAG.encode() not in state.SerializeToString()

    # A value the option cannot take is refused at resolution, and the reason never quotes it.
    await secrets.put("size", b"huge-and-secret", "alice")
    await caught_up(cache, store)
    _, state = desired.build("n1")
    reason = state.tasks[0].secrets_error
    assert reason.startswith(PULL_FAILED)
    assert "secretOptions[max-size]: the value of secret size is refused: max-size takes a size" in reason
    assert "huge-and-secret" not in reason and not state.tasks[0].log_secret_options

    await secrets.put("size", b"5m", "alice")
    await caught_up(cache, store)
    _, state = desired.build("n1")
    assert not state.tasks[0].secrets_error
    assert {v.name: v.value for v in state.tasks[0].log_secret_options[0].environment} == {
        "tag": TAG,
        "max-size": "5m",
    }


# -- the agent -----------------------------------------------------------------------------


def test_the_agent_starts_nothing_when_a_log_options_value_was_not_sent() -> None:
    c, _ = _parse(TAGGED)
    assignment = agent_pb.TaskAssignment(task_id="t1", task_definition=_definition(c))
    with pytest.raises(StartFailed, match="the control plane sent no value for the log option tag"):
        container_specs(assignment, "n1")


def test_a_start_failure_reason_never_carries_a_resolved_value() -> None:
    assignment = agent_pb.TaskAssignment(
        secret_environment=[
            agent_pb.ContainerSecrets(container="a", environment=[pb.KeyValuePair(name="P", value="pw-1")])
        ],
        log_secret_options=[
            agent_pb.ContainerSecrets(
                container="a", environment=[pb.KeyValuePair(name="tag", value=TAG), pb.KeyValuePair(name="x")]
            )
        ],
    )
    said = without_secrets(f"CannotCreateContainerError: bad tag {TAG!r}; pw-1", assignment)
    assert said == f"CannotCreateContainerError: bad tag '{REDACTED}'; {REDACTED}"


async def test_the_supervisor_reports_a_failed_start_without_the_value() -> None:
    # The fake engine quotes the image it cannot pull: here the same text as the log option.
    c, _ = _parse(TAGGED)
    c.image = TAG
    driver = FakeDriver(fail_images=frozenset({TAG}))
    supervisor = TaskSupervisor(driver, "n1", resync_interval=0.01)
    reports: list[agent_pb.TaskStatusReport] = []
    reported = asyncio.Event()

    def sink(report: agent_pb.TaskStatusReport) -> None:
        reports.append(report)
        reported.set()

    supervisor.attach(sink)
    supervisor.set_desired(
        agent_pb.DesiredState(
            revision=1,
            tasks=[
                agent_pb.TaskAssignment(
                    task_id="t1",
                    desired_status=pb.DESIRED_RUNNING,
                    last_status=pb.PENDING,
                    task_definition=_definition(c),
                    log_secret_options=[
                        agent_pb.ContainerSecrets(
                            container="app", environment=[pb.KeyValuePair(name="tag", value=TAG)]
                        )
                    ],
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
    assert reports[0].stop_code == pb.TASK_FAILED_TO_START
    assert reports[0].stopped_reason == f"CannotPullContainerError: {REDACTED}: not found"
