"""berth.ecs.shapes: Berth's objects in ECS's JSON shapes (botocore's model is the reference)."""

from __future__ import annotations

import json
from typing import Any

import botocore.session  # type: ignore[import-untyped]
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from berth.ecs import shapes
from berth.ecs.arns import Arns
from berth.taskdef import parse_register_document
from berth.v1 import operator_pb2 as api
from berth.v1 import resources_pb2 as pb

ARNS = Arns()
P = "arn:aws:ecs:local:000000000000:"
MODEL = botocore.session.get_session().get_service_model("ecs")
# Proto enum names that must never reach ECS output.
PROTO_WORDS = ("DESIRED_", "SERVICE_ACTIVE", "SERVICE_DRAINING", "STOP_CODE", "NODE_LOST", "HEALTH_UNKNOWN")


def at(seconds: int, nanos: int = 0) -> Timestamp:
    return Timestamp(seconds=seconds, nanos=nanos)


def ecs_keys_only(shape_name: str, data: dict[str, Any]) -> None:
    """Every key is a member of the botocore shape, except Berth's own "berth"."""
    members = set(MODEL.shape_for(shape_name).members)
    assert set(data) - {"berth"} <= members, set(data) - members


def no_proto_words(data: Any) -> None:
    text = json.dumps(data)
    for word in PROTO_WORDS:
        assert word not in text


@pytest.mark.parametrize(
    ("enum", "table"),
    [
        (pb.TaskStatus, shapes.TASK_STATUS),
        (pb.DesiredStatus, shapes.DESIRED_STATUS),
        (pb.StopCode, shapes.STOP_CODE),
        (pb.HealthStatus, shapes.HEALTH_STATUS),
        (pb.ServiceStatus, shapes.SERVICE_STATUS),
        (pb.DeploymentStatus, shapes.DEPLOYMENT_STATUS),
        (pb.RolloutState, shapes.ROLLOUT_STATE),
        (pb.TaskDefinitionStatus, shapes.TASK_DEFINITION_STATUS),
        (pb.NodeStatus, shapes.NODE_STATUS),
        (pb.NodeStatus, shapes.BERTH_NODE_STATUS),
    ],
)
def test_every_proto_enum_value_has_an_ecs_word(enum: Any, table: dict[int, str | None]) -> None:
    assert set(enum.values()) == set(table)
    for word in table.values():
        assert word is None or word.upper() == word or word[0].isupper()
        assert word is None or not any(w in word for w in PROTO_WORDS)


def test_stop_codes_are_ecs_words() -> None:
    ecs = set(MODEL.shape_for("TaskStopCode").enum)
    # Every one is ECS's (a lost node's tasks: InfrastructureHealth; Berth's NodeLost is under "berth").
    assert {c for c in shapes.STOP_CODE.values() if c} <= ecs


def test_timestamp() -> None:
    assert shapes.timestamp(Timestamp()) is None
    assert shapes.timestamp(at(1700000000, 250_000_000)) == 1700000000.25


def test_cluster() -> None:
    description = api.ClusterDescription(
        cluster=pb.Cluster(name="prod", created_at=at(5)),
        registered_container_instances=3,
        running_tasks=4,
        pending_tasks=1,
        active_services=2,
    )
    assert shapes.cluster(ARNS, description) == {
        "clusterArn": P + "cluster/prod",
        "clusterName": "prod",
        "status": "ACTIVE",
        "registeredContainerInstancesCount": 3,
        "runningTasksCount": 4,
        "pendingTasksCount": 1,
        "activeServicesCount": 2,
        "statistics": [],
    }
    tagged = shapes.cluster(ARNS, description, tags=[pb.Tag(key="team", value="a")])
    assert tagged["tags"] == [{"key": "team", "value": "a"}]
    ecs_keys_only("Cluster", tagged)


