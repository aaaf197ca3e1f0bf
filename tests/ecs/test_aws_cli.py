"""The seed's own commands, run with the real `aws` CLI against Berth's ECS-compatible API:
create a cluster, register a task definition from a file, create a service of 2 on EC2,
then describe, scale, roll out a new revision, run, list, stop, tag, deregister, delete.
Containers are counted on the Docker engine itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from berth.testing.daemons import REPO, AgentProcess
from berth.testing.ecs import EcsClients
from berth.testing.waiting import wait_until
from tests.ecs.conftest import CLUSTER, running_containers

WEB = REPO / "examples" / "web.json"


def _service(clients: EcsClients, name: str = "web") -> dict[str, Any]:
    answer = clients.aws_ok("ecs", "describe-services", "--cluster", CLUSTER, "--services", name)
    assert answer["failures"] == []
    service: dict[str, Any] = answer["services"][0]
    return service


def _steady(clients: EcsClients, count: int, revision: int) -> dict[str, Any] | None:
    service = _service(clients)
    deployments = service["deployments"]
    if (
        service["runningCount"] == count
        and len(deployments) == 1
        and deployments[0]["taskDefinition"].endswith(f"task-definition/web:{revision}")
        and deployments[0]["rolloutState"] == "COMPLETED"
        and len(running_containers(CLUSTER, "web")) == count
    ):
        return service
    return None


def _error(result: Any, error_type: str) -> None:
    """The aws CLI failed the way it fails against ECS: a service error's exit code (255 for the
    aws CLI v1 in requirements.lock; v2 says 254) and the error type named."""
    assert result.code == 255, (result.code, result.stderr)
    assert f"({error_type})" in result.stderr, result.stderr


def test_the_seed_commands_run_a_service_on_the_engine(
    clients: EcsClients, shop_agent: AgentProcess, tmp_path: Path
) -> None:
    # The cluster was created by `aws ecs create-cluster` (the agent fixture); it lists its one node.
    clusters = clients.aws_ok("ecs", "describe-clusters", "--clusters", CLUSTER)["clusters"]
    assert clusters[0]["clusterName"] == CLUSTER and clusters[0]["status"] == "ACTIVE"
    assert clusters[0]["registeredContainerInstancesCount"] == 1
    instances = clients.aws_ok("ecs", "list-container-instances", "--cluster", CLUSTER)
    assert len(instances["containerInstanceArns"]) == 1
    assert instances["containerInstanceArns"][0].endswith(
        f"container-instance/{CLUSTER}/{shop_agent.node_id}"
    )

    registered = clients.aws_ok(
        "ecs", "register-task-definition", "--family", "web", "--container-definitions", f"file://{WEB}"
    )["taskDefinition"]
    assert registered["family"] == "web" and registered["revision"] == 1 and registered["status"] == "ACTIVE"
    assert registered["taskDefinitionArn"] == "arn:aws:ecs:local:000000000000:task-definition/web:1"

    created = clients.aws_ok(
        "ecs",
        "create-service",
        "--cluster",
        CLUSTER,
        "--service-name",
        "web",
        "--task-definition",
        "web",
        "--desired-count",
        "2",
        "--launch-type",
        "EC2",
    )["service"]
    assert created["serviceArn"] == f"arn:aws:ecs:local:000000000000:service/{CLUSTER}/web"
    assert created["desiredCount"] == 2 and created["status"] == "ACTIVE"
    assert created["launchType"] == "EC2"

    # The aws CLI's own waiter (describe-services until one deployment runs the desired count).
    assert (
        clients.aws(
            "ecs", "wait", "services-stable", "--cluster", CLUSTER, "--services", "web", timeout=180
        ).code
        == 0
    )
    wait_until(lambda: _steady(clients, 2, 1), 60, "2 tasks of web:1 running on the engine")

    # Scale: the count, as ECS does it.
    clients.aws_ok("ecs", "update-service", "--cluster", CLUSTER, "--service", "web", "--desired-count", "3")
    wait_until(lambda: _steady(clients, 3, 1), 60, "3 tasks of web:1 running on the engine")

    # A new revision, rolled out as a deployment: seen IN_PROGRESS beside the old one, then alone.
    containers = json.loads(WEB.read_text())
    containers[0]["environment"] = [{"name": "GREETING", "value": "hello from revision 2"}]
    second = tmp_path / "web-2.json"
    second.write_text(json.dumps(containers))
    clients.aws_ok(
        "ecs", "register-task-definition", "--family", "web", "--container-definitions", f"file://{second}"
    )
    updated = clients.aws_ok(
        "ecs", "update-service", "--cluster", CLUSTER, "--service", "web", "--task-definition", "web:2"
    )["service"]
    primary = updated["deployments"][0]
    assert primary["status"] == "PRIMARY" and primary["taskDefinition"].endswith("web:2")
    assert primary["rolloutState"] == "IN_PROGRESS"
    assert any(
        d["status"] == "ACTIVE" and d["taskDefinition"].endswith("web:1") for d in updated["deployments"]
    )
    steady = wait_until(lambda: _steady(clients, 3, 2), 120, "3 tasks of web:2 running on the engine")[0]
    assert any("deployment" in event["message"] for event in steady["events"])

    # A one-off task, found again by list-tasks' filters, then stopped.
    run = clients.aws_ok(
        "ecs", "run-task", "--cluster", CLUSTER, "--task-definition", "web:2", "--started-by", "nightly-job"
    )
    assert run["failures"] == [] and len(run["tasks"]) == 1
    task_arn = run["tasks"][0]["taskArn"]
    assert run["tasks"][0]["startedBy"] == "nightly-job"
    listed = clients.aws_ok("ecs", "list-tasks", "--cluster", CLUSTER, "--started-by", "nightly-job")
    assert listed["taskArns"] == [task_arn]
    by_service = clients.aws_ok("ecs", "list-tasks", "--cluster", CLUSTER, "--service-name", "web")[
        "taskArns"
    ]
    assert len(by_service) == 3 and task_arn not in by_service
    by_family = clients.aws_ok("ecs", "list-tasks", "--cluster", CLUSTER, "--family", "web")["taskArns"]
    assert task_arn in by_family and len(by_family) == 4
    on_node = clients.aws_ok(
        "ecs", "list-tasks", "--cluster", CLUSTER, "--container-instance", shop_agent.node_id
    )["taskArns"]
    assert set(by_service) <= set(on_node)

    stopped = clients.aws_ok(
        "ecs", "stop-task", "--cluster", CLUSTER, "--task", task_arn, "--reason", "done for today"
    )["task"]
    assert stopped["desiredStatus"] == "STOPPED"
    assert (
        clients.aws(
            "ecs", "wait", "tasks-stopped", "--cluster", CLUSTER, "--tasks", task_arn, timeout=180
        ).code
        == 0
    )
    described = clients.aws_ok("ecs", "describe-tasks", "--cluster", CLUSTER, "--tasks", task_arn)["tasks"][0]
    assert described["lastStatus"] == "STOPPED" and described["stopCode"] == "UserInitiated"
    assert described["stoppedReason"] == "done for today"
    stopped_list = clients.aws_ok(
        "ecs",
        "list-tasks",
        "--cluster",
        CLUSTER,
        "--desired-status",
        "STOPPED",
        "--started-by",
        "nightly-job",
    )["taskArns"]
    assert stopped_list == [task_arn]

    # Tags on the service, by ARN.
    service_arn = created["serviceArn"]
    clients.aws_ok(
        "ecs",
        "tag-resource",
        "--resource-arn",
        service_arn,
        "--tags",
        "key=team,value=payments",
        "key=tier,value=web",
    )
    tags = clients.aws_ok("ecs", "list-tags-for-resource", "--resource-arn", service_arn)["tags"]
    assert sorted((t["key"], t["value"]) for t in tags) == [("team", "payments"), ("tier", "web")]
    clients.aws_ok("ecs", "untag-resource", "--resource-arn", service_arn, "--tag-keys", "tier")
    tags = clients.aws_ok("ecs", "list-tags-for-resource", "--resource-arn", service_arn)["tags"]
    assert tags == [{"key": "team", "value": "payments"}]

    # Deregister the old revision: it is INACTIVE and listed as such.
    gone = clients.aws_ok("ecs", "deregister-task-definition", "--task-definition", "web:1")["taskDefinition"]
    assert gone["status"] == "INACTIVE"
    inactive = clients.aws_ok(
        "ecs", "list-task-definitions", "--family-prefix", "web", "--status", "INACTIVE"
    )
    assert inactive["taskDefinitionArns"] == ["arn:aws:ecs:local:000000000000:task-definition/web:1"]

    # ECS's validation: no delete while scaled above zero without --force; none of a cluster in use.
    _error(
        clients.aws("ecs", "delete-service", "--cluster", CLUSTER, "--service", "web"),
        "InvalidParameterException",
    )
    assert len(running_containers(CLUSTER, "web")) == 3
    _error(clients.aws("ecs", "delete-cluster", "--cluster", CLUSTER), "ClusterContainsServicesException")
    deleted = clients.aws_ok("ecs", "delete-service", "--cluster", CLUSTER, "--service", "web", "--force")
    assert deleted["service"]["status"] == "DRAINING" and deleted["service"]["desiredCount"] == 0
    wait_until(lambda: not running_containers(CLUSTER, "web"), 60, "the service's containers gone")

    def service_missing() -> bool:
        answer = clients.aws_ok("ecs", "describe-services", "--cluster", CLUSTER, "--services", "web")
        return bool(answer["services"] == [] and answer["failures"][0]["reason"] == "MISSING")

    wait_until(service_missing, 60, "the deleted service reported MISSING")
    # The agent is still a member: ECS refuses to delete a cluster with container instances.
    _error(
        clients.aws("ecs", "delete-cluster", "--cluster", CLUSTER),
        "ClusterContainsContainerInstancesException",
    )
