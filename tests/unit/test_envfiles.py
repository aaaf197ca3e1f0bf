"""ECS's environmentFiles: S3 ARNs checked at registration, read by the agent from its own
directory (never outside it), parsed as ECS parses them, with ECS's precedence."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from agent import envfiles
from agent.runtime.docker_spec import container_specs
from agent.runtime.driver import StartFailed
from berth.errors import InvalidArgument
from berth.taskdef import (
    parse_container_definitions,
    parse_register_document,
    to_ecs_document,
    validate_task_definition,
)
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb

ARN = "arn:aws:s3:::my-bucket/app/prod.env"


def _container(files: list[Any], notes: list[str] | None = None) -> pb.ContainerDefinition:
    (c,) = parse_container_definitions(
        [{"name": "app", "image": "busybox", "memory": 64, "environmentFiles": files}], notes
    )
    return c


def test_registration_keeps_the_value_and_says_where_the_file_is_read() -> None:
    notes: list[str] = []
    secret = "arn:aws:secretsmanager:eu-west-1:123:secret:shop-env-AbCdEf:dotenv::"
    c = _container(
        [{"value": ARN, "type": "s3"}, {"value": secret, "type": "s3"}, {"value": "/shop/env", "type": "s3"}],
        notes,
    )
    assert [(f.value, f.type) for f in c.environment_files] == [
        (ARN, "s3"),
        (secret, "s3"),
        ("/shop/env", "s3"),
    ]
    assert notes == [
        "containerDefinitions[0].environmentFiles[0]: Berth reads no S3; each agent reads "
        "--environment-files-dir/my-bucket/app/prod.env on its own host when the task starts",
        "containerDefinitions[0].environmentFiles[1]: read from the Berth secret shop-env "
        "(its JSON key dotenv) when the task starts",
        "containerDefinitions[0].environmentFiles[2]: read from the Berth secret /shop/env "
        "when the task starts",
    ]


def test_describe_shows_the_files_and_registers_again_unchanged() -> None:
    files = [{"value": ARN, "type": "s3"}, {"value": "arn:aws-cn:s3:::b-2/x.env", "type": "s3"}]
    document = {
        "family": "web",
        "containerDefinitions": [
            {"name": "app", "image": "busybox", "memory": 64, "environmentFiles": files}
        ],
    }
    td, _ = parse_register_document(document)
    described = to_ecs_document(td)
    assert described["containerDefinitions"][0]["environmentFiles"] == files
    again, _ = parse_register_document(json.loads(json.dumps(described)))
    assert again == td


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ([{"value": "s3://b/x.env", "type": "s3"}], "is neither an S3 object ARN"),
        ([{"value": "arn:aws:s3:bucket/x.env", "type": "s3"}], "is not an S3 object ARN"),
        ([{"value": "arn:aws:ssm:eu-west-1:1:nothing/x", "type": "s3"}], "an SSM ARN names parameter/NAME"),
        ([{"value": "app//prod.env", "type": "s3"}], "is neither an S3 object ARN"),
        ([{"value": "arn:aws:s3:::b/../x.env", "type": "s3"}], "the bucket name"),
        ([{"value": "arn:aws:s3:::bucket/../../etc/x.env", "type": "s3"}], "none empty, '.' or '..'"),
        ([{"value": "arn:aws:s3:::bucket/a//x.env", "type": "s3"}], "none empty, '.' or '..'"),
        ([{"value": "arn:aws:s3:::bucket/a b.env", "type": "s3"}], "path segments of letters"),
        ([{"value": "arn:aws:s3:::bucket/passwd", "type": "s3"}], "the .env extension"),
        ([{"value": "arn:aws:s3:::bucket/.env", "type": "s3"}], "the .env extension"),
        ([{"value": ARN, "type": "file"}], "environmentFiles[0].type: Input should be 's3'"),
        ([{"value": ARN}], "environmentFiles[0].type: required field is missing"),
        ([{"value": ARN, "type": "s3"}] * 11, "environmentFiles: List should have at most 10 items"),
        ([{"value": "x" * 2000, "type": "s3"}], "environmentFiles[0].value: String should have at most"),
    ],
)
def test_refusals_name_the_field(files: list[Any], expected: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        _container(files)
    assert str(caught.value).startswith("containerDefinitions[0].environmentFiles")
    assert expected in str(caught.value)


def test_the_control_plane_checks_a_message_no_cli_checked() -> None:
    for file in (
        pb.EnvironmentFile(value="arn:aws:s3:::bucket/../../x.env", type="s3"),
        pb.EnvironmentFile(value=ARN, type="ftp"),
    ):
        td = pb.TaskDefinition(
            family="web",
            container_definitions=[
                pb.ContainerDefinition(
                    name="app", image="busybox", memory=64, essential=True, environment_files=[file]
                )
            ],
        )
        with pytest.raises(InvalidArgument, match=r"^containerDefinitions\[0\]\.environmentFiles\[0\]"):
            validate_task_definition(td)


def test_parsing_follows_ecs_no_quotes_comments_and_first_equals() -> None:
    text = (
        "# a comment\n"
        "\n"
        "A=1\n"
        "  B=two words  \n"
        'QUOTED="kept"\n'
        "URL=postgres://u:p@h/db?x=1\n"
        "EMPTY=\n"
        "NO_EQUALS_IS_SKIPPED\n"
        "   # indented comment\n"
        "PLACEHOLDER=${HOME}\r\n"
    )
    assert envfiles.parse(text, "f") == [
        ("A", "1"),
        ("B", "two words"),
        ("QUOTED", '"kept"'),
        ("URL", "postgres://u:p@h/db?x=1"),
        ("EMPTY", ""),
        ("PLACEHOLDER", "${HOME}"),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("=value\n", "the variable name is invalid"),
        ("A B=1\n", "the variable name is invalid"),
        ("A =1\n", "the variable name is invalid"),
        ("A=x\0y\n", "without NUL"),
    ],
)
def test_a_bad_line_fails_the_start_naming_file_and_line(text: str, expected: str) -> None:
    with pytest.raises(StartFailed) as caught:
        envfiles.parse("OK=1\n" + text, "container app environmentFiles[0]")
    assert str(caught.value).startswith("container app environmentFiles[0] line 2: ")
    assert expected in str(caught.value)
    assert "A B" not in str(caught.value)  # a line is never echoed: the file may be a secret


def test_the_first_file_to_set_a_variable_wins() -> None:
    assert envfiles.merge([[("A", "1"), ("B", "1")], [("A", "2"), ("C", "2")]]) == {
        "A": "1",
        "B": "1",
        "C": "2",
    }


def _definition(*arns: str, **fields: Any) -> pb.ContainerDefinition:
    return pb.ContainerDefinition(
        name="app",
        image="busybox",
        essential=True,
        environment_files=[pb.EnvironmentFile(value=arn, type="s3") for arn in arns],
        **fields,
    )


def _write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _assignment(*containers: pb.ContainerDefinition, **fields: Any) -> agent_pb.TaskAssignment:
    td = pb.TaskDefinition(family="web", revision=1, container_definitions=containers)
    return agent_pb.TaskAssignment(task_id="t1", task_definition=td, **fields)


def test_files_are_read_from_the_directory_and_environment_wins(tmp_path: Path) -> None:
    _write(tmp_path, "my-bucket/app/prod.env", "A=file\nB=file\nS=file\n")
    _write(tmp_path, "my-bucket/app/more.env", "B=second\nC=second\n")
    c = _definition(
        ARN,
        "arn:aws:s3:::my-bucket/app/more.env",
        environment=[pb.KeyValuePair(name="A", value="environment")],
        secrets=[pb.SecretReference(name="S", value_from="s")],
    )
    assignment = _assignment(
        c,
        secret_environment=[
            agent_pb.ContainerSecrets(
                container="app", environment=[pb.KeyValuePair(name="S", value="secret")]
            )
        ],
    )
    files = envfiles.task_files(tmp_path, assignment)
    assert files == {"app": {"A": "file", "B": "file", "S": "file", "C": "second"}}
    (spec,) = container_specs(assignment, "node-1", file_environment=files)
    assert spec.environment == {"A": "environment", "B": "file", "S": "secret", "C": "second"}


def test_a_file_that_is_a_berth_secret_comes_resolved_and_needs_no_directory() -> None:
    secret = "arn:aws:ssm:eu-west-1:123:parameter/shop/prod.env"
    assignment = _assignment(
        _definition(secret, "shared-env"),
        environment_file_secrets=[
            agent_pb.ContainerSecrets(
                container="app",
                environment=[
                    pb.KeyValuePair(name=secret, value="# from a secret\nA=1\nB=1\n"),
                    pb.KeyValuePair(name="shared-env", value="B=2\nC=2\n"),
                ],
            )
        ],
    )
    assert envfiles.task_files(None, assignment) == {"app": {"A": "1", "B": "1", "C": "2"}}
    unresolved = _assignment(_definition(secret))
    with pytest.raises(StartFailed, match="the control plane sent no value for the secret"):
        envfiles.task_files(None, unresolved)


def test_a_missing_file_fails_the_start_with_a_clear_reason(tmp_path: Path) -> None:
    with pytest.raises(StartFailed) as caught:
        envfiles.task_files(tmp_path, _assignment(_definition(ARN)))
    assert str(caught.value) == (
        f"container app environmentFiles[0]: the file {tmp_path.resolve()}/my-bucket/app/prod.env "
        "does not exist on this host"
    )


def test_without_a_directory_the_start_fails_naming_the_flag() -> None:
    with pytest.raises(StartFailed, match="--environment-files-dir"):
        envfiles.task_files(None, _assignment(_definition(ARN)))
    assert envfiles.task_files(None, _assignment()) == {}


def test_a_symbolic_link_out_of_the_directory_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "files"
    (root / "bucket").mkdir(parents=True)
    (tmp_path / "secret.env").write_text("ROOT_PASSWORD=x\n")
    os.symlink(tmp_path / "secret.env", root / "bucket" / "x.env")
    os.symlink(tmp_path, root / "escape")
    with pytest.raises(StartFailed, match="leads outside --environment-files-dir"):
        envfiles.locate(root, "arn:aws:s3:::bucket/x.env", "f")
    with pytest.raises(StartFailed, match="leads outside --environment-files-dir"):
        envfiles.locate(root, "arn:aws:s3:::escape/secret.env", "f")


def test_a_traversing_value_written_past_registration_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StartFailed, match=r"none empty, '\.' or '\.\.'"):
        envfiles.locate(tmp_path, "arn:aws:s3:::bucket/../../../etc/x.env", "f")


def test_only_small_regular_utf8_files_are_read(tmp_path: Path) -> None:
    (tmp_path / "bucket").mkdir()
    os.mkfifo(tmp_path / "bucket" / "fifo.env")
    (tmp_path / "bucket" / "dir.env").mkdir()
    (tmp_path / "bucket" / "big.env").write_bytes(b"A=" + b"x" * envfiles.MAX_FILE_BYTES)
    (tmp_path / "bucket" / "latin1.env").write_bytes(b"A=\xe9\n")
    for name, expected in (
        ("fifo", "is not a regular file"),
        ("dir", "is not a regular file"),
        ("big", "is larger than 256 KiB"),
        ("latin1", "is not UTF-8 text"),
    ):
        c = _definition(f"arn:aws:s3:::bucket/{name}.env")
        with pytest.raises(StartFailed, match=expected):
            envfiles.container_files(tmp_path, c)


def test_too_many_variables_fail_the_start(tmp_path: Path) -> None:
    _write(tmp_path, "b-1/x.env", "".join(f"V{i}=1\n" for i in range(envfiles.MAX_VARIABLES + 1)))
    with pytest.raises(StartFailed, match="the limit is 1000"):
        envfiles.container_files(tmp_path, _definition("arn:aws:s3:::b-1/x.env"))
