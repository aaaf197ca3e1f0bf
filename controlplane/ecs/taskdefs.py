"""ECS's task definition operations: register, describe, list, list families, deregister.

RegisterTaskDefinition reads its parameters with the same parser as
`berth taskdef register --cli-input-json` (berth/taskdef.py), so the API and the
CLI accept exactly the same documents; the notes the CLI prints (AWS-only fields
kept, not acted on) have no place in ECS's answer and are logged instead.
"""

from __future__ import annotations

import logging

from berth import tags as tag_rules
from berth.ecs import shapes
from berth.taskdef import parse_register_document
from berth.v1 import resources_pb2 as pb
from controlplane.ecs.backend import Answer, Backend, Operation, Params, call, operation
from controlplane.ecs.pages import page
from controlplane.ecs.protocol import invalid

log = logging.getLogger(__name__)

# ECS's answer for a task definition it cannot find, whatever the reason.
NOT_FOUND = "ClientException"


def _reference(backend: Backend, value: str) -> str:
    return backend.arns.task_definition_ref(value)


def _with_tags(backend: Backend, td: pb.TaskDefinition, params: Params) -> Answer:
    answer: Answer = {"taskDefinition": shapes.task_definition(backend.arns, td)}
    if "TAGS" in params.get("include", []):
        answer["tags"] = tag_rules.to_ecs(td.tags)
    return answer


async def register(backend: Backend, params: Params) -> Answer:
    td, notes = parse_register_document(params)
    registered = await call(backend.ops.taskdefs.register(td))
    for note in notes:
        log.info("event=ecs_taskdef_note family=%s note=%r", registered.family, note)
    return {
        "taskDefinition": shapes.task_definition(backend.arns, registered),
        "tags": tag_rules.to_ecs(registered.tags),
    }


async def describe(backend: Backend, params: Params) -> Answer:
    ref = _reference(backend, params["taskDefinition"])
    td = await call(backend.ops.taskdefs.resolve(ref, require_active=False), NOT_FOUND)
    return _with_tags(backend, td, params)


async def deregister(backend: Backend, params: Params) -> Answer:
    ref = _reference(backend, params["taskDefinition"])
    if ":" not in ref:
        raise invalid("deregistering needs a revision: give FAMILY:REVISION or the full ARN")
    td = await call(backend.ops.taskdefs.deregister(ref), NOT_FOUND)
    return {"taskDefinition": shapes.task_definition(backend.arns, td)}


_STATUS = {"ACTIVE": pb.ACTIVE, "INACTIVE": pb.INACTIVE}


async def list_definitions(backend: Backend, params: Params) -> Answer:
    status = params.get("status", "ACTIVE")
    if status not in _STATUS:
        raise invalid(f"status must be ACTIVE or INACTIVE, not {status[:40]!r}")
    family = params.get("familyPrefix", "")
    # ECS's familyPrefix is an exact family name despite its name ("lists only that family").
    definitions = await call(backend.ops.taskdefs.all(family))
    chosen = [td for td in definitions if td.status == _STATUS[status]]
    arns = {backend.arns.task_definition(td.family, td.revision): td for td in chosen}

    def position(arn: str) -> str:
        # Family, then revision as a number: stable when revisions come and go between pages.
        td = arns[arn]
        return f"{td.family}\x00{td.revision:010d}"

    return page(
        params,
        list(arns),
        "taskDefinitionArns",
        sort_key=position,
        reverse=params.get("sort", "ASC") == "DESC",
    )


async def list_families(backend: Backend, params: Params) -> Answer:
    status = params.get("status", "ACTIVE")
    if status not in ("ACTIVE", "INACTIVE", "ALL"):
        raise invalid(f"status must be ACTIVE, INACTIVE or ALL, not {status[:40]!r}")
    families = await call(backend.ops.taskdefs.families(status, params.get("familyPrefix", "")))
    return page(params, families, "families")


OPERATIONS: dict[str, Operation] = {
    "RegisterTaskDefinition": operation(
        "deployer",
        register,
        # Every member of ECS's request: the task definition parser judges each field the
        # way `berth taskdef register` does (run, kept as AWS-only, or refused by name).
        supported=(
            "family",
            "taskRoleArn",
            "executionRoleArn",
            "networkMode",
            "containerDefinitions",
            "volumes",
            "placementConstraints",
            "requiresCompatibilities",
            "cpu",
            "memory",
            "tags",
            "pidMode",
            "ipcMode",
            "proxyConfiguration",
            "inferenceAccelerators",
            "ephemeralStorage",
            "runtimePlatform",
            "enableFaultInjection",
            "trustedExecutionConfiguration",
        ),
    ),
    "DescribeTaskDefinition": operation("viewer", describe, supported=("taskDefinition", "include")),
    "DeregisterTaskDefinition": operation("deployer", deregister, supported=("taskDefinition",)),
    "ListTaskDefinitions": operation(
        "viewer", list_definitions, supported=("familyPrefix", "status", "sort", "nextToken", "maxResults")
    ),
    "ListTaskDefinitionFamilies": operation(
        "viewer", list_families, supported=("familyPrefix", "status", "nextToken", "maxResults")
    ),
}