def _task(**fields: Any) -> pb.Task:
    task = pb.Task(
        id="0123456789abcdef",
        cluster="prod",
        service="web",
        task_definition="web:3",
        desired_status=pb.DESIRED_STOPPED,
        last_status=pb.STOPPED,
        node_id="node-1",
        stop_code=pb.NODE_LOST,
        stopped_reason="node node-1 lost",
        has_exit_code=True,
        exit_code=137,
        created_at=at(100),
        started_at=at(101),
        stopped_at=at(200, 500_000_000),
        cpu=256,
        memory=128,
        health_status=pb.HEALTHY,
        health_checked=True,
        deployment_id=2,
        containers=[
            pb.ContainerState(
                name="app",
                docker_id="d0cker",
                last_status=pb.STOPPED,
                has_exit_code=True,
                exit_code=137,
                reason="OOMKilled",
                health_status=pb.HEALTHY,
                restart_count=1,
            )
        ],
        network_bindings=[
            pb.NetworkBinding(container_name="app", container_port=80, host_port=32768, protocol=pb.UDP)
        ],
    )
    for key, value in fields.items():
        setattr(task, key, value)
    return task


def test_task() -> None:
    task = _task()
    shown = shapes.task(ARNS, task, images={"app": "nginx:1"})
    task_arn = P + "task/prod/0123456789abcdef"
    assert shown == {
        "taskArn": task_arn,
        "clusterArn": P + "cluster/prod",
        "taskDefinitionArn": P + "task-definition/web:3",
        "containerInstanceArn": P + "container-instance/prod/node-1",
        "lastStatus": "STOPPED",
        "desiredStatus": "STOPPED",
        "launchType": "EC2",
        "cpu": "256",
        "memory": "128",
        "createdAt": 100,
        "startedAt": 101,
        "stoppedAt": 200.5,
        "stopCode": "InfrastructureHealth",
        "stoppedReason": "node node-1 lost",
        "group": "service:web",
        "healthStatus": "HEALTHY",
        "containers": [
            {
                "containerArn": P + "container/prod/0123456789abcdef/app",
                "taskArn": task_arn,
                "name": "app",
                "image": "nginx:1",
                "runtimeId": "d0cker",
                "lastStatus": "STOPPED",
                "exitCode": 137,
                "reason": "OOMKilled",
                "networkBindings": [
                    {"bindIP": "0.0.0.0", "containerPort": 80, "hostPort": 32768, "protocol": "udp"}
                ],
                "healthStatus": "HEALTHY",
                "berth": {"restartCount": 1},
            }
        ],
        "berth": {
            "id": "0123456789abcdef",
            "nodeId": "node-1",
            "service": "web",
            "deploymentId": 2,
            "exitCode": 137,
            "stopCode": "NodeLost",
            "healthChecked": True,
        },
    }
    ecs_keys_only("Task", shown)
    ecs_keys_only("Container", shown["containers"][0])
    no_proto_words(shown)


def test_a_tasks_health_history_is_a_berth_extra_not_an_ecs_key() -> None:
    task = _task()
    task.health_history.add(container="app", status=pb.HEALTHY, at=at(120))
    task.health_history.add(
        container="app", status=pb.UNHEALTHY, at=at(150, 250_000_000), output="exit 1: no"
    )
    shown = shapes.task(ARNS, task)
    assert shown["berth"]["healthHistory"] == [
        {"container": "app", "healthStatus": "HEALTHY", "at": 120},
        {"container": "app", "healthStatus": "UNHEALTHY", "at": 150.25, "output": "exit 1: no"},
    ]
    ecs_keys_only("Task", shown)
    no_proto_words(shown)
    assert "healthHistory" not in shapes.task(ARNS, _task())["berth"], "left out when there is none"


def test_a_pending_unplaced_one_off_task_leaves_out_what_it_has_not() -> None:
    task = pb.Task(
        id="abc",
        cluster="default",
        task_definition="job:1",
        desired_status=pb.DESIRED_RUNNING,
        last_status=pb.PENDING,
        pending_reason="no node has 4 GiB free",
        created_at=at(10),
    )
    shown = shapes.task(ARNS, task)
    for absent in ("containerInstanceArn", "startedAt", "stoppedAt", "stopCode", "stoppedReason", "cpu"):
        assert absent not in shown
    assert shown["group"] == "family:job"
    assert shown["lastStatus"] == "PENDING"
    assert shown["desiredStatus"] == "RUNNING"
    assert shown["healthStatus"] == "UNKNOWN"
    assert shown["berth"] == {"id": "abc", "pendingReason": "no node has 4 GiB free", "healthChecked": False}
    no_proto_words(shown)


