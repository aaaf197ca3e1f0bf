"""`berth-hollow-agents`: many simulated hosts in one process (like kubemark).

Each hollow agent joins with the same multi-use token (a few at a time),
keeps its key and certificate in memory, and holds its own mutual-TLS
connection and stream to the control plane, running the real supervisor and
session code (renewal included) over a `FakeDriver`, so the control plane
sees exactly what a cluster of that size would send it.

SIGUSR1 makes every hollow node drop the next desired-state delta it
receives, as if lost in transit (`DeltaLoss`): tests use it to show that the
next delta meets a gap and the node asks for, and gets, a full snapshot.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass

from agent import credentials
from agent.credentials import NodeCredentials
from agent.runtime.fake import FakeDriver
from agent.session import AGENT_VERSION, ControlPlaneSession
from agent.supervisor import TaskSupervisor
from berth import logs, pki
from berth.errors import BerthError
from berth.gcpauses import quiet_gc
from berth.looplag import LoopLagMonitor
from berth.names import DEFAULT_CLUSTER, check_dns_label
from berth.servers import parse_servers
from berth.signals import on_signals
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb

log = logging.getLogger("hollow")

# Joins in flight at once: a thousand hosts must not stampede the join listener.
JOIN_CONCURRENCY = 32
JOIN_RETRY_CAP = 30.0


async def _no_metrics() -> pb.NodeMetrics | None:
    return None


class DeltaLoss:
    """Fault injection: after each `arm` (SIGUSR1), every node drops its next delta."""

    def __init__(self) -> None:
        self._armed = 0

    def arm(self) -> None:
        self._armed += 1
        log.warning("event=hollow_delta_loss_armed times=%d", self._armed)

    def for_node(self) -> Callable[[], bool]:
        """A node's test: True for the first delta it receives after each `arm`."""
        seen = self._armed

        def lose() -> bool:
            nonlocal seen
            if seen == self._armed:
                return False
            seen = self._armed
            return True

        return lose


@dataclass(frozen=True)
class JoinSettings:
    """What every hollow node joins with: one multi-use token and the pinned CA hash."""

    join_server: str
    token: str
    ca_hash: str


async def _join_one(join: JoinSettings, ca: bytes, name: str, limit: asyncio.Semaphore) -> NodeCredentials:
    """Join as `name`, retrying while the control plane is unreachable or refuses (no crash)."""
    backoff = 1.0
    while True:
        async with limit:
            try:
                return await credentials.join(join.join_server, join.token, ca, name)
            except BerthError as error:
                log.warning(
                    "event=hollow_join_failed name=%s error=%r retry_in=%.0fs", name, str(error), backoff
                )
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, JOIN_RETRY_CAP)


async def _hollow_node(
    server: str,
    join: JoinSettings,
    ca: bytes,
    registration: agent_pb.RegisterRequest,
    driver: FakeDriver,
    limit: asyncio.Semaphore,
    loss: DeltaLoss,
) -> None:
    node = await _join_one(join, ca, registration.name, limit)
    # One shared driver, one node each: the driver keeps tasks and change feeds per node.
    supervisor = TaskSupervisor(driver, node.node_id, resync_interval=60.0)
    session = ControlPlaneSession(
        server,
        registration,
        supervisor,
        node,
        credentials.MemoryStore(node),
        on_registered=lambda _response: None,
        sample_metrics=_no_metrics,
        keepalive_ms=30_000,
        lose_delta=loss.for_node(),
    )
    workers = [asyncio.create_task(supervisor.run()), asyncio.create_task(session.run())]
    try:
        await asyncio.gather(*workers)
    finally:
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)


async def run_hollow(
    server: str,
    join: JoinSettings,
    count: int,
    cpu_units: int,
    memory_mib: int,
    prefix: str,
    attributes: dict[str, str],
    driver: FakeDriver,
    stop: asyncio.Event,
    cluster: str = DEFAULT_CLUSTER,
    loss: DeltaLoss | None = None,
) -> None:
    """COUNT nodes, each with its own key, certificate and mutual-TLS channel, until `stop`."""
    # Fetched and checked once: every node trusts the same pinned CA.
    ca = await credentials.fetch_ca(join.join_server, join.ca_hash)
    limit = asyncio.Semaphore(JOIN_CONCURRENCY)
    workers: list[asyncio.Task[None]] = []
    for index in range(count):
        registration = agent_pb.RegisterRequest(
            name=f"{prefix}-{index}",
            address="127.0.0.1",
            cpu_units=cpu_units,
            memory_mib=memory_mib,
            attributes={**attributes, "hollow-index": str(index)},
            agent_version=f"{AGENT_VERSION}-hollow",
            cluster=cluster,
        )
        workers.append(
            asyncio.create_task(
                _hollow_node(server, join, ca, registration, driver, limit, loss or DeltaLoss()),
                name=f"hollow-{index}",
            )
        )
    log.info("event=hollow_agents_started count=%d server=%s", count, server)
    await stop.wait()
    for worker in workers:
        worker.cancel()
    await asyncio.gather(*workers, return_exceptions=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="berth-hollow-agents", description=__doc__)
    parser.add_argument("--server", required=True)
    parser.add_argument(
        "--join-token", required=True, help="a multi-use token: every hollow node joins with it"
    )
    parser.add_argument("--ca-hash", required=True, help="the cluster CA's hash, sha256:...")
    parser.add_argument(
        "--join-server", default=None, help="the join listener, HOST:PORT; default: --server's next port"
    )
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--cpu-units", type=int, default=4096)
    parser.add_argument("--memory-mib", type=int, default=16384)
    parser.add_argument("--name-prefix", default="hollow")
    parser.add_argument("--cluster", default=DEFAULT_CLUSTER, help="the cluster every hollow node joins")
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
    try:
        check_dns_label("cluster", args.cluster)
    except BerthError as error:
        parser.error(str(error))
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
        on_signals(loop, (signal.SIGTERM, signal.SIGINT), stop.set)
        loss = DeltaLoss()
        on_signals(loop, (signal.SIGUSR1,), loss.arm)
        # A thousand agents share this one loop: a stall here delays their heartbeats,
        # which the control plane cannot tell from its own (logged, to tell the two apart).
        lag = LoopLagMonitor(name="hollow")
        lag_task = asyncio.create_task(lag.run(), name="loop-lag")
        quiet_gc()
        join = JoinSettings(
            # Hollow nodes fetch the CA and join through one listener: the first.
            parse_servers(args.join_server)[0]
            if args.join_server
            else credentials.default_join_addresses(args.server)[0],
            args.join_token,
            pki.check_hash(args.ca_hash),
        )
        await run_hollow(
            args.server,
            join,
            args.count,
            args.cpu_units,
            args.memory_mib,
            args.name_prefix,
            attributes,
            driver,
            stop,
            args.cluster,
            loss,
        )
        lag_task.cancel()
        log.warning("event=hollow_stopped loop_lag_max_ms=%.0f", lag.worst * 1000)

    try:
        asyncio.run(run())
    except BerthError as error:
        log.error("event=fatal error=%r", str(error))
        sys.exit(1)


if __name__ == "__main__":
    main()
