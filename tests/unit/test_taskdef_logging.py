"""ECS's logConfiguration: engine drivers checked against Docker's option keys, AWS's drivers kept
as written with a note, placeholders untouched, every refusal one line naming the field."""

from __future__ import annotations

import json
from typing import Any

import docker.errors
import pytest

from agent.runtime.docker_driver import unreadable_reason
from agent.runtime.docker_spec import container_specs
from berth.errors import InvalidArgument
from berth.taskdef import (
    parse_container_definitions,
    parse_register_document,
    to_ecs_document,
    validate_task_definition,
)
from berth.taskdef_logging import DRIVERS
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb

AWSLOGS = {
    "logDriver": "awslogs",
    "options": {
        "awslogs-group": "/ecs/web",
        "awslogs-region": "eu-west-1",
        "awslogs-stream-prefix": "${ECS_TASK_ID}",
        "awslogs-create-group": "true",
    },
    "secretOptions": [{"name": "token", "valueFrom": "arn:aws:ssm:eu-west-1:1:parameter/log/token"}],
}
JSON_FILE = {
    "logDriver": "json-file",
    "options": {"max-size": "10m", "max-file": "3", "tag": "{{.Name}}/{{.ID}}/${ECS_TASK_ID}"},
}


def _parse(log: Any) -> tuple[pb.ContainerDefinition, list[str]]:
    notes: list[str] = []
    (c,) = parse_container_definitions(
        [{"name": "app", "image": "busybox", "memory": 64, "logConfiguration": log}], notes
    )
    return c, notes


def _refused(log: Any) -> str:
    with pytest.raises(InvalidArgument) as caught:
        _parse(log)
    message = str(caught.value)
    assert "\n" not in message
    return message


def _log_config(c: pb.ContainerDefinition) -> Any:
    assignment = agent_pb.TaskAssignment(
        task_id="t1", task_definition=pb.TaskDefinition(family="web", revision=1, container_definitions=[c])
    )
    (spec,) = container_specs(assignment, "node-1")
    return spec.create_kwargs().get("log_config")


def test_json_file_options_reach_dockers_log_config_with_placeholders_untouched() -> None:
    c, notes = _parse(JSON_FILE)
    assert notes == []
    assert _log_config(c) == {
        "type": "json-file",
        "config": {"max-file": "3", "max-size": "10m", "tag": "{{.Name}}/{{.ID}}/${ECS_TASK_ID}"},
    }


@pytest.mark.parametrize(
    "log",
    [
        {"logDriver": "local", "options": {"max-size": "20m", "compress": "false"}},
        {"logDriver": "syslog", "options": {"syslog-address": "udp://10.0.0.5:514", "tag": "{{.Name}}"}},
        {"logDriver": "journald", "options": {"tag": "x", "labels": "team"}},
        {"logDriver": "fluentd", "options": {"fluentd-address": "192.0.2.7:24224", "fluentd-async": "true"}},
        {"logDriver": "gelf", "options": {"gelf-address": "udp://172.17.0.9:12201", "mode": "non-blocking"}},
        {"logDriver": "gelf", "options": {"gelf-address": "tcp://[2001:db8::5]:65535"}},
        {"logDriver": "syslog", "options": {"syslog-address": "tcp+tls://logs.example.com:6514"}},
        {"logDriver": "fluentd", "options": {"fluentd-address": "tcp://fluentd.internal:24224"}},
        {"logDriver": "syslog", "options": {"syslog-address": "udp://logs.internal.:1"}},
        {"logDriver": "syslog"},
        {"logDriver": "json-file"},
    ],
)
def test_every_engine_driver_reaches_docker_with_its_options(log: dict[str, Any]) -> None:
    c, notes = _parse(log)
    assert notes == []
    assert _log_config(c) == {"type": log["logDriver"], "config": log.get("options", {})}


@pytest.mark.parametrize("driver", ["awslogs", "awsfirelens"])
def test_aws_drivers_run_on_json_file_with_bounded_rotation_and_a_note(driver: str) -> None:
    options = (
        AWSLOGS["options"] if driver == "awslogs" else {"Name": "datadog", "apikey": "x", "dd_tags": "a"}
    )
    c, notes = _parse({**AWSLOGS, "logDriver": driver, "options": options})
    # Berth's own log path: what `berth logs` reads, bounded on disk whatever the engine's default.
    assert _log_config(c) == {"type": "json-file", "config": {"max-size": "10m", "max-file": "3"}}
    (note,) = notes
    assert note.startswith("containerDefinitions[0].logConfiguration: ")
    assert "json-file, at most 3 files of 10 MiB per container" in note
    assert "berth logs" in note and "not applied" in note and "secretOptions" in note
    assert ("CloudWatch" in note) == (driver == "awslogs")
    assert ("FireLens" in note) == (driver == "awsfirelens")


