"""The control plane under placement load keeps its own liveness paths, and stops on SIGTERM.

A small form of issue 14's reproducer: 200 hollow agents, 5 services of 200
tasks scaled up at once, `berth task list` run meanwhile. No healthy node
may be declared DOWN and leadership may not be lost (the lease keep-alives
and heartbeats must not starve), and the worst lateness of the event loop is
reported. Then a second scale-up, and SIGTERM while it is being placed: the
process must be gone within 10 s.
"""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from berth.testing.cli import Berth
from berth.testing.daemons import ControlPlaneProcess, HollowAgentsProcess, JoinFlags, free_port
from berth.testing.waiting import wait_until
from berth.v1 import operator_pb2 as api
from berth.v1 import operator_pb2_grpc
from berth.v1 import resources_pb2 as pb

AGENTS = 200
SERVICES = 5
TASKS = 200
# Shorter than the scheduler bench's 10 s: a starved keep-alive path shows sooner.
GRACE = 5.0


def _loop_lag_max_ms(metrics_address: str) -> float:
    with urllib.request.urlopen(f"http://{metrics_address}/metrics", timeout=10) as response:
        text = response.read().decode()
    found = re.search(r"^berth_event_loop_lag_max_seconds (\S+)$", text, re.MULTILINE)
    assert found, "the control plane exports its event loop's worst lateness"
    return float(found.group(1)) * 1000


def _scale_all(stub: operator_pb2_grpc.OperatorStub, count: int) -> None:
    def scale(index: int) -> None:
        stub.UpdateService(
            api.UpdateServiceRequest(cluster="default", name=f"svc-{index}", desired_count=count), timeout=60
        )

    with ThreadPoolExecutor(SERVICES) as pool:
        list(pool.map(scale, range(SERVICES)))


def _running(stub: operator_pb2_grpc.OperatorStub) -> int:
    """RUNNING tasks of the bench's services, counted by the server (ListTasks pages its answer)."""
    return sum(
        stub.ListTasks(
            api.ListTasksRequest(
                cluster="default", service=f"svc-{index}", last_status=pb.RUNNING, page_size=1
            ),
            timeout=30,
        ).total
        for index in range(SERVICES)
    )


def test_placement_load_starves_no_liveness_path_and_sigterm_stops_it(tmp_path: Path) -> None:
    metrics_address = f"127.0.0.1:{free_port()}"
    plane = ControlPlaneProcess(
        tmp_path / "cp",
        ["--node-grace", str(GRACE), "--scheduler-sample-size", "16", "--metrics-listen", metrics_address],
    )
    plane.start()
    hollow = HollowAgentsProcess(
        tmp_path / "hollow.log",
        plane.address,
        AGENTS,
        ["--cpu-units", "4096", "--memory-mib", "16384"],
        join=JoinFlags.of(plane),
    )
    try:
        hollow.start()
        channel = plane.admin_channel(options=[("grpc.max_receive_message_length", 64 << 20)])
        stub = operator_pb2_grpc.OperatorStub(channel)

        def ready() -> int | None:
            nodes = stub.ListNodes(api.ListNodesRequest(), timeout=30).nodes
            count = sum(1 for n in nodes if n.connected and n.node.status == pb.READY)
            return count if count == AGENTS else None

        wait_until(ready, 60, f"{AGENTS} hollow nodes connected", interval=0.5)
        stub.RegisterTaskDefinition(
            api.RegisterTaskDefinitionRequest(
                family="load",
                container_definitions=[
                    pb.ContainerDefinition(name="app", image="hollow", cpu=64, memory=128, essential=True)
                ],
            )
        )
        for index in range(SERVICES):
            stub.CreateService(
                api.CreateServiceRequest(
                    cluster="default", name=f"svc-{index}", task_definition="load", desired_count=0
                )
            )

        # An operator lists tasks during the load, as during an incident.
        berth = Berth.of(plane)
        listing = threading.Event()
        listings: list[int] = []

        def list_tasks() -> None:
            # The first at once, while the scale-up is placed; then every second.
            while True:
                listings.append(berth("task", "list").exit_code)
                if listing.wait(1.0):
                    return

        lister = threading.Thread(target=list_tasks, daemon=True)
        lister.start()
        started = time.monotonic()
        try:
            _scale_all(stub, TASKS)
            total = SERVICES * TASKS
            wait_until(
                lambda: total if _running(stub) == total else None, 60, f"{total} tasks RUNNING", interval=1.0
            )
            seconds = time.monotonic() - started
        finally:
            listing.set()
            lister.join(30)
        lag_ms = _loop_lag_max_ms(metrics_address)
        log = plane.log_path.read_text(errors="replace")
        print(
            f"{total} tasks on {AGENTS} hollow agents RUNNING in {seconds:.1f} s; "
            f"event loop lag, worst: {lag_ms:.0f} ms; {len(listings)} task listings meanwhile"
        )
        assert log.count("event=node_down ") == 0, "healthy nodes were declared DOWN under load"
        assert log.count("event=lost_leadership ") == 0, "leadership was lost under load"
        assert listings and all(code == 0 for code in listings), listings
        assert lag_ms < GRACE * 1000, "the event loop stalled for a whole node grace"

        # SIGTERM while a second scale-up is being placed.
        _scale_all(stub, 2 * TASKS)
        assert plane.process is not None
        plane.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        try:
            plane.process.wait(15)
        except subprocess.TimeoutExpired:
            pass
        stopped_in = time.monotonic() - signalled
        tail = plane.log_tail(5)
        print(f"SIGTERM in the middle of placing: exited in {stopped_in:.1f} s\n{tail}")
        assert plane.process.returncode is not None and stopped_in <= 10, tail
        channel.close()
    finally:
        hollow.stop(timeout=15)
        plane.stop()
