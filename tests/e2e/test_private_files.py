"""The daemons keep their state private: data directories 0700, files 0600."""

from __future__ import annotations

import stat
from pathlib import Path

from berth.testing.daemons import AgentProcess, ControlPlaneProcess


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_control_planes_data_directory_is_private(controlplane: ControlPlaneProcess) -> None:
    data = controlplane.data_dir
    assert {name: oct(_mode(data / name)) for name in ["", "etcd", "etcd-ports.json", "etcd.log"]} == {
        "": "0o700",
        "etcd": "0o700",
        "etcd-ports.json": "0o600",
        "etcd.log": "0o600",
    }


def test_the_agents_data_directory_key_and_certificates_are_private(agent: AgentProcess) -> None:
    data = agent.data_dir
    assert {name: oct(_mode(data / name)) for name in ["", "node.key", "node.crt", "ca.crt"]} == {
        "": "0o700",
        "node.key": "0o600",
        "node.crt": "0o600",
        "ca.crt": "0o600",
    }
