"""boto3 against Berth's ECS-compatible API: waiters, paginators, ECS's error classes,
`failures` for missing resources, and refusals of what the clients would not send."""

from __future__ import annotations

import time
from typing import Any

import pytest
from botocore.exceptions import ClientError

from berth.testing.daemons import REPO, AgentProcess, ControlPlaneProcess
from berth.testing.ecs import EcsClients
from tests.ecs.conftest import CLUSTER, running_containers

FAST = {"Delay": 1, "MaxAttempts": 120}


def _containers() -> list[dict[str, Any]]:
    import json

    loaded: list[dict[str, Any]] = json.loads((REPO / "examples" / "web.json").read_text())
    return loaded


def test_waiters_paginators_and_run_tasks_on_the_engine(
    clients: EcsClients, shop_agent: AgentProcess
) -> None:
    ecs = clients.boto3()
    for _ in range(3):
        ecs.register_task_definition(family="api", containerDefinitions=_containers())
    ecs.create_service(cluster=CLUSTER, serviceName="api", taskDefinition="api:3", desiredCount=2)
    ecs.get_waiter("services_stable").wait(cluster=CLUSTER, services=["api"], WaiterConfig=FAST)
    assert len(running_containers(CLUSTER, "api")) == 2
    # ECS's waiter looks at runningCount only; the deployment completes once its tasks have
    # settled (3 s up: they have no health check, controlplane/settling.py), as in ECS a
    # little after the count.
    deadline = time.monotonic() + 30
    while True:
        described = ecs.describe_services(cluster=CLUSTER, services=["api"])["services"][0]
        if described["deployments"][0]["rolloutState"] == "COMPLETED" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert described["runningCount"] == 2 and described["deployments"][0]["rolloutState"] == "COMPLETED"
    # boto3 parsed ECS's timestamps (epoch seconds) into datetimes.
    assert described["createdAt"].year >= 2026

    # Paginators walk every page with ECS's nextToken / maxResults.
    pages = list(
        ecs.get_paginator("list_task_definitions").paginate(
            familyPrefix="api", PaginationConfig={"PageSize": 2}
        )
    )
    assert len(pages) == 2
    arns = [arn for page in pages for arn in page["taskDefinitionArns"]]
    assert [arn.rsplit(":", 1)[1] for arn in arns] == ["1", "2", "3"]
    descending = ecs.list_task_definitions(familyPrefix="api", sort="DESC")["taskDefinitionArns"]
    assert descending == list(reversed(arns))
    tasks = [
        arn
        for page in ecs.get_paginator("list_tasks").paginate(
            cluster=CLUSTER, serviceName="api", PaginationConfig={"PageSize": 1}
        )
        for arn in page["taskArns"]
    ]
    assert len(tasks) == 2 and len(set(tasks)) == 2
    families = [
        f for page in ecs.get_paginator("list_task_definition_families").paginate() for f in page["families"]
    ]
    assert "api" in families

    # run_task then the tasks_stopped waiter.
    run = ecs.run_task(cluster=CLUSTER, taskDefinition="api", count=2, startedBy="batch")
    assert len(run["tasks"]) == 2 and run["failures"] == []
    arns = [t["taskArn"] for t in run["tasks"]]
    ecs.get_waiter("tasks_running").wait(cluster=CLUSTER, tasks=arns, WaiterConfig=FAST)
    for arn in arns:
        ecs.stop_task(cluster=CLUSTER, task=arn)
    ecs.get_waiter("tasks_stopped").wait(cluster=CLUSTER, tasks=arns, WaiterConfig=FAST)
    assert all(t["lastStatus"] == "STOPPED" for t in ecs.describe_tasks(cluster=CLUSTER, tasks=arns)["tasks"])

    # StartTask places on the named container instance.
    instance = ecs.list_container_instances(cluster=CLUSTER)["containerInstanceArns"][0]
    started = ecs.start_task(cluster=CLUSTER, taskDefinition="api", containerInstances=[instance])
    assert started["tasks"][0]["containerInstanceArn"] == instance
    ecs.stop_task(cluster=CLUSTER, task=started["tasks"][0]["taskArn"])

    # Drain and activate the container instance.
    drained = ecs.update_container_instances_state(
        cluster=CLUSTER, containerInstances=[instance], status="DRAINING"
    )
    assert drained["containerInstances"][0]["status"] == "DRAINING"
    active = ecs.update_container_instances_state(
        cluster=CLUSTER, containerInstances=[instance], status="ACTIVE"
    )
    assert active["containerInstances"][0]["status"] == "ACTIVE"

    ecs.delete_service(cluster=CLUSTER, service="api", force=True)


