"""`berth service recommend`: right-size a service's containers from their measured usage.

Shows, per container of the service's PRIMARY task definition, what it
reserves and what its usage suggests (controlplane/rightsizing.py). With
--apply, registers the family's next revision with those reservations
(through RegisterTaskDefinition, so every validation runs) and deploys it
like `berth service update --task-definition FAMILY:REVISION`.
"""

from __future__ import annotations

from collections.abc import Sequence

import typer

from berth.cli.client import CliContext, api_errors, fail
from berth.cli.options import ClusterOption
from berth.cli.output import Column, OutputOption, emit, emit_one, say
from berth.v1 import operator_pb2 as api
from berth.v1 import resources_pb2 as pb


def _change(current: int, recommended: int | None) -> str:
    if recommended is None:
        return "-"
    if not current:
        return "(none reserved)"
    return f"{(recommended - current) / current * 100:+.0f}%"


def _recommended(row: api.ContainerRecommendation, field: str) -> int | None:
    return getattr(row, field) if row.HasField(field) else None  # type: ignore[arg-type]


COLUMNS: Sequence[Column] = (
    ("CONTAINER", lambda r: r.container),
    ("CPU", lambda r: str(r.current_cpu or "-")),
    ("CPU NEW", lambda r: str(_recommended(r, "recommended_cpu") or "-")),
    ("CHANGE", lambda r: _change(r.current_cpu, _recommended(r, "recommended_cpu"))),
    ("MEMORY MiB", lambda r: str(r.current_memory_mib or "-")),
    ("MEMORY NEW", lambda r: str(_recommended(r, "recommended_memory_mib") or "-")),
    ("CHANGE", lambda r: _change(r.current_memory_mib, _recommended(r, "recommended_memory_mib"))),
    ("SAMPLES", lambda r: f"{r.samples} over {r.window_seconds:.0f}s"),
    ("NOTE", lambda r: r.reason),
)


def resized(
    definition: pb.TaskDefinition, recommendations: Sequence[api.ContainerRecommendation]
) -> tuple[api.RegisterTaskDefinitionRequest, list[str]]:
    """The registration of `definition` with the recommended cpu and memoryReservation, and notes.

    A hard `memory` limit stays when it is still at least the new reservation;
    otherwise it is raised to the reservation (a note says so). Refuses
    (ValueError) when a container has no recommendation.
    """
    by_name = {r.container: r for r in recommendations}
    notes: list[str] = []
    containers: list[pb.ContainerDefinition] = []
    for original in definition.container_definitions:
        row = by_name.get(original.name)
        if row is None or not row.HasField("recommended_cpu") or not row.HasField("recommended_memory_mib"):
            why = row.reason if row is not None and row.reason else "no recommendation"
            raise ValueError(f"container {original.name!r}: {why}")
        container = pb.ContainerDefinition()
        container.CopyFrom(original)
        container.cpu = row.recommended_cpu
        container.memory_reservation = row.recommended_memory_mib
        if container.memory and container.memory < container.memory_reservation:
            notes.append(
                f"container {original.name!r}: hard memory limit raised from {container.memory} MiB "
                f"to the new reservation {container.memory_reservation} MiB"
            )
            container.memory = container.memory_reservation
        containers.append(container)
    request = api.RegisterTaskDefinitionRequest(
        family=definition.family,
        container_definitions=containers,
        cpu=definition.cpu,
        memory=definition.memory,
        network_mode=definition.network_mode,
        pid_mode=definition.pid_mode,
        ipc_mode=definition.ipc_mode,
        aws_only_fields=definition.aws_only_fields,
        volumes=definition.volumes,
    )
    return request, notes


def recommend(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="NAME", help="service name"),
    apply: bool = typer.Option(
        False, "--apply", help="register a revision with the recommended reservations and deploy it"
    ),
    cluster: str = ClusterOption,
    output: str = OutputOption,
) -> None:
    """Recommend CPU and memory reservations for a service's containers from their measured usage:
    CPU = p90 + 15 % (multiple of 8 units, at least 8), memory = p99 + 20 % (MiB, at least 6).
    Needs at least 10 samples over 30 s of the service's running tasks."""
    cli: CliContext = ctx.obj
    with api_errors(cli):
        response = cli.stub.RecommendResources(api.RecommendResourcesRequest(cluster=cluster, service=name))

    def table() -> None:
        say(f"task definition {response.task_definition}")
        emit("table", list(response.containers), COLUMNS, "containers")

    emit_one(output, response, table)
    if not apply:
        return
    with api_errors(cli):
        current = cli.stub.DescribeTaskDefinition(
            api.DescribeTaskDefinitionRequest(task_definition=response.task_definition)
        )
    try:
        request, notes = resized(current, response.containers)
    except ValueError as error:
        raise fail(f"cannot apply: {error}") from None
    for note in notes:
        say(note, err=True)
    with api_errors(cli):
        registered = cli.stub.RegisterTaskDefinition(request)
        reference = f"{registered.family}:{registered.revision}"
        say(f"registered {reference}", err=True)
        cli.stub.UpdateService(
            api.UpdateServiceRequest(cluster=cluster, name=name, task_definition=reference)
        )
    say(f"service {name}: deploying {reference}", err=True)
