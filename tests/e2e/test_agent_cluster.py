"""Agents join a cluster (`--cluster`): tasks of a cluster run only on its nodes, a cluster
with nodes is not deleted, and an agent naming an unknown cluster waits until it exists."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from berth.tasklist import all_tasks
from berth.testing.cli import Berth
from berth.testing.daemons import ControlPlaneProcess, HollowAgentsProcess, JoinFlags
from berth.testing.waiting import wait_until
from berth.v1 import operator_pb2 as api
from berth.v1 import operator_pb2_grpc
from berth.v1 import resources_pb2 as pb


@contextmanager
def hollow_nodes(
    plane: ControlPlaneProcess, log_path: Path, count: int, cluster: str, prefix: str
) -> Iterator[HollowAgentsProcess]:
    process = HollowAgentsProcess(
        log_path, plane.address, count, ["--name-prefix", prefix], join=JoinFlags.of(plane), cluster=cluster
    )
    process.start()
    try:
        yield process
    finally:
        assert process.stop(timeout=15) is not None


def nodes_by_cluster(plane: ControlPlaneProcess) -> dict[str, set[str]]:
    with plane.admin_channel() as channel:
        listed = operator_pb2_grpc.OperatorStub(channel).ListNodes(api.ListNodesRequest(), timeout=10)
    found: dict[str, set[str]] = {}
    for summary in listed.nodes:
        found.setdefault(summary.node.cluster, set()).add(summary.node.id)
    return found


def tasks_of(plane: ControlPlaneProcess, cluster: str) -> list[pb.Task]:
    with plane.admin_channel() as channel:
        stub = operator_pb2_grpc.OperatorStub(channel)
        return all_tasks(stub, api.ListTasksRequest(cluster=cluster), timeout=10)


def test_a_clusters_tasks_run_only_on_its_nodes_and_its_nodes_keep_it_from_deletion(
    plane: ControlPlaneProcess, tmp_path: Path
) -> None:
    berth = Berth.of(plane)
    berth("cluster", "create", "red", "--tag", "aws:owner=me").assert_refused("is reserved")
    berth.ok("cluster", "create", "blue", "--tag", "team=payments", "--tag", "tier=")
    with plane.admin_channel() as channel:
        clusters = operator_pb2_grpc.OperatorStub(channel).ListClusters(api.ListClustersRequest(), timeout=10)
    assert [c.name for c in clusters.clusters] == ["blue", "default"]
    assert [(t.key, t.value) for t in clusters.clusters[0].tags] == [("team", "payments"), ("tier", "")]
    with (
        hollow_nodes(plane, tmp_path / "red.log", 2, "default", "red"),
        hollow_nodes(plane, tmp_path / "blue.log", 2, "blue", "blue"),
    ):
        wait_until(
            lambda: (
                {c: len(ids) for c, ids in nodes_by_cluster(plane).items()} == {"default": 2, "blue": 2}
                or None
            ),
            30,
            "2 nodes in each cluster",
        )
        blue_nodes = nodes_by_cluster(plane)["blue"]
        listed = berth.ok("node", "list", "--cluster", "blue").stdout
        assert "CLUSTER" in listed and listed.count("blue-") == 2 and "red-" not in listed

        berth.register("web", [{"name": "web", "image": "anything:1", "memory": 16}], tmp_path)
        berth.ok(
            "service", "create", "--cluster", "blue", "--name", "web", "--task-definition", "web",
            "--desired-count", "6",
        )  # fmt: skip
        wait_until(lambda: berth.running_exactly("blue", 6, "web"), 30, "6 blue tasks RUNNING")
        placed_on = {t.node_id for t in tasks_of(plane, "blue")}
        assert placed_on == blue_nodes, "spread over blue's two nodes, and only them"

        berth("cluster", "delete", "blue").assert_refused("still has 1 service(s) (web)")
        berth.ok("service", "delete", "--cluster", "blue", "web")
        wait_until(lambda: not tasks_of(plane, "blue") or None, 30, "blue's tasks stopped")
        wait_until(
            lambda: "service(s)" not in berth("cluster", "delete", "blue").stderr or None,
            30,
            "the drained service gone",
        )
        berth("cluster", "delete", "blue").assert_refused(
            "cluster 'blue' still has 2 container instances; drain and remove them first"
        )
    assert "blue" in berth.ok("cluster", "list").stdout


def test_an_agent_naming_an_unknown_cluster_is_refused_and_joins_once_it_exists(
    plane: ControlPlaneProcess, tmp_path: Path
) -> None:
    berth = Berth.of(plane)
    log_path = tmp_path / "green.log"
    with hollow_nodes(plane, log_path, 1, "green", "green"):
        expected = "cluster 'green' does not exist; create it with `berth cluster create green`"
        wait_until(
            lambda: expected in (log_path.read_text() if log_path.exists() else "") or None,
            30,
            "the agent to log why it was refused",
        )
        assert nodes_by_cluster(plane) == {}
        berth.ok("cluster", "create", "green")
        nodes, seconds = wait_until(lambda: nodes_by_cluster(plane) or None, 30, "the node in cluster green")
        print(f"the node joined {seconds:.1f}s after its cluster was created")
        assert list(nodes) == ["green"]
