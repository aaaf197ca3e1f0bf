"""`berth ... -o json` prints the very objects the ECS API answers with, so a script
written against one works against the other: compared field for field, on a steady
service, its task, its task definition, its cluster and its container instance."""

from __future__ import annotations

from typing import Any

from berth.testing.cli import Berth
from berth.testing.daemons import REPO, AgentProcess
from berth.testing.ecs import EcsClients
from berth.testing.waiting import wait_until
from tests.ecs.conftest import CLUSTER


def _raw(clients: EcsClients, operation: str, body: dict[str, Any]) -> dict[str, Any]:
    code, answer = clients.raw(operation, body)
    assert code == 200, answer
    return answer


def test_cli_json_equals_the_ecs_api(clients: EcsClients, berth: Berth, shop_agent: AgentProcess) -> None:
    berth.ok(
        "taskdef",
        "register",
        "--family",
        "same",
        "--container-definitions",
        f"file://{REPO / 'examples' / 'web.json'}",
    )
    berth.ok(
        "service",
        "create",
        "--name",
        "same",
        "--cluster",
        CLUSTER,
        "--task-definition",
        "same",
        "--desired-count",
        "2",
    )
    clients.boto3().get_waiter("services_stable").wait(
        cluster=CLUSTER, services=["same"], WaiterConfig={"Delay": 1, "MaxAttempts": 120}
    )

    def settled() -> tuple[dict[str, Any], Any] | None:
        # Both doors read the same moment: equal unless something moved in between (retry then).
        api = _raw(clients, "DescribeServices", {"cluster": CLUSTER, "services": ["same"]})["services"][0]
        cli = berth.ok("service", "describe", "same", "--cluster", CLUSTER, "-o", "json").json()
        return (api, cli) if api == cli else None

    service, _ = wait_until(settled, 30, "the CLI and the ECS API to show the same service")[0]
    assert service["status"] == "ACTIVE" and service["runningCount"] == 2

    task_arn = _raw(clients, "ListTasks", {"cluster": CLUSTER, "serviceName": "same"})["taskArns"][0]
    task_api = _raw(clients, "DescribeTasks", {"cluster": CLUSTER, "tasks": [task_arn]})["tasks"][0]
    task_cli = berth.ok(
        "task", "describe", task_arn.rsplit("/", 1)[1], "--cluster", CLUSTER, "-o", "json"
    ).json()
    assert task_cli == task_api
    assert task_api["desiredStatus"] == "RUNNING" and task_api["lastStatus"] == "RUNNING"
    assert "stopCode" not in task_api

    taskdef_api = _raw(clients, "DescribeTaskDefinition", {"taskDefinition": "same:1"})["taskDefinition"]
    assert berth.ok("taskdef", "describe", "same:1", "-o", "json").json() == taskdef_api

    cluster_api = _raw(clients, "DescribeClusters", {"clusters": [CLUSTER]})["clusters"][0]
    listed = berth.ok("cluster", "list", "-o", "json").json()["clusters"]
    assert [c for c in listed if c["clusterName"] == CLUSTER] == [cluster_api]

    instance_api = _raw(
        clients,
        "DescribeContainerInstances",
        {"cluster": CLUSTER, "containerInstances": [shop_agent.node_id]},
    )["containerInstances"][0]
    nodes = berth.ok("node", "list", "-o", "json").json()["containerInstances"]
    assert [n for n in nodes if n["containerInstanceArn"] == instance_api["containerInstanceArn"]] == [
        instance_api
    ]

    # Every ECS enum as ECS spells it, never Berth's protobuf names.
    text = str([service, task_api, taskdef_api, cluster_api, instance_api])
    for proto_name in ("DESIRED_", "SERVICE_ACTIVE", "STOP_CODE_", "UNSPECIFIED", "DEPLOYMENT_ACTIVE"):
        assert proto_name not in text
    berth.ok("service", "delete", "same", "--cluster", CLUSTER)
