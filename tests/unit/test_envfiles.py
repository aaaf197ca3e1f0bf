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
        "B=two words  \n"
        'QUOTED="kept"\n'
        "URL=postgres://u:p@h/db?x=1\n"
        "NO_EQUALS_IS_SKIPPED\n"
        "   # indented comment\n"
        "PLACEHOLDER=${HOME}\r\n"
        "LAST"
    )
    assert envfiles.parse(text, "f") == {
        "A": "1",
        "B": "two words  ",  # spaces are part of the value, as in ECS
        "QUOTED": '"kept"',
        "URL": "postgres://u:p@h/db?x=1",
        "PLACEHOLDER": "${HOME}",
    }


def test_an_empty_name_or_value_is_skipped_as_ecs_skips_it() -> None:
    assert envfiles.parse("EMPTY=\n=value\nA=1\n=\n", "f") == {"A": "1"}


def test_within_one_file_the_last_line_wins() -> None:
    assert envfiles.parse("A=1\nB=1\nA=2\n", "f") == {"A": "2", "B": "1"}


@pytest.mark.parametrize(
    "separator", ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\r"]
)
def test_only_a_newline_ends_a_line_so_a_value_cannot_set_another_variable(separator: str) -> None:
    value = f"foo{separator}PATH=/evil"
    assert envfiles.parse(f"A={value}\n", "f") == {"A": value}


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("SECRET NAME=hunter2-token", "the variable name is invalid"),
        ("SECRETNAME =hunter2-token", "the variable name is invalid"),
        ("  SECRETNAME=hunter2-token", "the variable name is invalid"),
        ("SECRET\tNAME=hunter2-token", "the variable name is invalid"),
        ("SECRETNAME=hunter2\0token", "without NUL"),
        ("SECRETNAME=hunter2-token" + "x" * envfiles.MAX_VALUE_LENGTH, "at most 32768 characters"),
    ],
)
def test_a_bad_line_fails_the_start_naming_file_and_line_never_echoing_it(line: str, expected: str) -> None:
    with pytest.raises(StartFailed) as caught:
        envfiles.parse("OK=1\n" + line + "\n", "container app environmentFiles[0]")
    message = str(caught.value)
    assert message.startswith("container app environmentFiles[0] line 2: ")
    assert expected in message
    # Neither the line, nor its name, nor its value: the file may be a secret.
    name, _, value = line.partition("=")
    for shown in (line, line.strip(), name.strip(), value[:20], "SECRET", "hunter2"):
        assert shown not in message


