"""Scheduler at scale: many tasks across many services onto hollow agents.

Starts a control plane (embedded etcd) and one `berth-hollow-agents` process,
waits for every hollow node, creates the services at desired count 0, then
scales them all up at once (16 concurrent UpdateService calls), and watches
etcd itself to time placements as they are committed:

  placements/s     tasks placed / seconds from the first scale-up call to the last placement commit
  all RUNNING      seconds from the first scale-up call until every task is RUNNING
  peak RSS         VmHWM of the control-plane process (and of its etcd, separately)
  API latency      a trivial call (ListClusters) every 50 ms meanwhile: how long anything
                   waiting on the control plane's event loop (lease keep-alives, heartbeats,
                   the CLI) waited at worst
  loop lag         the worst lateness of the control plane's event loop (its own monitor,
                   berth_event_loop_lag_max_seconds): what a lease keep-alive or a heartbeat
                   waited at worst; and the same for the hollow agents' process, whose
                   stalls delay their heartbeats just as well
  node_down        healthy hosts declared lost, and leadership lost, under the load: a run
                   with any of either counts as failed

Meanwhile a thread lists one service's tasks (ListTasks, as `berth task list --service`)
every second, as an operator would during an incident.

With --sigterm-after S the control plane gets SIGTERM S seconds into placing instead, and the
bench prints how long it took to exit (issue 14: within 10 s, or the run failed).

Run: python bench/scheduler.py --agents 1000 --services 100 --tasks-per-service 100
Small (CI) size: --agents 50 --services 10 --tasks-per-service 100
Loopback only; every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import re
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

from berth.testing.daemons import ControlPlaneProcess, HollowAgentsProcess, JoinFlags, free_port
from berth.v1 import operator_pb2 as api
from berth.v1 import operator_pb2_grpc
from berth.v1 import resources_pb2 as pb
from controlplane.store import Store, keys


class LatencyProbe:
    """Calls ListClusters every 50 ms on a thread of its own and keeps each call's milliseconds;
    another thread lists one service's tasks every second meanwhile."""

    def __init__(self, stub: operator_pb2_grpc.OperatorStub) -> None:
        self._stub = stub
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._lister = threading.Thread(target=self._list_tasks, daemon=True)
        self.samples: list[float] = []
        self.listings = 0

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            started = time.perf_counter()
            self._stub.ListClusters(api.ListClustersRequest(), timeout=60)
            self.samples.append((time.perf_counter() - started) * 1000)

    def _list_tasks(self) -> None:
        while not self._stop.wait(1.0):
            self._stub.ListTasks(api.ListTasksRequest(cluster="default", service="svc-0"), timeout=60)
            self.listings += 1

    def start(self) -> None:
        self._thread.start()
        self._lister.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(70)
        self._lister.join(70)

    def percentile(self, share: float) -> float:
        ordered = sorted(self.samples) or [0.0]
        return ordered[min(len(ordered) - 1, int(len(ordered) * share / 100))]


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def metrics_text(metrics_address: str) -> str:
    """The control plane's Prometheus exposition, once."""
    with urllib.request.urlopen(f"http://{metrics_address}/metrics", timeout=30) as response:
        text: str = response.read().decode()
    return text


