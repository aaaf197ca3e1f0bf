"""Access keys against a real control plane (real TLS, real etcd): created and listed through the
CLI, the secret shown once and found nowhere else (etcd, audit log, logs), gone with their user;
and the AWS profile a first start writes for the administrator."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from berth.testing.cli import Berth
from berth.testing.daemons import ControlPlaneProcess

KEY_ID = re.compile(r"AKIA[A-Z2-7]{16}")
SECRET = re.compile(r"[A-Za-z0-9/+]{40}")


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlaneProcess]:
    process = ControlPlaneProcess(tmp_path_factory.mktemp("access-keys") / "cp")
    process.start()
    try:
        yield process
    finally:
        process.stop()


def _everything_written(plane: ControlPlaneProcess) -> bytes:
    """Every key and value in etcd, the audit log and the control plane's own log."""
    _, entries = plane.etcd_snapshot()
    return b"".join(
        [
            *(key + b"=" + value for key, value in entries.items()),
            (plane.data_dir / "audit.log").read_bytes(),
            plane.log_path.read_bytes(),
        ]
    )


def test_a_users_keys_are_shown_once_stored_sealed_and_go_with_the_user(
    plane: ControlPlaneProcess, tmp_path: Path
) -> None:
    admin = Berth.of(plane)
    admin.ok("user", "create", "carol", "--role", "deployer", "--out", str(tmp_path / "carol"))

    created = admin.ok("access-key", "create", "--user", "carol", "-o", "json").json()["AccessKey"]
    assert set(created) == {"UserName", "AccessKeyId", "Status", "SecretAccessKey", "CreateDate"}
    assert created["UserName"] == "carol" and created["Status"] == "Active"
    first_id, first_secret = created["AccessKeyId"], created["SecretAccessKey"]
    assert KEY_ID.fullmatch(first_id) and SECRET.fullmatch(first_secret)

    table = admin.ok("access-key", "create", "--user", "carol")
    second_id = re.search(r"AccessKeyId:\s+(\S+)", table.stdout)
    second_secret = re.search(r"SecretAccessKey:\s+(\S+)", table.stdout)
    assert (
        second_id and second_secret and KEY_ID.fullmatch(second_id[1]) and SECRET.fullmatch(second_secret[1])
    )
    assert "aws configure --profile" in table.stderr and "AWS_ACCESS_KEY_ID" in table.stderr
    admin("access-key", "create", "--user", "carol").assert_refused("already has 2 access keys")
    admin("access-key", "create", "--user", "nobody").assert_refused("user nobody does not exist")

    listed = admin.ok("access-key", "list", "--user", "carol", "-o", "json")
    metadata = listed.json()["AccessKeyMetadata"]
    assert sorted(k["AccessKeyId"] for k in metadata) == sorted([first_id, second_id[1]])
    assert all(set(k) == {"UserName", "AccessKeyId", "Status", "CreateDate"} for k in metadata)
    shown = (
        listed.stdout
        + admin.ok("access-key", "list").stdout
        + admin.ok("access-key", "list", "-o", "yaml").stdout
    )
    assert first_id in shown and first_secret not in shown and second_secret[1] not in shown

    # Never in clear anywhere the control plane writes: etcd, the audit log, its log.
    written = _everything_written(plane)
    assert f"/berth/accesskeys/{first_id}".encode() in written
    for secret in (first_secret, second_secret[1]):
        assert secret.encode() not in written, "an access key's secret is stored or logged in clear"
    audit = [json.loads(line) for line in (plane.data_dir / "audit.log").read_text().splitlines()]
    made = [e for e in audit if e["call"] == "CreateAccessKey"]
    assert {(e["user"], e["target"], e["result"]) for e in made} >= {("admin", "user=carol", "ok")}

    # Only an admin manages keys, even its own.
    carol = Berth(plane.address, tmp_path / "carol")
    carol("access-key", "create", "--user", "carol").assert_refused("may not CreateAccessKey")
    carol("access-key", "list").assert_refused("may not ListAccessKeys")

    admin.ok("access-key", "delete", first_id)
    assert [
        k["AccessKeyId"]
        for k in admin.ok("access-key", "list", "-o", "json").json()["AccessKeyMetadata"]
        if k["UserName"] == "carol"
    ] == [second_id[1]]
    admin("access-key", "delete", first_id).assert_refused(f"access key {first_id} does not exist")
    admin("access-key", "delete", "not-a-key").assert_refused("an access key id is AKIA")

    admin.ok("user", "delete", "carol")
    assert admin.ok("access-key", "list", "--user", "carol", "-o", "json").json() == {"AccessKeyMetadata": []}
    assert b"/accesskeys/" not in b"".join(plane.etcd_snapshot()[1]), "a deleted user's key is left in etcd"


def test_a_first_start_writes_an_admin_key_as_the_aws_profile_berth(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    base = tmp_path_factory.mktemp("aws-profile")
    aws = base / "aws"
    process = ControlPlaneProcess(base / "cp", extra_args=["--aws-profile-dir", str(aws)])
    process.start()
    try:
        config = (aws / "config").read_text()
        credentials = (aws / "credentials").read_text()
        # The ECS API's own port (ControlPlaneProcess gives each plane a free one).
        assert "[profile berth]\n" in config and f"endpoint_url = https://{process.ecs_address}\n" in config
        assert "region = local\n" in config and "output = json\n" in config
        ca_bundle = process.admin_config.with_name(process.admin_config.name + "-ca.pem")
        assert f"ca_bundle = {ca_bundle}\n" in config
        assert ca_bundle.read_bytes() == (process.data_dir / "pki" / "ca.crt").read_bytes()
        key_id = re.search(r"aws_access_key_id = (\S+)", credentials)
        secret = re.search(r"aws_secret_access_key = (\S+)", credentials)
        assert key_id and secret and KEY_ID.fullmatch(key_id[1]) and SECRET.fullmatch(secret[1])
        listed = Berth.of(process).ok("access-key", "list", "--user", "admin", "-o", "json").json()
        assert [k["AccessKeyId"] for k in listed["AccessKeyMetadata"]] == [key_id[1]]
        assert secret[1].encode() not in _everything_written(process)
        # A restart finds its admin config and writes neither it nor the profile again.
        process.stop()
        process.start()
        assert (aws / "credentials").read_text() == credentials
        assert len(Berth.of(process).ok("access-key", "list", "-o", "json").json()["AccessKeyMetadata"]) == 1
    finally:
        process.stop()
