"""The kit for real machines (deploy/): systemd units, the agent install script, cloud-init.

Nothing here needs root or touches the machine: the units are checked by
`systemd-analyze verify` with their ExecStart pointed at stand-ins, and the
install script runs only up to its checks (`--dry-run`, or refusing).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
UNITS = DEPLOY / "systemd"
INSTALL = DEPLOY / "install-agent.sh"
CLOUD_INIT = DEPLOY / "cloud-init" / "agent.yaml"
TOKEN = "0123abcd.0123456789abcdef0123456789abcdef"
CA_HASH = "sha256:" + "ab" * 32


def install(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The install script with a clean environment (no BERTH_* from the caller's)."""
    return subprocess.run(
        ["bash", str(INSTALL), *args],
        env={"PATH": os.environ["PATH"], **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
    )


def unit_settings(name: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in (UNITS / name).read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


@pytest.mark.parametrize("name", ["berth-controlplane.service", "berth-agent.service"])
def test_units_pass_systemd_analyze_verify(name: str, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (deploy/install.sh installs systemd)")
    # verify insists that ExecStart's program exists: point it at stand-ins of the console scripts.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for script in ("berth-controlplane", "berth-agent"):
        (bin_dir / script).write_text("#!/bin/sh\n")
        (bin_dir / script).chmod(0o755)
    unit = tmp_path / name
    unit.write_text((UNITS / name).read_text().replace("/opt/berth/venv/bin/", f"{bin_dir}/"))
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    # Warnings come on stderr with the unit's name; a clean unit has none.
    assert name not in result.stderr, result.stderr


@pytest.mark.parametrize("name", ["berth-controlplane.service", "berth-agent.service"])
def test_units_restart_with_limits_and_read_their_flags_from_etc_berth(name: str) -> None:
    settings = unit_settings(name)
    assert settings["Restart"] == ["on-failure"]
    assert settings["StartLimitBurst"] and settings["StartLimitIntervalSec"]
    assert settings["LimitNOFILE"] and settings["PrivateTmp"] == ["yes"]
    assert settings["NoNewPrivileges"] == ["yes"] and settings["ProtectHome"] == ["yes"]
    assert settings["EnvironmentFile"] == [f"/etc/berth/{name.removeprefix('berth-').split('.')[0]}.env"]
    program = settings["ExecStart"][0].split()[0]
    assert program.startswith("/opt/berth/venv/bin/berth-")
    assert "--data-dir /var/lib/berth/" in settings["ExecStart"][0]


def test_the_control_plane_unit_runs_unprivileged_with_its_state_private() -> None:
    settings = unit_settings("berth-controlplane.service")
    assert settings["User"] == ["berth"] and settings["CapabilityBoundingSet"] == [""]
    assert settings["ProtectSystem"] == ["strict"] and settings["ReadWritePaths"] == ["/var/lib/berth"]
    assert settings["StateDirectoryMode"] == ["0700"]


def test_the_install_script_is_valid_bash() -> None:
    result = subprocess.run(["bash", "-n", str(INSTALL)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(INSTALL.stat().st_mode) & 0o111, "install-agent.sh is not executable"


def test_the_install_script_without_values_refuses_in_one_line() -> None:
    result = install()
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: missing ")
    for value in (
        "--server",
        "--join-token",
        "--ca-hash",
        "BERTH_SERVER",
        "BERTH_JOIN_TOKEN",
        "BERTH_CA_HASH",
    ):
        assert value in lines[0]


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--server", "10.0.0.10:7400"], "missing --join-token (BERTH_JOIN_TOKEN), --ca-hash"),
        (["--server", "x;reboot", "--join-token", TOKEN, "--ca-hash", CA_HASH], "--server must be HOST:PORT"),
        (
            ["--server", "h:1", "--join-token", "guess", "--ca-hash", CA_HASH],
            "--join-token must be ID.SECRET",
        ),
        (["--server", "h:1", "--join-token", TOKEN, "--ca-hash", "sha256:abc"], "--ca-hash must be sha256:"),
        (
            ["--server", "h:1", "--join-token", TOKEN, "--ca-hash", CA_HASH, "--attribute", 'a="b c"'],
            "--attribute must be KEY=VALUE",
        ),
        (["--server", "h:1", "--join-token", TOKEN, "--ca-hash", CA_HASH, "--name", "A B"], "--name must be"),
        (["--server"], "--server needs a value"),
        (["--bogus", "x"], "unknown option --bogus"),
    ],
)
def test_the_install_script_refuses_bad_values_before_touching_anything(
    args: list[str], complaint: str
) -> None:
    result = install(*args, "--dry-run")
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and complaint in result.stderr, result.stderr


def test_the_install_script_writes_the_agents_join_flags() -> None:
    result = install(
        "--dry-run",
        "--attribute",
        "rack=r1",
        env={
            "BERTH_SERVER": "10.0.0.10:7400",
            "BERTH_JOIN_TOKEN": TOKEN,
            "BERTH_CA_HASH": CA_HASH.upper().replace("SHA256", "sha256"),
            "BERTH_ATTRIBUTES": "zone=eu-west-1a",
        },
    )
    assert result.returncode == 0, result.stderr
    env = dict(line.split("=", 1) for line in result.stdout.splitlines() if not line.startswith("#"))
    assert env["BERTH_SERVER"] == "10.0.0.10:7400"
    flags = shlex.split(env["BERTH_AGENT_FLAGS"])[0].split()
    assert flags == [
        "--join-token",
        TOKEN,
        "--ca-hash",
        CA_HASH,
        "--attribute",
        "zone=eu-west-1a",
        "--attribute",
        "rack=r1",
    ]


def test_the_agent_accepts_the_flags_the_install_script_writes(tmp_path: Path) -> None:
    """The same flags the lab's hosts join with (berth.testing.lab); checked by the agent's own parser."""
    if importlib.util.find_spec("agent.credentials") is None:
        pytest.skip("the agent's join (--join-token, --ca-hash) is not on this branch yet")
    from agent import main as agent_main

    result = install("--dry-run", "--server", "10.0.0.10:7400", "--join-token", TOKEN, "--ca-hash", CA_HASH)
    env = dict(line.split("=", 1) for line in result.stdout.splitlines() if not line.startswith("#"))
    flags = shlex.split(env["BERTH_AGENT_FLAGS"])[0].split()
    parsed = agent_main.parse_args(
        ["--data-dir", str(tmp_path), "--server", env["BERTH_SERVER"], *flags, "--name", "vm2"]
    )
    assert TOKEN in repr(parsed) and CA_HASH in repr(parsed)


def test_the_cloud_init_example_runs_the_install_script_with_the_three_values() -> None:
    text = CLOUD_INIT.read_text()
    assert text.splitlines()[0] == "#cloud-config"
    document = yaml.safe_load(text)
    files = {entry["path"]: entry for entry in document["write_files"]}
    bootstrap_env = files["/etc/berth/bootstrap.env"]
    assert bootstrap_env["permissions"] == "0600", "the join token must not be world-readable"
    values = dict(line.split("=", 1) for line in bootstrap_env["content"].splitlines() if "=" in line)
    assert {"BERTH_SERVER", "BERTH_JOIN_TOKEN", "BERTH_CA_HASH", "BERTH_SOURCE"} <= values.keys()
    bootstrap = files["/usr/local/sbin/berth-bootstrap"]["content"]
    assert ". /etc/berth/bootstrap.env" in bootstrap and "set -a" in bootstrap
    assert re.search(r"^exec /opt/berth/src/deploy/install-agent\.sh\b", bootstrap, re.MULTILINE)
    assert ["/usr/local/sbin/berth-bootstrap"] in document["runcmd"]
    assert subprocess.run(["bash", "-n"], input=bootstrap, text=True, timeout=30).returncode == 0
    # The example's values have the shape the install script accepts.
    checked = install("--dry-run", env={k: v for k, v in values.items() if v})
    assert checked.returncode == 0, checked.stderr
    assert values["BERTH_JOIN_TOKEN"] in checked.stdout and values["BERTH_CA_HASH"] in checked.stdout