def _description(*deployments: tuple[pb.Deployment, api.DeploymentCounts]) -> api.ServiceDescription:
    service = pb.Service(
        cluster="prod",
        name="web",
        task_definition="web:3",
        desired_count=2,
        status=pb.SERVICE_ACTIVE,
        created_at=at(50),
        placement_strategy=[pb.PlacementStrategy(type="spread", field="instanceId")],
        placement_constraints=[pb.PlacementConstraint(type="distinctInstance")],
        vip="10.99.0.5",
        ports=[pb.ServicePort(port=80, container_port=8080)],
        deployments=[d for d, _ in deployments],
    )
    return api.ServiceDescription(
        service=service,
        running_count=2,
        pending_count=1,
        dns_name="web.prod.berth",
        events=[
            pb.ServiceEvent(created_at=at(70), message="newest"),
            pb.ServiceEvent(created_at=at(60), message="older"),
        ],
        deployment_counts=[c for _, c in deployments],
    )


def test_service_and_its_deployments() -> None:
    primary = pb.Deployment(
        id=3,
        task_definition="web:3",
        status=pb.PRIMARY,
        rollout_state=pb.IN_PROGRESS,
        created_at=at(60),
        updated_at=at(61),
    )
    draining = pb.Deployment(
        id=2, task_definition="web:2", status=pb.DEPLOYMENT_ACTIVE, rollout_state=pb.COMPLETED
    )
    finished = pb.Deployment(
        id=1, task_definition="web:1", status=pb.DEPLOYMENT_ACTIVE, rollout_state=pb.COMPLETED
    )
    description = _description(
        (primary, api.DeploymentCounts(id=3, desired_count=2, running_count=1, pending_count=1)),
        (draining, api.DeploymentCounts(id=2, desired_count=1, running_count=1)),
        (finished, api.DeploymentCounts(id=1)),
    )
    shown = shapes.service(ARNS, description)
    ecs_keys_only("Service", shown)
    no_proto_words(shown)
    assert shown["serviceArn"] == P + "service/prod/web"
    assert shown["serviceName"] == "web"
    assert shown["clusterArn"] == P + "cluster/prod"
    assert shown["status"] == "ACTIVE"
    assert (shown["desiredCount"], shown["runningCount"], shown["pendingCount"]) == (2, 2, 1)
    assert shown["taskDefinition"] == P + "task-definition/web:3"
    assert shown["deploymentConfiguration"] == {
        "deploymentCircuitBreaker": {"enable": True, "rollback": True},
        "maximumPercent": 200,
        "minimumHealthyPercent": 100,
    }
    # The ACTIVE deployment without tasks is left out: ECS shows one deployment once steady.
    assert [d["id"] for d in shown["deployments"]] == ["ecs-svc/3", "ecs-svc/2"]
    first = shown["deployments"][0]
    ecs_keys_only("Deployment", first)
    assert first["status"] == "PRIMARY"
    assert first["rolloutState"] == "IN_PROGRESS"
    assert first["taskDefinition"] == P + "task-definition/web:3"
    assert (first["desiredCount"], first["runningCount"], first["pendingCount"]) == (2, 1, 1)
    assert (first["createdAt"], first["updatedAt"]) == (60, 61)
    assert shown["deployments"][1]["status"] == "ACTIVE"
    assert [e["message"] for e in shown["events"]] == ["newest", "older"]
    assert shown["events"][0]["createdAt"] == 70
    assert len({e["id"] for e in shown["events"]}) == 2
    assert shapes.service(ARNS, description)["events"] == shown["events"], "event ids are stable"
    assert shown["placementStrategy"] == [{"type": "spread", "field": "instanceId"}]
    assert shown["placementConstraints"] == [{"type": "distinctInstance"}]
    assert shown["createdAt"] == 50
    assert shown["schedulingStrategy"] == "REPLICA"
    assert shown["deploymentController"] == {"type": "ECS"}
    assert shown["berth"]["vip"] == "10.99.0.5"
    assert shown["berth"]["dnsName"] == "web.prod.berth"
    assert shown["berth"]["ports"] == [{"port": 80, "protocol": "tcp", "containerPort": 8080}]


