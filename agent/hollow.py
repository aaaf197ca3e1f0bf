"""`berth-hollow-agents`: many simulated hosts in one process (like kubemark).

Each hollow agent registers as its own node and holds its own stream to the
control plane, running the real supervisor and session code over a
`FakeDriver`, so the control plane sees exactly what a cluster of that size
would send it. Streams share a few gRPC channels (HTTP/2 multiplexes them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

import grpc

from agent.runtime.fake import FakeDriver
from agent.session import AGENT_VERSION, ControlPlaneSession
from agent.supervisor import TaskSupervisor
from berth import logs
from berth.grpc_options import CLIENT_OPTIONS
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb

log = logging.getLogger("hollow")

AGENTS_PER_CHANNEL = 100


async def _no_metrics() -> pb.NodeMetrics | None:
    return None


async def run_hollow(
    server: str,
    count: int,
    cpu_units: int,
    memory_mib: int,
    prefix: str,
    attributes: dict[str, str],
    driver: FakeDriver,
    stop: asyncio.Event,
) -> None:
    channels = [
        grpc.aio.insecure_channel(server, options=[("grpc.keepalive_time_ms", 30_000), *CLIENT_OPTIONS])
        for _ in range((count + AGENTS_PER_CHANNEL - 1) // AGENTS_PER_CHANNEL)
    ]
    workers: list[asyncio.Task[None]] = []
    for index in range(count):
        # One shared driver, one node each: the driver keeps tasks and change feeds per node.
        supervisor = TaskSupervisor(driver, resync_interval=60.0)
        registration = agent_pb.RegisterRequest(
            name=f"{prefix}-{index}",
            address="127.0.0.1",
            cpu_units=cpu_units,
            memory_mib=memory_mib,
            attributes={**attributes, "hollow-index": str(index)},
            agent_version=f"{AGENT_VERSION}-hollow",
        )
        session = ControlPlaneSession(
            server,
            registration,
            supervisor,
            on_registered=lambda _response: None,
            sample_metrics=_no_metrics,
            channel=channels[index // AGENTS_PER_CHANNEL],
        )
        workers.append(asyncio.create_task(supervisor.run(), name=f"hollow-{index}-supervisor"))
        workers.append(asyncio.create_task(session.run(), name=f"hollow-{index}-session"))
    log.info("event=hollow_agents_started count=%d server=%s", count, server)
    await stop.wait()
    for worker in workers:
        worker.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    for channel in channels:
        with contextlib.suppress(Exception):
            await channel.close(None)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="berth-hollow-agents", description=__doc__)
    parser.add_argument("--server", required=True)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--cpu-units", type=int, default=4096)
    parser.add_argument("--memory-mib", type=int, default=16384)
    parser.add_argument("--name-prefix", default="hollow")
    parser.add_argument("--attribute", action="append", default=[], help="KEY=VALUE, repeatable")
    parser.add_argument("--exit-after", type=float, default=None, help="every task exits after N seconds")
    parser.add_argument("--exit-code", type=int, default=0)
    parser.add_argument(
        "--fail-image",
        action="append",
        default=[],
        help="tasks using this image fail to start (as if it did not exist), repeatable",
    )
    parser.add_argument(
        "--healthy-after", type=float, default=0.0, help="health-checked containers turn healthy after N s"
    )
    parser.add_argument(
        "--unhealthy-after",
        type=float,
        default=None,
        help="containers with a health check turn unhealthy N seconds after their start",
    )
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    logs.configure(args.log_level)
    attributes = dict(a.split("=", 1) for a in args.attribute)
    driver = FakeDriver(
        exit_after=args.exit_after,
        exit_code=args.exit_code,
        fail_images=frozenset(args.fail_image),
        healthy_after=args.healthy_after,
        unhealthy_after=args.unhealthy_after,
    )

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_hollow(
            args.server,
            args.count,
            args.cpu_units,
            args.memory_mib,
            args.name_prefix,
            attributes,
            driver,
            stop,
        )

    asyncio.run(run())


if __name__ == "__main__":
    main()