def test_the_first_file_to_set_a_variable_wins() -> None:
    assert envfiles.merge([{"A": "1", "B": "1"}, {"A": "2", "C": "2"}]) == {
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


def test_a_missing_file_fails_the_start_naming_it_as_registered_not_by_host_path(tmp_path: Path) -> None:
    with pytest.raises(StartFailed) as caught:
        envfiles.task_files(tmp_path, _assignment(_definition(ARN)))
    assert str(caught.value) == (
        "container app environmentFiles[0]: the file my-bucket/app/prod.env does not exist on this host"
    )
    assert str(tmp_path) not in str(caught.value)


def test_without_a_directory_the_start_fails_naming_the_flag() -> None:
    with pytest.raises(StartFailed, match="--environment-files-dir"):
        envfiles.task_files(None, _assignment(_definition(ARN)))
    assert envfiles.task_files(None, _assignment()) == {}


def _refused(root: Path, value: str) -> str:
    with pytest.raises(StartFailed) as caught:
        envfiles.container_files(root, _definition(value))
    message = str(caught.value)
    assert str(root) not in message
    return message


def test_symbolic_links_are_never_followed(tmp_path: Path) -> None:
    root = tmp_path / "files"
    (root / "bucket" / "real").mkdir(parents=True)
    (root / "bucket" / "real" / "x.env").write_text("A=inside\n")
    (tmp_path / "secret.env").write_text("ROOT_PASSWORD=x\n")
    os.symlink(tmp_path / "secret.env", root / "bucket" / "out.env")  # a file outside
    os.symlink(tmp_path, root / "escape")  # a directory outside
    os.symlink("real/x.env", root / "bucket" / "in.env")  # even one that stays inside
    os.symlink("real", root / "bucket" / "alias")
    os.symlink("loop.env", root / "bucket" / "loop.env")  # a loop
    os.symlink("b.env", root / "bucket" / "a.env")
    os.symlink("a.env", root / "bucket" / "b.env")
    os.symlink("spin", root / "bucket" / "spin")
    for value in (
        "arn:aws:s3:::bucket/out.env",
        "arn:aws:s3:::escape/secret.env",
        "arn:aws:s3:::bucket/in.env",
        "arn:aws:s3:::bucket/alias/x.env",
        "arn:aws:s3:::bucket/loop.env",
        "arn:aws:s3:::bucket/a.env",
        "arn:aws:s3:::bucket/spin/x.env",
    ):
        relative = value.removeprefix("arn:aws:s3:::")
        assert _refused(root, value) == (
            f"container app environmentFiles[0]: the file {relative} is, or is under, a symbolic "
            "link or a non-directory: links are not followed"
        )
    assert envfiles.container_files(root, _definition("arn:aws:s3:::bucket/real/x.env")) == {"A": "inside"}


def test_a_directory_swapped_for_a_link_while_opening_is_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a segment is open, the walk goes on from its descriptor: renaming it away and putting a
    link in its place (a race with a check-then-open) reaches nothing outside."""
    root = tmp_path / "files"
    (root / "bucket").mkdir(parents=True)
    (root / "bucket" / "x.env").write_text("A=inside\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.env").write_text("A=outside\n")
    real_open = os.open
    swapped: list[bool] = []

    def racing_open(path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        fd = real_open(path, flags, mode, dir_fd=dir_fd)
        if path == "bucket" and not swapped:
            os.rename(root / "bucket", root / "moved")
            os.symlink(outside, root / "bucket")
            swapped.append(True)
        return fd

    monkeypatch.setattr(os, "open", racing_open)
    variables = envfiles.container_files(root, _definition("arn:aws:s3:::bucket/x.env"))
    monkeypatch.undo()
    assert swapped and variables == {"A": "inside"}
    # And after the swap, the link is refused.
    assert "links are not followed" in _refused(root, "arn:aws:s3:::bucket/x.env")


def test_a_traversing_value_written_past_registration_is_refused(tmp_path: Path) -> None:
    message = _refused(tmp_path, "arn:aws:s3:::bucket/../../../etc/x.env")
    assert "none empty, '.' or '..'" in message


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
        message = _refused(tmp_path, f"arn:aws:s3:::bucket/{name}.env")
        assert message.startswith(f"container app environmentFiles[0]: the file bucket/{name}.env ")
        assert expected in message


def test_too_many_variables_fail_the_start(tmp_path: Path) -> None:
    _write(tmp_path, "b-1/x.env", "".join(f"V{i}=1\n" for i in range(envfiles.MAX_VARIABLES + 1)))
    with pytest.raises(StartFailed, match="the limit is 1000"):
        envfiles.container_files(tmp_path, _definition("arn:aws:s3:::b-1/x.env"))


def test_the_total_size_of_a_containers_variables_is_bounded(tmp_path: Path) -> None:
    """Each file within its own limit, all of them together over the container's."""
    arns = []
    for i in range(3):
        _write(tmp_path, f"b-1/{i}.env", "".join(f"V{i}_{j}=" + "x" * 30_000 + "\n" for j in range(3)))
        arns.append(f"arn:aws:s3:::b-1/{i}.env")
    assert len(envfiles.container_files(tmp_path, _definition(*arns[:2]))) == 6
    with pytest.raises(StartFailed) as caught:
        envfiles.container_files(tmp_path, _definition(*arns))
    assert str(caught.value) == (
        "container app: its environment files set 263 KiB of variables; the limit is 256 KiB"
    )