def test_describe_shows_the_configuration_as_registered_and_registers_again_unchanged() -> None:
    document = {
        "family": "web",
        "containerDefinitions": [
            {"name": "a", "image": "busybox", "memory": 64, "logConfiguration": AWSLOGS},
            {"name": "b", "image": "busybox", "memory": 64, "logConfiguration": JSON_FILE},
        ],
    }
    td, _ = parse_register_document(document)
    described = to_ecs_document(td)
    assert described["containerDefinitions"][0]["logConfiguration"] == AWSLOGS
    assert described["containerDefinitions"][1]["logConfiguration"] == JSON_FILE
    again, _ = parse_register_document(json.loads(json.dumps(described)))
    assert again == td


@pytest.mark.parametrize(
    ("log", "expected"),
    [
        ({"logDriver": "splunk"}, "logConfiguration.logDriver 'splunk' is not supported: use json-file"),
        ({"logDriver": "none"}, "logConfiguration.logDriver 'none' is not supported"),
        ({"options": {}}, "logConfiguration.logDriver: required field is missing"),
        ({"logDriver": "json-file", "options": {"syslog-address": "x"}}, "'syslog-address' is not an option"),
        ({"logDriver": "local", "options": {"tag": "x"}}, "'tag' is not an option of local: local takes"),
        ({"logDriver": "awslogs", "options": {"max-size": "1m"}}, "'max-size' is not an option of awslogs"),
        ({"logDriver": "awsfirelens", "options": {"bad key": "1"}}, "name 'bad key' is invalid"),
        ({"logDriver": "json-file", "options": {"max-size": "lots"}}, "options[max-size] 'lots' is invalid"),
        ({"logDriver": "json-file", "options": {"max-file": "0"}}, "options[max-file] '0' is invalid"),
        ({"logDriver": "gelf", "options": {"mode": "fast"}}, "use blocking or non-blocking"),
        ({"logDriver": "syslog", "options": {"syslog-tls-key": "/etc/shadow"}}, "names a file on the host"),
        (
            {"logDriver": "syslog", "options": {"syslog-address": "unix:///var/run/docker.sock"}},
            "no unix socket on the host",
        ),
        (
            {"logDriver": "fluentd", "options": {"fluentd-address": "unix:///run/etcd.sock"}},
            "no unix socket on the host",
        ),
        ({"logDriver": "gelf", "options": {"gelf-address": "10.0.0.1:12201"}}, "use udp:// or tcp://"),
        ({"logDriver": "fluentd"}, "options: fluentd needs fluentd-address"),
        ({"logDriver": "fluentd", "options": {"tag": "x"}}, "options: fluentd needs fluentd-address"),
        ({"logDriver": "gelf", "options": {"mode": "blocking"}}, "options: gelf needs gelf-address"),
        ({"logDriver": "json-file", "options": {"tag": "a\nb"}}, "options[tag]: the value must be"),
        ({"logDriver": "json-file", "options": {"tag": "x" * 1025}}, "options[tag]: the value must be"),
        (
            {"logDriver": "json-file", "options": {f"k{i}": "v" for i in range(33)}},
            "logConfiguration.options: Dictionary should have at most 32 items",
        ),
        (
            {
                "logDriver": "gelf",
                "options": {"gelf-address": "udp://10.0.0.1:12201"},
                "secretOptions": [{"name": "k", "valueFrom": "s"}],
            },
            "secretOptions: 'k' is not an option of gelf",
        ),
        (
            {"logDriver": "awslogs", "secretOptions": [{"name": "k", "valueFrom": "a\x07b"}]},
            "secretOptions[k].valueFrom: use 1-",
        ),
        ({"logDriver": "json-file", "extra": 1}, "logConfiguration.extra: unknown field"),
    ],
)
def test_refusals_name_the_field(log: dict[str, Any], expected: str) -> None:
    message = _refused(log)
    assert message.startswith("containerDefinitions[0].logConfiguration")
    assert expected in message


