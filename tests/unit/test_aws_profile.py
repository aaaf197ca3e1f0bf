"""The AWS profile the control plane writes: merged into the operator's files, private, atomic,
read back by botocore and boto3 as the aws CLI would; and where (and whether) it is written."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import boto3  # type: ignore[import-untyped]
import botocore.session  # type: ignore[import-untyped]
import pytest

from berth import pki
from berth.v1 import resources_pb2 as pb
from controlplane.aws_profile import ProfileError, write_aws_profile
from controlplane.cache import ClusterCache
from controlplane.config import ControlPlaneSettings
from controlplane.main import parse_args
from controlplane.operations.access_keys import AccessKeys
from controlplane.sealing import MasterKey
from controlplane.server import ControlPlane
from controlplane.store import keys
from controlplane.store.memory import MemoryStore
from tests.unit.conftest import put

KEY = "AKIAABCDEFGHIJKLMNOP"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
ENDPOINT = "https://127.0.0.1:7402"

OTHER_CREDENTIALS = """# my keys
[default]
aws_access_key_id = AKIAOLDOLDOLDOLDOLDO
aws_secret_access_key = old/secret+value%with%percent

[work]  ; the work account
aws_access_key_id = AKIAWORKWORKWORKWORK
aws_secret_access_key = work
"""
OTHER_CONFIG = """[default]
region = eu-west-1
s3 =
    max_concurrent_requests = 20