def test_missing_resources_are_failures_or_ecs_exceptions(
    clients: EcsClients, shop_agent: AgentProcess
) -> None:
    ecs = clients.boto3()
    clusters = ecs.describe_clusters(clusters=["nowhere", CLUSTER])
    assert [c["clusterName"] for c in clusters["clusters"]] == [CLUSTER]
    assert clusters["failures"] == [
        {"arn": "arn:aws:ecs:local:000000000000:cluster/nowhere", "reason": "MISSING"}
    ]
    services = ecs.describe_services(cluster=CLUSTER, services=["ghost"])
    assert services["services"] == [] and services["failures"][0]["reason"] == "MISSING"
    tasks = ecs.describe_tasks(cluster=CLUSTER, tasks=["0123456789abcdef0123456789abcdef"])
    assert tasks["tasks"] == [] and tasks["failures"][0]["reason"] == "MISSING"

    with pytest.raises(ecs.exceptions.ClusterNotFoundException):
        ecs.describe_services(cluster="nowhere", services=["web"])
    with pytest.raises(ecs.exceptions.ClusterNotFoundException):
        ecs.list_services(cluster="nowhere")
    with pytest.raises(ecs.exceptions.ServiceNotFoundException):
        ecs.update_service(cluster=CLUSTER, service="ghost", desiredCount=1)
    with pytest.raises(ecs.exceptions.ServiceNotFoundException):
        ecs.delete_service(cluster=CLUSTER, service="ghost")
    with pytest.raises(ecs.exceptions.ClientException):
        ecs.describe_task_definition(taskDefinition="ghost:7")
    with pytest.raises(ecs.exceptions.InvalidParameterException):
        ecs.stop_task(cluster=CLUSTER, task="0123456789abcdef0123456789abcdef")
    with pytest.raises(ecs.exceptions.ResourceNotFoundException):
        ecs.list_tags_for_resource(resourceArn=f"arn:aws:ecs:local:000000000000:service/{CLUSTER}/ghost")


def test_ecs_validation_through_boto3(
    clients: EcsClients, shop_agent: AgentProcess, ecs_plane: ControlPlaneProcess
) -> None:
    ecs = clients.boto3()
    ecs.register_task_definition(family="dup", containerDefinitions=_containers())
    ecs.create_service(cluster=CLUSTER, serviceName="dup", taskDefinition="dup", desiredCount=0)
    with pytest.raises(ecs.exceptions.InvalidParameterException):
        ecs.create_service(cluster=CLUSTER, serviceName="dup", taskDefinition="dup", desiredCount=0)
    ecs.update_service(cluster=CLUSTER, service="dup", desiredCount=1)
    with pytest.raises(ecs.exceptions.InvalidParameterException) as scaled:
        ecs.delete_service(cluster=CLUSTER, service="dup")
    assert "scaled above 0" in str(scaled.value)
    ecs.create_cluster(clusterName="busy")
    ecs.create_service(cluster="busy", serviceName="one", taskDefinition="dup", desiredCount=0)
    with pytest.raises(ecs.exceptions.ClusterContainsServicesException):
        ecs.delete_cluster(cluster="busy")
    # Creating a cluster that exists answers with it, as ECS does.
    assert ecs.create_cluster(clusterName="busy")["cluster"]["clusterName"] == "busy"
    # Unsupported parameters are refused by name; ECS operations Berth does not serve say so.
    with pytest.raises(ecs.exceptions.InvalidParameterException) as refused:
        ecs.create_service(
            cluster=CLUSTER,
            serviceName="lb",
            taskDefinition="dup",
            desiredCount=1,
            loadBalancers=[{"targetGroupArn": "arn:aws:elasticloadbalancing:x", "containerPort": 80}],
        )
    assert "loadBalancers" in str(refused.value)
    with pytest.raises(ecs.exceptions.UnsupportedFeatureException):
        ecs.list_attributes(cluster=CLUSTER, targetType="container-instance")
    with pytest.raises(ClientError) as bad_count:
        ecs.run_task(cluster=CLUSTER, taskDefinition="dup", count=11)
    assert bad_count.value.response["Error"]["Code"] == "InvalidParameterException"
    ecs.update_service(cluster=CLUSTER, service="dup", desiredCount=0)
    ecs.delete_service(cluster=CLUSTER, service="dup")
    ecs.delete_service(cluster="busy", service="one")
