"""The agent's command line becomes its settings: the container-hardening options."""

from __future__ import annotations

import pytest

from agent.main import parse_args

REQUIRED = ["--server", "127.0.0.1:7400", "--data-dir", "/tmp/x", "--name", "n1", "--address", "10.0.0.1"]


@pytest.mark.parametrize(
    ("extra", "expected"), [([], 4096), (["--pids-limit", "100"], 100), (["--pids-limit", "-1"], -1)]
)
def test_pids_limit(extra: list[str], expected: int) -> None:
    settings, _ = parse_args([*REQUIRED, "--cpu-units", "1024", "--memory-mib", "512", *extra])
    assert settings.pids_limit == expected


def test_a_negative_pids_limit_other_than_minus_one_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args([*REQUIRED, "--pids-limit", "-5"])
    assert "--pids-limit -5: give a number of processes" in capsys.readouterr().err


def test_several_control_plane_addresses_are_accepted() -> None:
    args = [
        "--server",
        "10.0.0.1:7400,10.0.0.2:7400",
        *REQUIRED[2:],
        "--cpu-units",
        "1024",
        "--memory-mib",
        "512",
    ]
    settings, _ = parse_args([*args, "--join-server", "10.0.0.1:7401,10.0.0.2:7401"])
    assert settings.server == "10.0.0.1:7400,10.0.0.2:7400"


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--server", "10.0.0.1:7400,"), ("--server", "10.0.0.1:7400,nohost"), ("--join-server", "a:1,b:99999")],
)
def test_a_bad_control_plane_address_is_refused(
    flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [*REQUIRED, "--cpu-units", "1024", "--memory-mib", "512"]
    with pytest.raises(SystemExit):
        parse_args([*args, flag, value])
    assert f"{flag}: " in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "expected"),
    [([], "auto"), (["--netfilter", "nftables"], "nftables"), (["--netfilter", "iptables"], "iptables")],
)
def test_netfilter_backend(extra: list[str], expected: str) -> None:
    settings, _ = parse_args([*REQUIRED, "--cpu-units", "1024", "--memory-mib", "512", *extra])
    assert settings.netfilter == expected


def test_an_unknown_netfilter_backend_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args([*REQUIRED, "--netfilter", "ebtables"])
    assert "--netfilter: invalid choice: 'ebtables'" in capsys.readouterr().err