# staging
[profile staging]
region = us-east-2
"""


def write(directory: Path, ca_bundle: Path | None = None, **overrides: str) -> None:
    values = {"endpoint_url": ENDPOINT, "region": "local", "key_id": KEY, "secret": SECRET, **overrides}
    write_aws_profile(
        directory,
        "berth",
        values["endpoint_url"],
        values["region"],
        values["key_id"],
        values["secret"],
        ca_bundle or directory / "ca.pem",
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_fresh_directory_gets_both_files_private(tmp_path: Path) -> None:
    directory = tmp_path / "aws"
    write(directory)
    assert mode(directory) == 0o700
    assert mode(directory / "credentials") == 0o600 and mode(directory / "config") == 0o600
    assert (directory / "credentials").read_text() == (
        f"[berth]\naws_access_key_id = {KEY}\naws_secret_access_key = {SECRET}\n"
    )
    assert (directory / "config").read_text() == (
        f"[profile berth]\nregion = local\nendpoint_url = {ENDPOINT}\n"
        f"ca_bundle = {directory / 'ca.pem'}\noutput = json\n"
    )


def test_other_profiles_and_comments_are_kept_byte_for_byte(tmp_path: Path) -> None:
    (tmp_path / "credentials").write_text(OTHER_CREDENTIALS)
    (tmp_path / "config").write_text(OTHER_CONFIG)
    write(tmp_path)
    credentials = (tmp_path / "credentials").read_text()
    config = (tmp_path / "config").read_text()
    assert credentials.startswith(OTHER_CREDENTIALS) and credentials.endswith(
        f"\n[berth]\naws_access_key_id = {KEY}\naws_secret_access_key = {SECRET}\n"
    )
    assert config.startswith(OTHER_CONFIG) and "[profile berth]" in config
    # Written again (a new cluster): the section is replaced, the rest still kept.
    write(tmp_path, key_id="AKIAZZZZZZZZZZZZZZZZ", secret="new")
    again = (tmp_path / "credentials").read_text()
    assert again.startswith(OTHER_CREDENTIALS) and KEY not in again and SECRET not in again
    assert again.count("[berth]") == 1 and "aws_access_key_id = AKIAZZZZZZZZZZZZZZZZ" in again
    assert (tmp_path / "config").read_text() == config


def test_a_section_in_the_middle_is_replaced_whole(tmp_path: Path) -> None:
    (tmp_path / "credentials").write_text(
        "[a]\naws_access_key_id = A\n\n[berth]\naws_access_key_id = OLD\n"
        "aws_session_token = stale\n# old note\n\n[z]\naws_access_key_id = Z\n"
    )
    write(tmp_path)
    assert (tmp_path / "credentials").read_text() == (
        f"[a]\naws_access_key_id = A\n\n[berth]\naws_access_key_id = {KEY}\n"
        f"aws_secret_access_key = {SECRET}\n\n[z]\naws_access_key_id = Z\n"
    )


def test_a_file_that_does_not_parse_is_left_alone(tmp_path: Path) -> None:
    broken = "[default]\naws_access_key_id = A\n[default]\nduplicate = yes\n"
    (tmp_path / "credentials").write_text(broken)
    with pytest.raises(ProfileError, match="not a valid AWS config file"):
        write(tmp_path)
    assert (tmp_path / "credentials").read_text() == broken
    assert not (tmp_path / "config").exists()


@pytest.mark.parametrize("field", ["endpoint_url", "region", "key_id", "secret"])
@pytest.mark.parametrize("value", ["", "two\nlines", "x\r[default]", " padded"])
def test_a_value_that_is_not_one_line_is_refused_before_anything_is_written(
    tmp_path: Path, field: str, value: str
) -> None:
    with pytest.raises(ProfileError):
        values = {"endpoint_url": ENDPOINT, "region": "local", "key_id": KEY, "secret": SECRET, field: value}
        write_aws_profile(tmp_path / "aws", "berth", **values, ca_bundle=tmp_path / "ca.pem")
    assert not (tmp_path / "aws").exists()


def test_the_files_are_replaced_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "credentials").write_text(OTHER_CREDENTIALS)
    before = (tmp_path / "credentials").stat().st_ino
    write(tmp_path)
    assert (tmp_path / "credentials").stat().st_ino != before, "written in place, not renamed over"

    def crash(source: str, target: str) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    content = (tmp_path / "credentials").read_text()
    with pytest.raises(OSError):
        write(tmp_path, key_id="AKIAZZZZZZZZZZZZZZZZ")
    assert (tmp_path / "credentials").read_text() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config", "credentials"], (
        "a temporary file was left"
    )


def test_a_symlinked_file_is_written_through_its_link(tmp_path: Path) -> None:
    real = tmp_path / "dotfiles" / "aws-credentials"
    real.parent.mkdir()
    real.write_text(OTHER_CREDENTIALS)
    (tmp_path / "aws").mkdir()
    (tmp_path / "aws" / "credentials").symlink_to(real)
    write(tmp_path / "aws")
    assert (tmp_path / "aws" / "credentials").is_symlink()
    assert f"aws_access_key_id = {KEY}" in real.read_text()


def test_botocore_and_boto3_read_the_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "credentials").write_text(OTHER_CREDENTIALS)
    (tmp_path / "config").write_text(OTHER_CONFIG)
    write(tmp_path, ca_bundle=tmp_path / "cluster-ca.pem")
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    session = botocore.session.Session(profile="berth")
    credentials = session.get_credentials()
    assert (credentials.access_key, credentials.secret_key) == (KEY, SECRET)
    assert session.get_config_variable("region") == "local"
    assert session.get_config_variable("ca_bundle") == str(tmp_path / "cluster-ca.pem")
    assert session.create_client("ecs").meta.endpoint_url == ENDPOINT
    client = boto3.Session(profile_name="berth").client("ecs")
    assert client.meta.endpoint_url == ENDPOINT and client.meta.region_name == "local"
    # The other profiles still read as before.
    assert botocore.session.Session(profile="staging").get_config_variable("region") == "us-east-2"
    work = botocore.session.Session(profile="work").get_credentials()
    assert work.access_key == "AKIAWORKWORKWORKWORK"


# -- where it goes: flags and defaults ---------------------------------------------------------


def test_the_profile_goes_to_home_only_with_the_home_admin_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    base = ["--data-dir", str(tmp_path / "data")]
    assert parse_args(base).aws_profile_dir == tmp_path / "home" / ".aws"
    assert parse_args([*base, "--admin-config", str(tmp_path / "x.conf")]).aws_profile_dir is None
    assert parse_args([*base, "--admin-config", "none"]).aws_profile_dir is None
    assert parse_args([*base, "--aws-profile-dir", "none"]).aws_profile_dir is None
    chosen = parse_args(
        [*base, "--admin-config", str(tmp_path / "x.conf"), "--aws-profile-dir", str(tmp_path)]
    )
    assert chosen.aws_profile_dir == tmp_path


def test_the_ecs_flags(tmp_path: Path) -> None:
    base = ["--data-dir", str(tmp_path), "--admin-config", "none"]
    settings = parse_args(base)
    assert (settings.ecs_address, settings.ecs_region, settings.ecs_account) == (
        "127.0.0.1:7402",
        "local",
        "000000000000",
    )
    assert parse_args([*base, "--listen", "0.0.0.0:9000"]).ecs_address == "0.0.0.0:9002"
    assert parse_args([*base, "--ecs-listen", "off"]).ecs_address == ""
    assert parse_args([*base, "--ecs-listen", "127.0.0.1:8443"]).ecs_address == "127.0.0.1:8443"
    custom = parse_args([*base, "--ecs-region", "eu-west-1", "--ecs-account", "123456789012"])
    assert (custom.ecs_region, custom.ecs_account) == ("eu-west-1", "123456789012")
    assert ControlPlaneSettings(listen="127.0.0.1:7400", data_dir=tmp_path).ecs_address == ""
    for bad in (
        ["--ecs-account", "12345"],
        ["--ecs-account", "1234567890123"],
        ["--ecs-account", "12345678901a"],
        ["--ecs-region", "EU"],
        ["--ecs-region", "-eu"],
        ["--ecs-region", "a" * 40],
        ["--ecs-listen", "nowhere"],
    ):
        with pytest.raises(SystemExit):
            parse_args([*base, *bad])


# -- what the control plane writes at first start ----------------------------------------------------


async def test_the_first_start_writes_an_admin_key_as_the_profile(
    tmp_path: Path, store: MemoryStore, cache: ClusterCache, caplog: pytest.LogCaptureFixture
) -> None:
    await put(store, keys.user("admin"), pb.User(name="admin", role="admin"))
    access_keys = AccessKeys(store, cache, MasterKey.generate())
    ca = pki.create_ca("test")
    admin_config = tmp_path / "berth" / "config"
    admin_config.parent.mkdir()
    plane = ControlPlane(
        ControlPlaneSettings(
            listen="0.0.0.0:7400",
            data_dir=tmp_path / "data",
            advertise="10.1.2.3:7400",
            ecs_listen="0.0.0.0:7402",
            ecs_region="eu-west-1",
            aws_profile_dir=tmp_path / "aws",
        )
    )
    with caplog.at_level(logging.INFO):
        await plane._write_aws_profile(ca, admin_config, access_keys)
    config = (tmp_path / "aws" / "config").read_text()
    ca_bundle = tmp_path / "berth" / "config-ca.pem"
    assert "endpoint_url = https://10.1.2.3:7402\n" in config and "region = eu-west-1\n" in config
    assert f"ca_bundle = {ca_bundle}\n" in config
    assert ca_bundle.read_bytes() == ca.certificate and mode(ca_bundle) == 0o600
    (written,) = await access_keys.all("admin")
    credentials = (tmp_path / "aws" / "credentials").read_text()
    credential = access_keys.lookup(written.id)
    assert credential is not None and credential.role == "admin"
    assert f"aws_access_key_id = {written.id}\naws_secret_access_key = {credential.secret}\n" in credentials
    assert credential.secret not in caplog.text
    # The limit reached (two keys): one error line, and the start goes on.
    await access_keys.create("admin", "admin")
    caplog.clear()
    with caplog.at_level(logging.INFO):
        await plane._write_aws_profile(ca, admin_config, access_keys)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "aws_profile_not_written" in errors[0].getMessage()
    assert (tmp_path / "aws" / "credentials").read_text() == credentials


async def test_a_profile_that_cannot_be_written_leaves_no_key_behind(
    tmp_path: Path, store: MemoryStore, cache: ClusterCache, caplog: pytest.LogCaptureFixture
) -> None:
    await put(store, keys.user("admin"), pb.User(name="admin", role="admin"))
    access_keys = AccessKeys(store, cache, MasterKey.generate())
    (tmp_path / "aws").mkdir()
    (tmp_path / "aws" / "credentials").write_text("[broken\n")
    settings = ControlPlaneSettings(
        listen="127.0.0.1:7400",
        data_dir=tmp_path,
        ecs_listen="127.0.0.1:7402",
        aws_profile_dir=tmp_path / "aws",
    )
    with caplog.at_level(logging.INFO):
        await ControlPlane(settings)._write_aws_profile(
            pki.create_ca("t"), tmp_path / "admin.conf", access_keys
        )
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        f"event=aws_profile_not_written dir={tmp_path / 'aws'} profile=berth "
        f"error='{tmp_path / 'aws' / 'credentials'} is not a valid AWS config file "
        "(MissingSectionHeaderError); left as it is'"
    ]
    assert await access_keys.all() == [], "the key written nowhere was kept"
    assert (tmp_path / "aws" / "credentials").read_text() == "[broken\n"


async def test_no_profile_without_the_ecs_api_or_a_directory(
    tmp_path: Path, store: MemoryStore, cache: ClusterCache
) -> None:
    await put(store, keys.user("admin"), pb.User(name="admin", role="admin"))
    access_keys = AccessKeys(store, cache, MasterKey.generate())
    for ecs_listen, directory in (
        ("", tmp_path / "aws"),
        ("127.0.0.1:0", tmp_path / "aws"),
        ("127.0.0.1:1", None),
    ):
        settings = ControlPlaneSettings(
            listen="127.0.0.1:7400", data_dir=tmp_path, ecs_listen=ecs_listen, aws_profile_dir=directory
        )
        await ControlPlane(settings)._write_aws_profile(
            pki.create_ca("t"), tmp_path / "admin.conf", access_keys
        )
    assert not (tmp_path / "aws").exists()
    assert await access_keys.all() == []
