"""Watching a service from outside while it changes: a client on its VIP, and a sampler of its tasks.

`VipClient` runs a container on a lab host that asks the service's virtual IP
over and over (a new TCP connection each time, bounded in count and time) and
tallies what it got. `TaskSampler` reads the service's tasks from the control
plane every 0.1 s (bounded) and keeps the lowest healthy and highest live
counts it saw, so a test can assert a deployment's bounds held throughout.
`running_by_host` says where the service's RUNNING tasks are.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import docker
import grpc

from berth.tasklist import all_tasks
from berth.testing.cli import Berth, node_id_of, node_of
from berth.testing.daemons import ControlPlaneProcess
from berth.testing.lab import Lab
from berth.v1 import operator_pb2 as api
from berth.v1 import operator_pb2_grpc
from berth.v1 import resources_pb2 as pb
from tests.lab.test_service_network import IMAGE, http_get

MAX_REQUESTS = 6000


class VipClient:
    """Requests to VIP:PORT from a container on `host`, 0.05 s apart, until `finish()`."""

    def __init__(self, lab: Lab, vip: str, port: int, host: str = "h1") -> None:
        self._host = lab.host(host)
        self._engine = docker.DockerClient(base_url=self._host.docker_url)
        # Bounded twice: by count, and by the stop file `finish` creates.
        loop = (
            f"i=0; while [ $i -lt {MAX_REQUESTS} ] && [ ! -e /stop ]; do "
            f"out=$({http_get(vip, port)}); "
            f'[ -n "$out" ] && echo "r$i:ok" || echo "r$i:fail"; i=$((i+1)); sleep 0.05; done; echo done'
        )
        self._container = self._engine.containers.run(
            IMAGE, ["sh", "-c", loop], dns=[self._host.address], detach=True
        )

    def requests(self) -> tuple[int, int]:
        """(requests so far, failed so far)."""
        results = re.findall(r"\br\d+:(ok|fail)\b", self._container.logs().decode())
        return len(results), results.count("fail")

    def finish(self) -> tuple[int, int]:
        """Stop asking; (requests, failed)."""
        try:
            # The image has no /tmp: the stop file lives at the root.
            code, output = self._container.exec_run(["touch", "/stop"])
            assert code == 0, f"could not stop the client: {output!r}"
            self._container.wait(timeout=30)
            return self.requests()
        finally:
            self.close()

    def close(self) -> None:
        try:
            self._container.remove(force=True)
        except docker.errors.NotFound:
            pass
        self._engine.close()


def serving(task: pb.Task) -> bool:
    """An endpoint as the control plane sees it (controlplane/endpoints.py)."""
    return (
        task.last_status == pb.RUNNING
        and task.desired_status == pb.DESIRED_RUNNING
        and not task.HasField("deregistered_at")
        and (not task.health_checked or task.health_status == pb.HEALTHY)
    )


@dataclass
class TaskSampler:
    """The service's healthy and live (not STOPPED) task counts, sampled until `stop()`."""

    plane: ControlPlaneProcess
    service: str
    lowest_healthy: int = 1 << 30
    highest_live: int = 0
    samples: int = 0
    errors: list[BaseException] = field(default_factory=list)
    _done: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> TaskSampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        channel = self.plane.admin_channel()
        stub = operator_pb2_grpc.OperatorStub(channel)
        deadline = time.monotonic() + 300
        try:
            while not self._done.is_set() and time.monotonic() < deadline:
                try:
                    tasks = all_tasks(
                        stub, api.ListTasksRequest(cluster="default", service=self.service), timeout=5
                    )
                except grpc.RpcError as error:
                    if error.code() != grpc.StatusCode.UNAVAILABLE:
                        raise
                    time.sleep(0.2)  # a control-plane restart: the tasks are as they were
                    continue
                self.lowest_healthy = min(self.lowest_healthy, sum(1 for t in tasks if serving(t)))
                self.highest_live = max(
                    self.highest_live, sum(1 for t in tasks if t.last_status != pb.STOPPED)
                )
                self.samples += 1
                time.sleep(0.1)
        except BaseException as error:  # handed to the test: a dead sampler must fail it
            self.errors.append(error)
        finally:
            channel.close()

    def stop(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(10)
            assert not self._thread.is_alive(), "the sampler did not stop"
        if self.errors:
            raise AssertionError("the task sampler failed") from self.errors[0]
        assert self.samples > 10, f"the sampler took only {self.samples} samples"


def running_by_host(berth: Berth, service: str) -> Counter[str]:
    """The service's RUNNING tasks per host name (h1, h2, h3)."""
    names = {node_id_of(n): n["ec2InstanceId"] for n in berth.instances()}
    return Counter(names[node_of(t)] for t in berth.running("default", service))