@pytest.mark.parametrize(
    ("key", "address", "expected"),
    [
        ("syslog-address", "udp://127.0.0.1:514", "127.0.0.1 is a loopback address"),
        ("syslog-address", "tcp://127.9.9.9", "127.9.9.9 is a loopback address"),
        ("syslog-address", "tcp+tls://localhost:6514", "localhost is the host itself"),
        ("syslog-address", "udp://LocalHost.:514", "LocalHost. is the host itself"),
        ("syslog-address", "udp://etcd.localhost:514", "etcd.localhost is the host itself"),
        ("syslog-address", "udp://[::1]:514", "::1 is a loopback address"),
        ("syslog-address", "udp://[::ffff:127.0.0.1]:514", "::ffff:127.0.0.1 is a loopback address"),
        ("syslog-address", "udp://0.0.0.0:514", "0.0.0.0 is the unspecified address"),
        ("syslog-address", "udp://[::]:514", ":: is the unspecified address"),
        ("gelf-address", "udp://169.254.169.254:80", "169.254.169.254 is a link-local address"),
        ("gelf-address", "tcp://[fe80::1]:12201", "fe80::1 is a link-local address"),
        ("fluentd-address", "127.0.0.1:24224", "127.0.0.1 is a loopback address"),
        ("fluentd-address", "tcp://localhost:24224", "localhost is the host itself"),
        ("fluentd-address", "127.1:24224", "127.1 is neither a DNS name nor an IP address"),
        ("fluentd-address", "2130706433:24224", "2130706433 is neither a DNS name nor an IP address"),
        ("fluentd-address", "0x7f.1:24224", "0x7f.1 is neither a DNS name nor an IP address"),
        ("fluentd-address", "127.000.000.001:24224", "is neither a DNS name nor an IP address"),
        ("syslog-address", "udp://10.0.0.1:0", "the port 0 is not 1-65535"),
        ("gelf-address", "udp://10.0.0.1:65536", "the port 65536 is not 1-65535"),
        ("fluentd-address", "fluentd:99999", "the port 99999 is not 1-65535"),
    ],
)
def test_a_log_destination_on_the_host_itself_is_refused_with_the_reason(
    key: str, address: str, expected: str
) -> None:
    driver = key.removesuffix("-address")
    message = _refused({"logDriver": driver, "options": {key: address}})
    assert message.startswith(
        f"containerDefinitions[0].logConfiguration.options[{key}] '{address}' is refused: "
    )
    assert expected in message


def test_the_control_plane_checks_a_message_no_cli_checked() -> None:
    """A gRPC client can skip the CLI: validate_task_definition refuses what the parser would."""
    for config in (
        pb.LogConfiguration(log_driver="splunk"),
        pb.LogConfiguration(log_driver="json-file", options={"syslog-tls-key": "/etc/shadow"}),
        pb.LogConfiguration(log_driver="json-file", options={"max-size": "x"}),
        pb.LogConfiguration(log_driver="json-file", options={f"k{i}": "v" for i in range(40)}),
        pb.LogConfiguration(log_driver="syslog", options={"syslog-address": "udp://127.0.0.1:514"}),
        pb.LogConfiguration(log_driver="fluentd"),
        pb.LogConfiguration(
            log_driver="syslog", secret_options=[pb.SecretReference(name="a", value_from="b")]
        ),
    ):
        td = pb.TaskDefinition(
            family="web",
            container_definitions=[
                pb.ContainerDefinition(
                    name="app", image="busybox", memory=64, essential=True, log_configuration=config
                )
            ],
        )
        with pytest.raises(InvalidArgument, match=r"^containerDefinitions\[0\]\.logConfiguration"):
            validate_task_definition(td)


def test_every_supported_driver_is_named_in_the_refusal() -> None:
    message = _refused({"logDriver": "logentries"})
    for driver in DRIVERS:
        assert driver in message


def test_an_unreadable_driver_is_said_in_one_clear_line() -> None:
    refused = docker.errors.APIError("400", explanation="configured logging driver does not support reading")
    reason = unreadable_reason(refused)
    assert "log driver keeps no copy" in reason and "\n" not in reason
    assert unreadable_reason(docker.errors.APIError("500", explanation="boom")).startswith("docker: ")
