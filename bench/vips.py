"""Service creation at scale: N creates from C concurrent clients, each getting a virtual IP.

Starts a control plane (embedded etcd) on loopback, registers one task
definition and creates N services (desired count 0) through C concurrent
gRPC clients, then checks every service got its own VIP:

  creates/s       services created / seconds from the first create to the last answer
  p50, p99        latency of one CreateService call (seconds)
  failures        creates that returned an error (by status code)

Run: python bench/vips.py --services 10000 --concurrency 32
Small (CI) size: --services 300 --concurrency 32
Loopback only; every call has a deadline and the run is bounded by --timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import grpc

from berth.taskdef import load_json, parse_container_definitions
from berth.testing.daemons import REPO, ControlPlaneProcess
from berth.v1 import operator_pb2 as api
from berth.v1 import operator_pb2_grpc
from berth.v1 import resources_pb2 as pb


async def create_all(
    plane: ControlPlaneProcess, count: int, concurrency: int, timeout: float
) -> tuple[list[float], Counter[str], list[str], float]:
    """Latencies of the successful creates, failures by code, the VIPs given, wall seconds."""
    latencies: list[float] = []
    failures: Counter[str] = Counter()
    vips: list[str] = []
    next_index = iter(range(count))
    async with plane.admin_aio_channel() as channel:
        stub = operator_pb2_grpc.OperatorStub(channel)

        async def client() -> None:
            for index in next_index:
                began = time.monotonic()
                try:
                    service = await stub.CreateService(
                        api.CreateServiceRequest(
                            name=f"svc-{index}",
                            task_definition="bench",
                            desired_count=0,
                            ports=[pb.ServicePort(port=80, name="http")],
                        ),
                        timeout=60,
                    )
                except grpc.aio.AioRpcError as error:
                    failures[error.code().name] += 1
                    continue
                latencies.append(time.monotonic() - began)
                vips.append(service.vip)

        started = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*(client() for _ in range(concurrency))), timeout)
        return latencies, failures, vips, time.monotonic() - started


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--service-cidr", default="10.96.0.0/16")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds for all creates")
    parser.add_argument("--cp-log-level", default="warning")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="berth-bench-vips-") as scratch:
        plane = ControlPlaneProcess(
            Path(scratch) / "data",
            [
                "--log-level",
                options.cp_log_level,
                "--service-cidr",
                options.service_cidr,
                "--max-services-per-cluster",
                str(max(options.services, 1)),
            ],
        )
        plane.start()
        try:
            stub = operator_pb2_grpc.OperatorStub(plane.admin_channel())
            definitions = (REPO / "examples" / "web.json").read_text()
            stub.RegisterTaskDefinition(
                api.RegisterTaskDefinitionRequest(
                    family="bench",
                    container_definitions=parse_container_definitions(
                        load_json(definitions, "examples/web.json")
                    ),
                ),
                timeout=10,
            )
            latencies, failures, vips, wall = asyncio.run(
                create_all(plane, options.services, options.concurrency, options.timeout)
            )
        finally:
            plane.stop()

    created = len(latencies)
    print(
        f"services        {options.services} requested, {created} created, {options.concurrency} concurrent"
    )
    print(f"creates/s       {created / wall:.0f}   ({wall:.1f} s in all)")
    print(f"latency p50     {percentile(latencies, 0.50) * 1000:.1f} ms")
    print(f"latency p99     {percentile(latencies, 0.99) * 1000:.1f} ms")
    print(f"latency mean    {statistics.fmean(latencies) * 1000 if latencies else float('nan'):.1f} ms")
    print(f"failures        {sum(failures.values())} {dict(failures) or ''}")
    print(f"distinct VIPs   {len(set(vips))} of {len(vips)}")
    if failures or len(set(vips)) != len(vips):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
