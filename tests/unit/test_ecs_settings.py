"""The ECS API's settings: --ecs-listen, --ecs-region and --ecs-account, checked at start."""

from __future__ import annotations

import pytest

from controlplane.main import parse_args


def test_defaults_listen_next_to_the_api_and_name_a_local_region() -> None:
    settings = parse_args(["--data-dir", "/tmp/x"])
    assert (settings.ecs_region, settings.ecs_account) == ("local", "000000000000")
    assert settings.ecs_address == "127.0.0.1:7402"
    assert parse_args(["--data-dir", "/tmp/x", "--listen", "0.0.0.0:9000"]).ecs_address == "0.0.0.0:9002"


def test_flags_reach_the_settings() -> None:
    settings = parse_args(
        [
            "--data-dir", "/tmp/x", "--ecs-listen", "127.0.0.1:8443",
            "--ecs-region", "eu-west-1", "--ecs-account", "123456789012",
        ]
    )  # fmt: skip
    assert (settings.ecs_address, settings.ecs_region, settings.ecs_account) == (
        "127.0.0.1:8443",
        "eu-west-1",
        "123456789012",
    )
    assert parse_args(["--data-dir", "/tmp/x", "--ecs-listen", "off"]).ecs_address == ""


@pytest.mark.parametrize(
    "flags",
    [
        ["--ecs-region", "EU-West-1"],
        ["--ecs-region", "-west"],
        ["--ecs-region", "a" * 33],
        ["--ecs-account", "12345678901"],
        ["--ecs-account", "12345678901x"],
        ["--ecs-listen", "nowhere"],
        ["--ecs-listen", "127.0.0.1:70000"],
    ],
)
def test_bad_values_are_refused_at_start(flags: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(["--data-dir", "/tmp/x", *flags])
    assert exited.value.code == 2
    assert flags[0] in capsys.readouterr().err
