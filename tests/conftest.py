"""Fixtures for tests against real daemons: a Docker engine, the test image,
a control plane with its embedded etcd, an agent, and the CLI."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from berth.testing.cli import Berth
from berth.testing.daemons import REPO, AgentProcess, ControlPlaneProcess, HollowAgentsProcess, JoinFlags

IMAGE = "berth-busybox:2"


@pytest.fixture(scope="session")
def docker_engine() -> str:
    """The local Docker engine; the test run fails loudly if there is none."""
    url = "unix:///var/run/docker.sock"
    try:
        client = docker.DockerClient(base_url=url)
        client.ping()
        client.close()
    except docker.errors.DockerException as error:
        pytest.fail(f"no Docker engine at {url} ({error}); .ci/run starts one")
    return url


@pytest.fixture(scope="session")
def test_image(docker_engine: str) -> str:
    subprocess.run(["bash", str(REPO / "deploy" / "build-image.sh")], check=True)
    return IMAGE


@pytest.fixture(scope="module")
def controlplane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlaneProcess]:
    plane = ControlPlaneProcess(tmp_path_factory.mktemp("cp") / "data")
    plane.start()
    yield plane
    plane.stop()


@pytest.fixture(scope="module")
def agent(
    tmp_path_factory: pytest.TempPathFactory, controlplane: ControlPlaneProcess, test_image: str
) -> Iterator[AgentProcess]:
    # Service networking (iptables, DNS) is tested on the lab's own hosts, not
    # on this machine's root namespace.
    process = AgentProcess(
        tmp_path_factory.mktemp("agent") / "data",
        controlplane.address,
        ["--no-service-network"],
        join=JoinFlags.of(controlplane),
    )
    process.start()
    process.wait_registered()
    yield process
    process.stop()
    process.remove_containers()


@pytest.fixture(scope="module")
def berth(controlplane: ControlPlaneProcess) -> Berth:
    return Berth.of(controlplane)


@pytest.fixture()
def plane(tmp_path: Path) -> Iterator[ControlPlaneProcess]:
    """A control plane of the test's own, with default settings (modules needing others override it)."""
    process = ControlPlaneProcess(tmp_path / "cp")
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture()
def hollow(plane: ControlPlaneProcess, tmp_path: Path) -> Iterator[HollowAgentsProcess]:
    """One hollow node joined to the test's own control plane (its tasks turn RUNNING at once)."""
    process = HollowAgentsProcess(tmp_path / "hollow.log", plane.address, 1, join=JoinFlags.of(plane))
    process.start()
    try:
        yield process
    finally:
        process.stop(timeout=15)


@pytest.fixture()
def sampled(tmp_path: Path, test_image: str) -> Iterator[tuple[ControlPlaneProcess, AgentProcess]]:
    """A control plane and a real agent of the test's own, reporting task usage every second."""
    plane = ControlPlaneProcess(tmp_path / "cp")
    plane.start()
    agent = AgentProcess(
        tmp_path / "agent",
        plane.address,
        ["--no-service-network", "--usage-interval", "1"],
        join=JoinFlags.of(plane),
    )
    agent.start()
    agent.wait_registered()
    try:
        yield plane, agent
    finally:
        agent.stop()
        agent.remove_containers()
        plane.stop()
