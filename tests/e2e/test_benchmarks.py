"""The benchmarks run in CI at a small size so they cannot rot (figures are not asserted)."""

from __future__ import annotations

import re
import subprocess
import sys

from berth.testing.daemons import REPO


def _run(*args: str) -> str:
    result = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_core_benchmark_small(test_image: str) -> None:
    output = _run("bench/core.py", "--count", "3", "--kills", "2")
    assert re.search(r"service create -> 3 RUNNING: [\d.]+ s", output)
    assert re.search(r"docker kill -> replacement RUNNING over 2 kills: median [\d.]+ s", output)


def test_scheduler_benchmark_small() -> None:
    output = _run("bench/scheduler.py", "--agents", "50", "--services", "10", "--tasks-per-service", "100")
    assert re.search(r"placements committed: \d+ per second \(1000 in", output)
    assert re.search(r"all 1000 RUNNING: [\d.]+ s", output)
    assert re.search(r"peak RSS: control plane \d+ MiB", output)
    assert re.search(r"node_down events: \d+; leadership losses: \d+", output)


def test_usage_benchmark_small(test_image: str) -> None:
    output = _run("bench/usage.py", "--tasks", "3", "--seconds", "3")
    assert re.search(
        r"agent with 3 running tasks, usage every 5 s, over 3 s: CPU [\d.]+% of one core", output
    )


def test_ecs_api_benchmark_small() -> None:
    output = _run("bench/ecs_api.py", "--services", "5", "--describes", "10")
    for operation in ("CreateService", "DescribeServices"):
        assert re.search(rf"{operation}\s+ECS\s+[\d.]+\s+[\d.]+\s+[\d.]+", output), output
        assert re.search(rf"{operation}\s+gRPC\s+[\d.]+\s+[\d.]+\s+[\d.]+", output), output
        assert re.search(rf"{operation}\s+ratio ECS/gRPC p50 [\d.]+, p99 [\d.]+", output), output


def _bench_namespaces() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in listed.splitlines() if line.startswith("berthbench-")}


def test_netfilter_benchmark_small() -> None:
    # Both backends, each in a namespace the bench creates and deletes.
    before = _bench_namespaces()
    output = _run(
        "bench/netfilter.py", "--services", "50", "--endpoints", "3", "--changes", "3", "--probes", "20"
    )
    assert re.search(r"\s+nftables\s+iptables\n", output), output
    for row in ("full sync \\(s\\)", "one change median \\(ms\\)", "connect, 51 services, p50 \\(us\\)"):
        assert re.search(rf"{row}\s+[\d.]+\s+[\d.]+\n", output), output
    assert _bench_namespaces() <= before, "the bench deletes its namespaces"