def test_a_steady_service_has_one_deployment_and_a_draining_one_its_word() -> None:
    primary = pb.Deployment(id=1, task_definition="web:3", status=pb.PRIMARY, rollout_state=pb.COMPLETED)
    description = _description((primary, api.DeploymentCounts(id=1, desired_count=2, running_count=2)))
    description.service.status = pb.SERVICE_DRAINING
    description.events.extend(pb.ServiceEvent(created_at=at(1), message=str(i)) for i in range(150))
    shown = shapes.service(ARNS, description)
    assert len(shown["deployments"]) == 1
    assert shown["status"] == "DRAINING"
    assert len(shown["events"]) == 100


def test_task_definition_adds_ecs_fields_and_registers_again() -> None:
    td = pb.TaskDefinition(
        family="web",
        revision=4,
        status=pb.INACTIVE,
        registered_at=at(1000, 1_000_000),
        container_definitions=[pb.ContainerDefinition(name="app", image="nginx", essential=True, memory=64)],
    )
    shown = shapes.task_definition(ARNS, td)
    ecs_keys_only("TaskDefinition", shown)
    assert shown["taskDefinitionArn"] == P + "task-definition/web:4"
    assert (shown["family"], shown["revision"], shown["status"]) == ("web", 4, "INACTIVE")
    assert shown["registeredAt"] == 1000.001
    assert shown["compatibilities"] == ["EC2"]
    assert shown["containerDefinitions"][0]["image"] == "nginx"
    again, notes = parse_register_document(json.loads(json.dumps(shown)))
    assert list(again.container_definitions) == list(td.container_definitions)
    assert "read-only" in notes[0]


def test_container_instance() -> None:
    node = pb.Node(
        id="node-1",
        name="host-a",
        address="10.0.0.2",
        cpu_units=2048,
        memory_mib=4096,
        attributes={"zone": "a"},
        status=pb.DOWN,
        registered_at=at(5),
        agent_version="0.9",
    )
    summary = api.NodeSummary(
        node=node, cpu_reserved=512, memory_reserved=1024, running_tasks=2, pending_tasks=1, connected=True
    )
    shown = shapes.container_instance(ARNS, summary)
    ecs_keys_only("ContainerInstance", shown)
    assert shown == {
        "containerInstanceArn": P + "container-instance/default/node-1",
        "ec2InstanceId": "host-a",
        "versionInfo": {"agentVersion": "0.9"},
        "remainingResources": [
            {"name": "CPU", "type": "INTEGER", "integerValue": 1536},
            {"name": "MEMORY", "type": "INTEGER", "integerValue": 3072},
        ],
        "registeredResources": [
            {"name": "CPU", "type": "INTEGER", "integerValue": 2048},
            {"name": "MEMORY", "type": "INTEGER", "integerValue": 4096},
        ],
        # DOWN: ECS shows an instance whose agent stopped answering as ACTIVE, disconnected.
        "status": "ACTIVE",
        "agentConnected": False,
        "runningTasksCount": 2,
        "pendingTasksCount": 1,
        "attributes": [{"name": "zone", "value": "a"}],
        "registeredAt": 5,
        "berth": {
            "nodeId": "node-1",
            "name": "host-a",
            "address": "10.0.0.2",
            "status": "DOWN",
            "cpuReserved": 512,
            "memoryReserved": 1024,
        },
    }
    summary.node.status = pb.DRAINING
    assert shapes.container_instance(ARNS, summary)["status"] == "DRAINING"
    assert shapes.container_instance(ARNS, summary)["agentConnected"] is True


def test_botocore_parses_the_shapes() -> None:
    """What boto3 reads: the shapes go through botocore's JSON parser for each operation."""
    from botocore.parsers import JSONParser  # type: ignore[import-untyped]

    task = shapes.task(ARNS, _task())
    body = json.dumps({"tasks": [task], "failures": []}).encode()
    operation = MODEL.operation_model("DescribeTasks")
    parsed = JSONParser().parse({"body": body, "headers": {}, "status_code": 200}, operation.output_shape)
    assert parsed["tasks"][0]["taskArn"] == task["taskArn"]
    assert parsed["tasks"][0]["stoppedAt"].timestamp() == 200.5