def loop_lag_max_ms(text: str) -> float:
    """The control plane's worst event-loop lateness so far, from its metrics."""
    found = re.search(r"^berth_event_loop_lag_max_seconds (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) * 1000 if found else float("nan")


def stream_messages(text: str) -> str:
    """How many messages the agents' streams carried (whole run), from the control plane's metrics."""

    def total(pattern: str) -> int:
        return round(sum(float(v) for v in re.findall(pattern, text, re.MULTILINE)))

    reports = total(r"^berth_task_status_reports_total (\S+)$")
    sent = r'^berth_desired_messages_total{{kind="{}"}} (\S+)$'
    down = {kind: total(sent.format(kind)) for kind in ("snapshot", "delta")}
    resyncs = total(r"^berth_desired_resyncs_total (\S+)$")
    return (
        f"{reports} status reports up; {down['snapshot']} snapshots ({resyncs} asked for after a gap) "
        f"and {down['delta']} deltas down"
    )


def cpu_seconds(processes: dict[str, psutil.Process]) -> dict[str, float]:
    """CPU time (user + system) each process has used so far."""
    used = {}
    for name, process in processes.items():
        times = process.cpu_times()
        used[name] = times.user + times.system
    return used


def hollow_lag_max_ms(log_text: str) -> float:
    """The hollow agents' process's worst event-loop lateness, from the line it logs as it stops."""
    found = re.findall(r"event=hollow_stopped loop_lag_max_ms=(\d+)", log_text)
    return float(found[-1]) if found else float("nan")


def wait_nodes(stub: operator_pb2_grpc.OperatorStub, count: int, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        nodes = stub.ListNodes(api.ListNodesRequest(), timeout=30).nodes
        if sum(1 for n in nodes if n.connected and n.node.status == pb.READY) >= count:
            return time.monotonic() - start
        time.sleep(0.5)
    raise TimeoutError(f"{count} hollow nodes did not connect within {timeout}s")


async def watch_tasks(store: Store, total: int, timeout: float, started: asyncio.Event) -> dict[str, float]:
    """Follow tasks/ in etcd; return when every task is RUNNING (monotonic timestamps)."""
    placed: set[str] = set()
    running: set[str] = set()
    marks: dict[str, float] = {}
    await store.connect()

    async def follow() -> None:
        _, revision = await store.scan_raw(keys.TASKS)
        started.set()
        async for entries in store.watch(keys.TASKS, revision + 1):
            now = time.monotonic()
            for entry in entries:
                if entry.value is None:
                    continue
                task = pb.Task.FromString(entry.value)
                if task.node_id and task.id not in placed:
                    placed.add(task.id)
                    marks.setdefault("first_placed", now)
                    if len(placed) * 2 == total:
                        marks["half_placed"] = now
                    if len(placed) == total:
                        marks["last_placed"] = now
                if task.last_status == pb.RUNNING and task.id not in running:
                    running.add(task.id)
                    if len(running) * 2 == total:
                        marks["half_running"] = now
                    if len(running) == total:
                        marks["all_running"] = now
                        return

    try:
        await asyncio.wait_for(follow(), timeout)
    except TimeoutError:
        raise TimeoutError(
            f"after {timeout}s: {len(placed)} placed, {len(running)} RUNNING of {total}"
        ) from None
    finally:
        await store.close()
    return marks


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--tasks-per-service", type=int, default=100)
    parser.add_argument("--sample-size", type=int, default=16, help="scheduler's --scheduler-sample-size")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--cp-log-level", default="warning")
    parser.add_argument("--log-dir", type=Path, default=None, help="keep the daemons' logs here")
    parser.add_argument(
        "--node-grace",
        type=float,
        default=10,
        help="control plane's --node-grace: this measures placement, not failure detection",
    )
    parser.add_argument(
        "--sigterm-after",
        type=float,
        default=0,
        help="SIGTERM the control plane this many seconds into placing and time its exit (0: off)",
    )
    options = parser.parse_args()
    total = options.services * options.tasks_per_service

    metrics_address = f"127.0.0.1:{free_port()}"
    with tempfile.TemporaryDirectory(prefix="berth-bench-") as scratch:
        plane = ControlPlaneProcess(
            Path(scratch) / "cp",
            [
                "--metrics-listen",
                metrics_address,
                "--scheduler-sample-size",
                str(options.sample_size),
                "--node-grace",
                str(options.node_grace),
                "--log-level",
                options.cp_log_level,
            ],
        )
        plane.start()
        try:
            # Every hollow host joins with one multi-use token, as real hosts would.
            hollow = HollowAgentsProcess(
                Path(scratch) / "hollow.log",
                plane.address,
                options.agents,
                ["--cpu-units", "4096", "--memory-mib", "16384", "--attribute", "zone=bench"],
                join=JoinFlags.of(plane),
            )
        except BaseException:
            plane.stop()
            raise
        try:
            hollow.start()
            stub = operator_pb2_grpc.OperatorStub(
                plane.admin_channel(options=[("grpc.max_receive_message_length", 64 << 20)])
            )
            connect_seconds = wait_nodes(stub, options.agents, 300)
            stub.RegisterTaskDefinition(
                api.RegisterTaskDefinitionRequest(
                    family="bench",
                    container_definitions=[
                        pb.ContainerDefinition(
                            name="app",
                            image="hollow",
                            cpu=64,
                            memory=128,
                            essential=True,
                            port_mappings=[pb.PortMapping(container_port=8080)],
                        )
                    ],
                )
            )

            for index in range(options.services):
                stub.CreateService(
                    api.CreateServiceRequest(
                        cluster="default", name=f"svc-{index}", task_definition="bench", desired_count=0
                    )
                )

            def scale_up(index: int) -> None:
                stub.UpdateService(
                    api.UpdateServiceRequest(
                        cluster="default", name=f"svc-{index}", desired_count=options.tasks_per_service
                    ),
                    timeout=120,
                )

            async def run() -> dict[str, float]:
                started = asyncio.Event()
                watcher = asyncio.create_task(
                    watch_tasks(plane.etcd_store(timeout=60), total, options.timeout, started)
                )
                await started.wait()
                assert plane.process is not None and hollow.process is not None
                control_plane = psutil.Process(plane.process.pid)
                processes = {
                    "control plane": control_plane,
                    "its etcd": control_plane.children()[0],
                    "hollow agents": psutil.Process(hollow.process.pid),
                    "this bench": psutil.Process(),
                }
                cpu_before = cpu_seconds(processes)
                marks = {"create": time.monotonic()}
                # Progress, flushed: a profiler (or a person) can start watching the placing now.
                print(f"hosts connected; scaling up {options.services} services", flush=True)
                with ThreadPoolExecutor(16) as pool:
                    await asyncio.get_running_loop().run_in_executor(
                        None, lambda: list(pool.map(scale_up, range(options.services)))
                    )
                marks["created"] = time.monotonic()
                if options.sigterm_after:
                    elapsed = marks["created"] - marks["create"]
                    await asyncio.sleep(max(0.0, options.sigterm_after - elapsed))
                    marks["sigterm"] = time.monotonic()
                    # Said at once (flushed): someone watching a slow stop knows when it began.
                    print("sending SIGTERM to the control plane", flush=True)
                    exit_code = await asyncio.to_thread(plane.stop, 30)
                    marks["exited"] = time.monotonic()
                    marks["exit_code"] = float(exit_code if exit_code is not None else -1)
                    watcher.cancel()
                    return marks
                marks.update(await watcher)
                cpu_after = cpu_seconds(processes)
                for name in processes:
                    marks[f"cpu {name}"] = cpu_after[name] - cpu_before[name]
                return marks

            probe = LatencyProbe(stub)
            probe.start()
            try:
                marks = asyncio.run(run())
            finally:
                probe.stop()
            if options.sigterm_after:
                cp_rss = etcd_rss = cp_lag = float("nan")
                messages = ""
            else:
                assert plane.process is not None
                process = psutil.Process(plane.process.pid)
                cp_rss = peak_rss_mib(process.pid)
                etcd_rss = max((peak_rss_mib(c.pid) for c in process.children()), default=0.0)
                metrics = metrics_text(metrics_address)
                cp_lag = loop_lag_max_ms(metrics)
                messages = stream_messages(metrics)
        finally:
            hollow.stop()
            hollow_log = hollow.log_path.read_text(errors="replace") if hollow.log_path.exists() else ""
            hollow_lag = hollow_lag_max_ms(hollow_log)
            plane.stop()
            # Healthy hosts declared lost, and leadership lost, under this load: a run with any
            # is a failed run (the control plane starved its own liveness paths).
            plane_log = plane.log_path.read_text(errors="replace") if plane.log_path.exists() else ""
            node_downs = plane_log.count("event=node_down ")
            leadership_losses = plane_log.count("event=lost_leadership ")
            if options.log_dir:
                for daemon in (plane, hollow):
                    daemon.keep_log(options.log_dir)

    print(
        f"machine: {platform.machine()}, {psutil.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}"
    )
    print(
        f"size: {total} tasks in {options.services} services onto {options.agents} hollow agents "
        f"(sample size {options.sample_size})"
    )
    print(f"hollow agents connected in {connect_seconds:.1f} s")
    if options.sigterm_after:
        stopping = marks["exited"] - marks["sigterm"]
        print(
            f"SIGTERM {marks['sigterm'] - marks['create']:.1f} s into placing: the control plane exited "
            f"in {stopping:.2f} s (exit code {marks['exit_code']:.0f})"
        )
        print(f"node_down events: {node_downs}; leadership losses: {leadership_losses}")
        slow = stopping > 10 or node_downs or leadership_losses
        print(f"run: {'FAILED (slower than 10 s to stop, or liveness lost)' if slow else 'ok'}")
        return
    placing = marks["last_placed"] - marks["create"]
    print(
        f"placements committed: {total / placing:.0f} per second ({total} in {placing:.2f} s; "
        f"first {marks['first_placed'] - marks['create']:.2f} s after the first scale-up call)"
    )
    print(
        f"all {total} RUNNING: {marks['all_running'] - marks['create']:.2f} s after the first scale-up call "
        f"(the scale-up calls took {marks['created'] - marks['create']:.2f} s)"
    )
    cpu = {key[4:]: value for key, value in marks.items() if key.startswith("cpu ")}
    wall = marks["all_running"] - marks["create"]
    print(
        f"CPU used until all RUNNING ({psutil.cpu_count()} cores x {wall:.2f} s = "
        f"{psutil.cpu_count() * wall:.1f} s): "
        + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in cpu.items())
        + f"; {sum(cpu.values()) * 1000 / total:.2f} ms per task in all"
    )
    if "half_placed" in marks and "half_running" in marks:
        print(
            f"half placed after {marks['half_placed'] - marks['create']:.2f} s, "
            f"half RUNNING after {marks['half_running'] - marks['create']:.2f} s"
        )
    print(f"peak RSS: control plane {cp_rss:.0f} MiB, its etcd {etcd_rss:.0f} MiB")
    print(
        f"API latency while placing (ListClusters every 50 ms, {len(probe.samples)} calls): "
        f"median {probe.percentile(50):.1f} ms, p99 {probe.percentile(99):.1f} ms, "
        f"max {probe.percentile(100):.1f} ms"
    )
    print(
        f"event loop lag, worst: control plane {cp_lag:.0f} ms (whole run, start-up and joins included), "
        f"hollow agents' process {hollow_lag:.0f} ms; {probe.listings} task listings meanwhile"
    )
    print(f"agent streams (whole run, joins included): {messages}")
    print(f"node_down events: {node_downs}; leadership losses: {leadership_losses}")
    failed = node_downs or leadership_losses
    print(f"run: {'FAILED (healthy nodes declared down or leadership lost)' if failed else 'ok'}")


if __name__ == "__main__":
    main()
