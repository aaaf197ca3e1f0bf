"""The agent's own cost of reporting task usage, on one host with a real control plane and Docker.

Starts a control plane and an agent (--usage-interval, default 5 s), runs a
service of N tasks (default 50) of berth-busybox:2 sleeping, waits until
`GetUsage` shows every one of them, then measures the agent process (and
its children) over a window (default 60 s): CPU time used, as a percent of
one core, and resident memory. For comparison it measures the same agent
with the same tasks once more with usage sampling nearly idle
(--usage-interval 60), so the difference is what sampling costs.

Run: python bench/usage.py [--tasks 50] [--seconds 60] [--interval 5]
Every loop is bounded in count and time; only loopback is used; every
container is removed at the end.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import docker
import psutil

from berth.taskdef import parse_container_definitions
from berth.tasklist import all_tasks
from berth.testing.daemons import AgentProcess, ControlPlaneProcess, JoinFlags
from berth.v1 import operator_pb2 as api
from berth.v1 import operator_pb2_grpc
from berth.v1 import resources_pb2 as pb


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.2)
    raise TimeoutError(f"{what}: not reached within {timeout}s")


def measure(pid: int, seconds: float) -> tuple[float, float, float]:
    """(CPU percent of one core, mean RSS MiB, peak RSS MiB) of a process tree over `seconds`."""
    root = psutil.Process(pid)

    def tree() -> list[psutil.Process]:
        return [root, *root.children(recursive=True)]

    def cpu() -> float:
        return sum(sum(p.cpu_times()[:2]) for p in tree())

    rss: list[float] = []
    start_cpu, start = cpu(), time.monotonic()
    while time.monotonic() - start < seconds:
        rss.append(sum(p.memory_info().rss for p in tree()) / 2**20)
        time.sleep(1.0)
    used = cpu() - start_cpu
    return 100 * used / (time.monotonic() - start), sum(rss) / len(rss), max(rss)


def run_agent(scratch: Path, plane: ControlPlaneProcess, interval: float) -> AgentProcess:
    agent = AgentProcess(
        scratch / "agent",
        plane.address,
        ["--no-service-network", "--usage-interval", str(interval)],
        join=JoinFlags.of(plane) if not (scratch / "agent" / "node.crt").exists() else None,
    )
    agent.start()
    agent.wait_registered()
    return agent


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=5.0)
    options = parser.parse_args()
    if not (1 <= options.tasks <= 200 and 1 <= options.seconds <= 600):
        parser.error("--tasks 1-200, --seconds 1-600")

    results: dict[float, tuple[float, float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="berth-bench-usage-") as directory:
        scratch = Path(directory)
        plane = ControlPlaneProcess(scratch / "cp")
        plane.start()
        agent: AgentProcess | None = None
        try:
            stub = operator_pb2_grpc.OperatorStub(plane.admin_channel())
            containers = [
                {
                    "name": "sleep",
                    "image": "berth-busybox:2",
                    "cpu": 8,
                    "memory": 8,
                    "essential": True,
                    "command": ["sleep", "3600"],
                    "stopTimeout": 1,
                }
            ]
            stub.RegisterTaskDefinition(
                api.RegisterTaskDefinitionRequest(
                    family="usage", container_definitions=parse_container_definitions(containers)
                )
            )
            for interval in (options.interval, 60.0):
                agent = run_agent(scratch, plane, interval)
                if not results:
                    stub.CreateService(
                        api.CreateServiceRequest(
                            cluster="default",
                            name="usage",
                            task_definition="usage",
                            desired_count=options.tasks,
                        )
                    )

                def all_running() -> bool:
                    tasks = all_tasks(stub, api.ListTasksRequest(cluster="default", service="usage"))
                    return sum(1 for t in tasks if t.last_status == pb.RUNNING) == int(options.tasks)

                wait_for(all_running, 300, f"{options.tasks} tasks RUNNING")
                if interval == options.interval:

                    def all_reported() -> bool:
                        usage = stub.GetUsage(api.GetUsageRequest(cluster="default", service="usage"))
                        return len(usage.tasks) == int(options.tasks)

                    wait_for(all_reported, 60, f"usage of all {options.tasks} tasks")
                assert agent.process is not None
                time.sleep(2 * min(interval, 5.0))
                results[interval] = measure(agent.process.pid, options.seconds)
                agent.stop()
                agent.process = None
        finally:
            if agent is not None:
                if agent.process is not None:
                    agent.stop()
                agent.remove_containers()
            plane.stop()

    print(
        f"machine: {platform.machine()}, {psutil.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Docker {docker.from_env().version()['Version']}"
    )
    for interval, (cpu, rss, peak) in results.items():
        label = "usage every" if interval == options.interval else "usage nearly idle, every"
        print(
            f"agent with {options.tasks} running tasks, {label} {interval:g} s, over {options.seconds:g} s: "
            f"CPU {cpu:.2f}% of one core, RSS mean {rss:.0f} MiB, peak {peak:.0f} MiB"
        )


if __name__ == "__main__":
    main()
