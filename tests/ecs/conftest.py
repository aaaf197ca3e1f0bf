"""A control plane serving the ECS-compatible API, the AWS profile it wrote, and an agent
that joins the cluster `shop` once a test has created it through that API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from berth.testing.cli import Berth
from berth.testing.daemons import AgentProcess, ControlPlaneProcess, JoinFlags
from berth.testing.ecs import EcsClients

CLUSTER = "shop"


@pytest.fixture(scope="module")
def ecs_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlaneProcess]:
    base = tmp_path_factory.mktemp("ecs")
    plane = ControlPlaneProcess(base / "data", ["--aws-profile-dir", str(base / "aws")])
    plane.start()
    yield plane
    plane.stop()


@pytest.fixture(scope="module")
def clients(ecs_plane: ControlPlaneProcess) -> EcsClients:
    return EcsClients(Path(ecs_plane.data_dir).parent / "aws")


@pytest.fixture(scope="module")
def berth(ecs_plane: ControlPlaneProcess) -> Berth:
    return Berth.of(ecs_plane)


@pytest.fixture(scope="module")
def shop_agent(
    tmp_path_factory: pytest.TempPathFactory,
    ecs_plane: ControlPlaneProcess,
    clients: EcsClients,
    test_image: str,
) -> Iterator[AgentProcess]:
    """A real agent in cluster `shop`, created first through the ECS API (`aws ecs create-cluster`)."""
    clients.aws_ok("ecs", "create-cluster", "--cluster-name", CLUSTER)
    process = AgentProcess(
        tmp_path_factory.mktemp("shop-agent") / "data",
        ecs_plane.address,
        ["--no-service-network", "--cluster", CLUSTER],
        join=JoinFlags.of(ecs_plane),
    )
    process.start()
    process.wait_registered()
    yield process
    process.stop()
    process.remove_containers()


def running_containers(cluster: str, service: str) -> list[dict[str, str]]:
    """Containers the Docker engine itself runs for a service: the count tests believe."""
    client = docker.DockerClient(base_url="unix:///var/run/docker.sock")
    try:
        return [
            c.labels
            for c in client.containers.list(
                filters={
                    "label": [f"berth.cluster={cluster}", f"berth.service={service}"],
                    "status": "running",
                }
            )
        ]
    finally:
        client.close()
