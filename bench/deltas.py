"""What one endpoint change costs to send to every agent: a full snapshot each, or a delta each.

Builds the real cache over a MemoryStore holding N services (a VIP, one port,
E endpoints each, so N x E RUNNING tasks spread over A nodes), opens one
`DesiredStream` per node as the agent API does and sends each its first
message (a full snapshot), then moves one endpoint (a task's host port) and
measures, per agent and for all A agents:

  delta       the message each stream sends now (`DesiredStream.next_message`):
              build time, and encoded bytes (what goes on the wire)
  snapshot    what every agent was sent before deltas: its full snapshot again
              (`DesiredStates.build`, then encoded), on a sample of agents

Run: python bench/deltas.py [--services 10000] [--endpoints 5] [--agents 1000]
Small (CI) size: --services 500 --agents 50. In-process: no daemons, no network.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import time

import psutil

from berth.v1 import resources_pb2 as pb
from controlplane.cache import ClusterCache
from controlplane.desired import DesiredStates
from controlplane.desired_stream import DesiredStream
from controlplane.store import Put, keys
from controlplane.store.memory import MemoryStore

TASKDEF = pb.TaskDefinition(
    family="web",
    revision=1,
    container_definitions=[
        pb.ContainerDefinition(
            name="web", image="web:1", memory=16, port_mappings=[pb.PortMapping(container_port=8080)]
        )
    ],
)


def _service(n: int) -> pb.Service:
    return pb.Service(
        cluster="default",
        name=f"svc{n:05}",
        task_definition="web:1",
        desired_count=1,
        vip=f"10.{96 + n // 65536}.{n // 256 % 256}.{n % 256}",
        ports=[pb.ServicePort(port=80, container_port=8080)],
    )


def _task(n: int, endpoints: int, agents: int, host_port: int = 0) -> pb.Task:
    task = pb.Task(
        id=f"{n:032x}",
        cluster="default",
        service=f"svc{n // endpoints:05}",
        node_id=f"node-{n % agents}",
        task_definition="web:1",
        desired_status=pb.DESIRED_RUNNING,
        last_status=pb.RUNNING,
    )
    task.network_bindings.add(container_name="web", container_port=8080, host_port=host_port or 30000 + n)
    return task


def _ms(seconds: float) -> str:
    return f"{1000 * seconds:.2f} ms"


def _size(count: float) -> str:
    return (
        f"{count / 1e6:.2f} MB"
        if count >= 1e6
        else f"{count / 1e3:.1f} kB"
        if count >= 1e3
        else f"{count:.0f} B"
    )


async def run(services: int, endpoints: int, agents: int, full_sample: int) -> None:
    store = MemoryStore()
    cache = ClusterCache(store, relist_pause=0)
    await cache.start()
    try:
        started = time.perf_counter()
        writes = [Put(keys.taskdef("web", 1), TASKDEF)]
        writes += [
            Put(
                keys.node(f"node-{i}"),
                pb.Node(id=f"node-{i}", address=f"10.1.{i // 256}.{i % 256}", status=pb.READY),
            )
            for i in range(agents)
        ]
        writes += [Put(keys.service("default", f"svc{n:05}"), _service(n)) for n in range(services)]
        writes += [
            Put(keys.task(f"{n:032x}"), _task(n, endpoints, agents)) for n in range(services * endpoints)
        ]
        for at in range(0, len(writes), 10_000):
            await store.commit(writes[at : at + 10_000])
        await cache.wait_for_revision(store.revision, timeout=300)
        desired = DesiredStates(cache)
        streams = [DesiredStream(desired, f"node-{i}") for i in range(agents)]
        first, first_build = [], []
        for index, stream in enumerate(streams):
            begun = time.perf_counter()
            message = stream.next_message()
            first_build.append(time.perf_counter() - begun)
            assert message is not None and message.HasField("desired_state")
            if index < full_sample:  # encoding every agent's copy would only repeat the figure
                first.append(len(message.SerializeToString()))
        print(
            f"{services} services x {endpoints} endpoints on {agents} agents: filled in "
            f"{time.perf_counter() - started:.1f} s; "
            f"first snapshot {_size(statistics.median(first))} per agent, "
            f"built in {_ms(statistics.median(first_build))} (median)"
        )

        # One endpoint moves: a task of the first service gets another host port.
        await store.commit([Put(keys.task(f"{0:032x}"), _task(0, endpoints, agents, host_port=29999))])
        await cache.wait_for_revision(store.revision, timeout=10)

        build, encode, sizes = [], [], []
        total_started = time.perf_counter()
        for stream in streams:
            started = time.perf_counter()
            message = stream.next_message()
            built = time.perf_counter()
            assert message is not None and message.HasField("desired_delta"), "one endpoint: a delta"
            sizes.append(len(message.SerializeToString()))
            encode.append(time.perf_counter() - built)
            build.append(built - started)
        total = time.perf_counter() - total_started
        print(
            f"delta:    {_size(statistics.median(sizes))} per agent, {_size(sum(sizes))} for {agents}; "
            f"build {_ms(statistics.median(build))} (first {_ms(build[0])}: the table's changes, once), "
            f"encode {_ms(statistics.median(encode))} per agent; {_ms(total)} for {agents}"
        )

        sample = streams[: min(full_sample, agents)]
        build, encode, sizes = [], [], []
        for index in range(len(sample)):
            started = time.perf_counter()
            _, state = desired.build(f"node-{index}")
            built = time.perf_counter()
            sizes.append(len(state.SerializeToString()))
            encode.append(time.perf_counter() - built)
            build.append(built - started)
        per_agent = statistics.mean(build) + statistics.mean(encode)
        print(
            f"snapshot: {_size(statistics.median(sizes))} per agent, "
            f"{_size(statistics.mean(sizes) * agents)} for {agents}; "
            f"build {_ms(statistics.median(build))}, encode {_ms(statistics.median(encode))} "
            f"per agent; {per_agent * agents:.2f} s for {agents} (measured on {len(sample)}, scaled)"
        )
    finally:
        await cache.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--endpoints", type=int, default=5)
    parser.add_argument("--agents", type=int, default=1_000)
    parser.add_argument("--full-sample", type=int, default=100, help="agents whose full snapshot is timed")
    options = parser.parse_args()
    if (
        not 1 <= options.services <= 60_000
        or not 1 <= options.endpoints <= 20
        or not 1 <= options.agents <= 5_000
    ):
        parser.error("--services 1-60000, --endpoints 1-20, --agents 1-5000")
    print(
        f"machine: {platform.processor() or platform.machine()}, {psutil.cpu_count()} CPUs, "
        f"Python {platform.python_version()}"
    )
    asyncio.run(run(options.services, options.endpoints, options.agents, max(1, options.full_sample)))


if __name__ == "__main__":
    main()
