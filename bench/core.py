"""Core timings on one host, with a real control plane, agent and Docker engine.

  1. seconds from `service create` (desired count N, default 20) until all N
     tasks are RUNNING;
  2. seconds from `docker kill` of one task's container until its
     replacement is RUNNING, repeated (default 10) and summarised.

Run: python bench/core.py [--count 20] [--kills 10]
Every loop is bounded in count and time; only loopback is used.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
import psutil

from berth.taskdef import parse_container_definitions
from berth.tasklist import all_tasks
from berth.testing.daemons import REPO, AgentProcess, ControlPlaneProcess, JoinFlags
from berth.v1 import operator_pb2 as api
from berth.v1 import operator_pb2_grpc
from berth.v1 import resources_pb2 as pb

POLL = 0.01


def running(stub: operator_pb2_grpc.OperatorStub, cluster: str) -> list[pb.Task]:
    tasks = all_tasks(stub, api.ListTasksRequest(cluster=cluster, service="web"))
    return [t for t in tasks if t.last_status == pb.RUNNING]


def wait_for(predicate: Callable[[], bool], timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(POLL)
    raise TimeoutError(f"not reached within {timeout}s")


def plain_docker_run(client: docker.DockerClient, count: int, workers: int) -> float:
    """The peer: the same containers started straight through the Docker API, in parallel."""
    containers = json.loads((REPO / "examples" / "web.json").read_text())[0]
    labels = {"berth-bench-peer": "1"}

    def run_one(_: int) -> None:
        client.containers.run(
            containers["image"],
            entrypoint=containers["entryPoint"],
            command=containers["command"],
            ports={"8080/tcp": None},
            detach=True,
            labels=labels,
            mem_limit="64m",
        )

    start = time.monotonic()
    try:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(run_one, range(count)))
        wait_for(lambda: len(client.containers.list(filters={"label": "berth-bench-peer=1"})) == count, 60)
        return time.monotonic() - start
    finally:
        for container in client.containers.list(all=True, filters={"label": "berth-bench-peer=1"}):
            container.remove(force=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--log-dir", type=Path, default=None, help="keep the daemons' logs here")
    parser.add_argument("--docker-concurrency", type=int, default=8, help="passed to the agent")
    options = parser.parse_args()

    client = docker.from_env()
    peer_seconds = plain_docker_run(client, options.count, options.docker_concurrency)
    with tempfile.TemporaryDirectory(prefix="berth-bench-") as scratch:
        plane = ControlPlaneProcess(Path(scratch) / "cp")
        plane.start()
        try:
            # Joined as any host joins: with a token and the pinned CA hash.
            agent = AgentProcess(
                Path(scratch) / "agent",
                plane.address,
                ["--docker-concurrency", str(options.docker_concurrency), "--no-service-network"],
                join=JoinFlags.of(plane),
            )
        except BaseException:
            plane.stop()
            raise
        try:
            agent.start()
            agent.wait_registered()
            stub = operator_pb2_grpc.OperatorStub(plane.admin_channel())
            # The README's example, with a CPU reservation small enough that
            # 20 fit on 2 cores (the example reserves 128 units each).
            containers = json.loads((REPO / "examples" / "web.json").read_text())
            containers[0]["cpu"] = 32
            stub.RegisterTaskDefinition(
                api.RegisterTaskDefinitionRequest(
                    family="bench", container_definitions=parse_container_definitions(containers)
                )
            )
            stub.CreateCluster(api.CreateClusterRequest(name="bench"))

            start = time.monotonic()
            stub.CreateService(
                api.CreateServiceRequest(
                    cluster="bench", name="web", task_definition="bench", desired_count=options.count
                )
            )
            wait_for(lambda: len(running(stub, "bench")) == options.count, 120)
            create_seconds = time.monotonic() - start

            kill_seconds = []
            for _ in range(options.kills):
                before = running(stub, "bench")
                victim = before[0]
                old_ids = {t.id for t in before}
                container = client.containers.get(victim.containers[0].docker_id)
                start = time.monotonic()
                container.kill()

                def replaced(victim_id: str = victim.id, old: set[str] = old_ids) -> bool:
                    now = {t.id for t in running(stub, "bench")}
                    return len(now) == options.count and victim_id not in now and len(now - old) == 1

                kill_seconds.append(wait_for(replaced, 30))
                time.sleep(0.5)
        finally:
            agent.stop()
            agent.remove_containers()
            plane.stop()
            client.close()
            if options.log_dir:
                for daemon in (plane, agent):
                    daemon.keep_log(options.log_dir)

    cpus = psutil.cpu_count()
    print(
        f"machine: {platform.machine()}, {cpus} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
        f"Docker {docker.from_env().version()['Version']}"
    )
    print(f"service create -> {options.count} RUNNING: {create_seconds:.2f} s")
    print(
        f"peer, {options.count} x docker run -d in {options.docker_concurrency} threads -> all running: "
        f"{peer_seconds:.2f} s (Berth / plain Docker = {create_seconds / peer_seconds:.2f})"
    )
    print(
        f"docker kill -> replacement RUNNING over {len(kill_seconds)} kills: "
        f"median {statistics.median(kill_seconds):.3f} s, min {min(kill_seconds):.3f} s, "
        f"max {max(kill_seconds):.3f} s"
    )


if __name__ == "__main__":
    main()
