"""A real agent joins with a token, keeps its identity, renews it, and is refused once removed.

Agents here are started exactly as the install script starts one:
`--join-token`, `--ca-hash` and `--join-server` on the first start, nothing
more after (the certificate in the data directory is the identity).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from berth import pki
from berth.testing.cli import Berth, id_of
from berth.testing.daemons import REPO, AgentProcess, ControlPlaneProcess, JoinFlags
from berth.testing.waiting import wait_until

EXAMPLE = REPO / "examples" / "web.json"
# The shortest node certificate the control plane issues: due for renewal about 40 s after issue.
LIFETIME = 60


def _agent(directory: Path, plane: ControlPlaneProcess, join: JoinFlags | None) -> AgentProcess:
    return AgentProcess(directory, plane.address, ["--no-service-network"], join=join)


def _exit(agent: AgentProcess, timeout: float = 20) -> tuple[int | None, str]:
    agent.start()
    assert agent.process is not None
    try:
        code = agent.process.wait(timeout)
    finally:
        agent.stop()
    return code, agent.log_tail(5)


@pytest.fixture()
def short_lived(tmp_path: Path) -> Iterator[ControlPlaneProcess]:
    plane = ControlPlaneProcess(tmp_path / "cp", ["--certificate-lifetime", str(LIFETIME)])
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()


def test_the_certificate_is_renewed_before_expiry_and_no_task_restarts(
    short_lived: ControlPlaneProcess, tmp_path: Path, test_image: str
) -> None:
    agent = _agent(tmp_path / "agent", short_lived, JoinFlags.of(short_lived, uses=1))
    agent.start()
    try:
        node_id = agent.wait_registered()
        first = pki.identity((agent.data_dir / "node.crt").read_bytes())
        berth = Berth.of(short_lived)
        berth.ok("cluster", "create", "renew")
        berth.ok("taskdef", "register", "--family", "web", "--container-definitions", f"file://{EXAMPLE}")
        berth.ok(
            "service", "create", "--cluster", "renew", "--name", "web", "--task-definition", "web",
            "--desired-count", "2",
        )  # fmt: skip
        wait_until(lambda: berth.running_exactly("renew", 2), 30, "2 RUNNING")
        tasks = sorted(id_of(t) for t in berth.tasks("renew"))
        containers = {c.id: c.started_at for c in agent.containers()}
        assert len(containers) == 2

        wait_until(lambda: agent.connections() >= 2, LIFETIME, "a reconnect with a renewed certificate")
        renewed = pki.identity((agent.data_dir / "node.crt").read_bytes())
        assert renewed.name == node_id == first.name and renewed.serial != first.serial
        assert renewed.not_after > first.not_after
        assert "event=certificate_renewed" in agent.log_path.read_text()

        time.sleep(3)  # room for anything to go wrong after the reconnect
        assert agent.connections() == 2, "the renewal reconnected more than once"
        assert sorted(id_of(t) for t in berth.tasks("renew")) == tasks
        assert all(t["lastStatus"] == "RUNNING" for t in berth.tasks("renew"))
        assert {c.id: c.started_at for c in agent.containers()} == containers, "containers restarted"
    finally:
        agent.stop()
        agent.remove_containers()


def test_a_restarted_agent_keeps_its_identity_and_ignores_the_token(
    plane: ControlPlaneProcess, tmp_path: Path
) -> None:
    agent = _agent(tmp_path / "agent", plane, JoinFlags.of(plane, uses=1))
    agent.start()
    try:
        node_id = agent.wait_registered()
        agent.stop()
        # The single-use token is spent: a second join would fail, so this proves it is not used.
        agent.start()
        assert agent.wait_registered() == node_id
        assert "event=join_token_ignored" in agent.log_path.read_text()
        nodes = Berth.of(plane).nodes_exactly(1)
        assert nodes is not None and node_id in str(nodes), "the restart joined as another node"
    finally:
        agent.stop()


def test_without_credentials_or_token_the_agent_says_what_to_give(
    plane: ControlPlaneProcess, tmp_path: Path
) -> None:
    code, tail = _exit(_agent(tmp_path / "agent", plane, None))
    assert code == 1 and "give --join-token and --ca-hash" in tail


def test_a_wrong_ca_hash_is_refused_naming_both_hashes(plane: ControlPlaneProcess, tmp_path: Path) -> None:
    real = JoinFlags.of(plane, uses=1)
    wrong = pki.ca_hash(pki.create_ca("impostor").certificate)
    code, tail = _exit(_agent(tmp_path / "agent", plane, JoinFlags(real.token, wrong, real.join_server)))
    assert code == 1 and wrong in tail and real.ca_hash in tail
    assert not (tmp_path / "agent" / "node.crt").exists()


def test_a_used_token_is_refused_in_one_line(plane: ControlPlaneProcess, tmp_path: Path) -> None:
    join = JoinFlags.of(plane, uses=1)
    first = _agent(tmp_path / "first", plane, join)
    first.start()
    try:
        first.wait_registered()
    finally:
        first.stop()
    code, tail = _exit(_agent(tmp_path / "second", plane, join))
    assert code == 1 and "event=fatal" in tail and "refused" in tail


def test_a_removed_node_is_refused_and_its_agent_retries_without_crashing(
    plane: ControlPlaneProcess, tmp_path: Path
) -> None:
    agent = _agent(tmp_path / "agent", plane, JoinFlags.of(plane, uses=1))
    agent.start()
    try:
        node_id = agent.wait_registered()
        agent.stop()
        Berth.of(plane).ok("node", "remove", node_id)
        agent.start()
        wait_until(lambda: "event=certificate_refused" in agent.log_path.read_text(), 20, "a refusal logged")
        time.sleep(2)
        assert agent.process is not None and agent.process.poll() is None, "the agent exited"
        assert agent.connections() == 0
    finally:
        agent.stop()
