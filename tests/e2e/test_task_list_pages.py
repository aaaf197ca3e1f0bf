"""`berth task list` at a few hundred tasks on hollow agents: the pages of the real API cover
every task exactly once (and stay correct while a service grows between pages), the filters
work over the wire, a hostile token is one line, and the CLI's --all prints every task while
its default shows one page with the next token on stderr. The nodes stay READY throughout."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import grpc
import pytest

from berth.tasklist import all_tasks, pages
from berth.testing.cli import Berth
from berth.testing.daemons import REPO, ControlPlaneProcess, HollowAgentsProcess, JoinFlags
from berth.testing.waiting import wait_until
from berth.v1 import operator_pb2 as api
from berth.v1 import operator_pb2_grpc
from berth.v1 import resources_pb2 as pb

NODES = 50
SERVICES = {"alpha": 300, "beta": 200, "gamma": 100}
TOTAL = sum(SERVICES.values())  # 600


def _running(stub: operator_pb2_grpc.OperatorStub) -> int:
    request = api.ListTasksRequest(cluster="default", last_status=pb.RUNNING, page_size=1)
    return stub.ListTasks(request, timeout=10).total


def test_pages_of_hundreds_of_tasks_on_hollow_agents(plane: ControlPlaneProcess, tmp_path: Path) -> None:
    hollow = HollowAgentsProcess(tmp_path / "hollow.log", plane.address, NODES, join=JoinFlags.of(plane))
    hollow.start()
    channel = plane.admin_channel()
    try:
        stub = operator_pb2_grpc.OperatorStub(channel)
        berth = Berth.of(plane)
        wait_until(lambda: berth.nodes_exactly(NODES), 60, f"{NODES} hollow nodes")
        berth.register("web", [{"name": "web", "image": "anything:1", "memory": 16}], tmp_path)
        berth.register("batch", [{"name": "batch", "image": "anything:1", "memory": 16}], tmp_path)
        for name, count in SERVICES.items():
            family = "batch" if name == "gamma" else "web"
            berth.ok(
                "service",
                "create",
                "--name",
                name,
                "--task-definition",
                family,
                "--desired-count",
                str(count),
            )
        wait_until(lambda: _running(stub) == TOTAL or None, 120, f"{TOTAL} tasks RUNNING")

        # Pages of 97 over the wire: every task exactly once, in created order, the total on each.
        listing = list(pages(stub, api.ListTasksRequest(cluster="default", page_size=97), timeout=10))
        assert [len(p.tasks) for p in listing] == [97] * 6 + [TOTAL - 6 * 97]
        assert {p.total for p in listing} == {TOTAL}
        listed = [t for p in listing for t in p.tasks]
        ids = [t.id for t in listed]
        assert len(set(ids)) == TOTAL
        order = [(t.created_at.seconds, t.created_at.nanos, t.id) for t in listed]
        assert order == sorted(order)

        # A service grows between pages: nothing is listed twice, nothing that was there is missed.
        request = api.ListTasksRequest(cluster="default", page_size=150)
        first = stub.ListTasks(request, timeout=10)
        berth.ok("service", "update", "gamma", "--desired-count", "150")
        wait_until(lambda: _running(stub) == TOTAL + 50 or None, 60, "50 more RUNNING")
        request.page_token = first.next_page_token
        rest = all_tasks(stub, request, timeout=10)
        seen = [t.id for t in first.tasks] + [t.id for t in rest]
        assert len(seen) == len(set(seen)) == TOTAL + 50
        assert set(ids) <= set(seen)

        # Filters over the wire.
        node = stub.ListNodes(api.ListNodesRequest(), timeout=10).nodes[0].node
        on_node = all_tasks(stub, api.ListTasksRequest(cluster="default", node=node.id), timeout=10)
        assert on_node and all(t.node_id == node.id for t in on_node)
        everything = all_tasks(stub, api.ListTasksRequest(cluster="default", page_size=1000), timeout=10)
        assert len(on_node) == sum(1 for t in everything if t.node_id == node.id)
        assert Counter(t.service for t in everything) == {"alpha": 300, "beta": 200, "gamma": 150}
        batch = stub.ListTasks(api.ListTasksRequest(cluster="default", family="batch:1"), timeout=10)
        assert batch.total == 150 and all(t.task_definition == "batch:1" for t in batch.tasks)
        assert (
            stub.ListTasks(api.ListTasksRequest(cluster="default", service="beta"), timeout=10).total == 200
        )

        # A hostile token and a bad filter: one line each, INVALID_ARGUMENT.
        for bad in (
            api.ListTasksRequest(cluster="default", page_token="x" * 300),
            api.ListTasksRequest(cluster="default", page_token=first.next_page_token, service="beta"),
            api.ListTasksRequest(cluster="default", last_status=42),  # type: ignore[arg-type]
        ):
            with pytest.raises(grpc.RpcError) as refused:
                stub.ListTasks(bad, timeout=10)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
            assert "\n" not in (refused.value.details() or "")  # type: ignore[attr-defined]

        # The CLI: --all prints them all; the default one page, and the next token on stderr.
        printed = berth.ok("task", "list", "--all", "-o", "json").json()["tasks"]
        assert len(printed) == TOTAL + 50
        assert {t["taskArn"].rsplit("/", 1)[-1] for t in printed} == {t.id for t in everything}
        one_page = berth.ok("task", "list", "-o", "json")
        assert len(json.loads(one_page.stdout)["tasks"]) == 100
        assert f"100 of {TOTAL + 50} tasks shown; next page: --page-token " in one_page.stderr
        token = one_page.stderr.split("--page-token ", 1)[1].split()[0]
        second = berth.ok("task", "list", "--page-token", token, "--page-size", "1000", "-o", "json")
        assert len(second.json()["tasks"]) == TOTAL + 50 - 100 and "next page" not in second.stderr
        named = berth.ok("task", "list", "--all", "--node", node.name, "--status", "RUNNING", "-o", "json")
        assert len(named.json()["tasks"]) == len(on_node)
        refused_cli = berth("task", "list", "--page-token", "not-a-token")
        assert refused_cli.exit_code == 1
        assert "page_token is not a token this API returned" in refused_cli.stderr

        # Listing did not disturb the cluster: every node is still READY.
        summaries = stub.ListNodes(api.ListNodesRequest(), timeout=10).nodes
        assert {pb.NodeStatus.Name(s.node.status) for s in summaries} == {"READY"}
        assert "event=node_down" not in plane.log_path.read_text(errors="replace")
    finally:
        channel.close()
        assert hollow.stop(timeout=30) is not None


def test_task_list_benchmark_small() -> None:
    """bench/tasklist.py runs in CI at a small size so it cannot rot (figures are not asserted)."""
    result = subprocess.run(
        [sys.executable, "bench/tasklist.py", "--tasks", "2000", "--repeat", "2"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"page of 1000 of 2000 tasks: build median [\d.]+ ms", result.stdout)
    assert re.search(r"--all: 2 pages of up to 1000 in [\d.]+ ms", result.stdout)
    hold = r"loop hold: longest [\d.]+ ms CPU \([\d.]+ ms wall\); gc: \d+ collections"
    assert re.search(hold, result.stdout)
