"""Latency of the ECS-compatible API through boto3, side by side with the gRPC API.

Starts a control plane (embedded etcd, --aws-profile-dir in a scratch directory) and
one hollow node, registers one task definition, then, through boto3 with the profile
the control plane wrote (HTTPS, SigV4):

    CreateService    --services N   (desired count 0: the API's cost, not placement's)
    DescribeServices --describes M  (one service each, round robin)

and the same with Berth's gRPC API (mutual TLS) in the same run, one call at a time.
Prints p50/p99/max in milliseconds and the ECS/gRPC ratios.

Run: python bench/ecs_api.py [--services 200] [--describes 1000]
Only loopback is used; every loop is bounded in count; daemons stop at the end.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from berth.testing.daemons import REPO, ControlPlaneProcess, HollowAgentsProcess, JoinFlags
from berth.testing.ecs import EcsClients
from berth.v1 import operator_pb2 as api
from berth.v1 import operator_pb2_grpc


def timed(call: Callable[[], object], times: int) -> list[float]:
    samples = []
    for _ in range(times):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def summary(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered), p99, ordered[-1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument("--describes", type=int, default=1000)
    args = parser.parse_args()
    if not (1 <= args.services <= 5000 and 1 <= args.describes <= 100_000):
        parser.error("--services 1..5000, --describes 1..100000")
    containers = json.loads((REPO / "examples" / "web.json").read_text())
    with tempfile.TemporaryDirectory(prefix="berth-bench-ecs-") as scratch:
        base = Path(scratch)
        plane = ControlPlaneProcess(base / "cp", ["--aws-profile-dir", str(base / "aws")])
        plane.start()
        hollow = HollowAgentsProcess(base / "hollow.log", plane.address, 1, join=JoinFlags.of(plane))
        hollow.start()
        try:
            ecs = EcsClients(base / "aws").boto3()
            stub = operator_pb2_grpc.OperatorStub(plane.admin_channel())
            ecs.register_task_definition(family="bench", containerDefinitions=containers)
            ecs.list_clusters()  # connection and credentials warmed up, as the gRPC channel is below
            stub.ListClusters(api.ListClustersRequest())

            counter = iter(range(10**9))

            def create_ecs() -> None:
                ecs.create_service(serviceName=f"e{next(counter)}", taskDefinition="bench", desiredCount=0)

            def create_grpc() -> None:
                stub.CreateService(
                    api.CreateServiceRequest(
                        cluster="default", name=f"g{next(counter)}", task_definition="bench", desired_count=0
                    )
                )

            results = {
                "CreateService": (timed(create_ecs, args.services), timed(create_grpc, args.services)),
            }
            names = [f"e{i}" for i in range(args.services)]
            position = iter(range(10**9))

            def describe_ecs() -> None:
                ecs.describe_services(services=[names[next(position) % len(names)]])

            def describe_grpc() -> None:
                name = f"g{args.services + next(position) % args.services}"
                stub.DescribeService(api.ServiceRef(cluster="default", name=name))

            results["DescribeServices"] = (
                timed(describe_ecs, args.describes),
                timed(describe_grpc, args.describes),
            )
        finally:
            hollow.stop(timeout=15)
            plane.stop()
    print(
        f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, python {platform.python_version()}"
    )
    print(f"services={args.services} describes={args.describes} (one call at a time, loopback)")
    print(f"{'operation':<18}{'door':<6}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for operation, (ecs_samples, grpc_samples) in results.items():
        ecs_p50, ecs_p99, ecs_max = summary(ecs_samples)
        grpc_p50, grpc_p99, grpc_max = summary(grpc_samples)
        print(f"{operation:<18}{'ECS':<6}{ecs_p50:>9.2f}{ecs_p99:>9.2f}{ecs_max:>9.2f}")
        print(f"{operation:<18}{'gRPC':<6}{grpc_p50:>9.2f}{grpc_p99:>9.2f}{grpc_max:>9.2f}")
        print(f"{operation:<18}ratio ECS/gRPC p50 {ecs_p50 / grpc_p50:.2f}, p99 {ecs_p99 / grpc_p99:.2f}")


if __name__ == "__main__":
    main()
