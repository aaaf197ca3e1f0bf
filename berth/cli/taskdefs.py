"""`berth taskdef ...`: ECS task definitions, registered from ECS JSON."""

from __future__ import annotations

import json

import typer
from rich.text import Text

from berth.cli.client import CliContext, api_errors, fail, read_argument_file
from berth.cli.options import command_group
from berth.cli.output import OutputOption, age, data_console, emit, emit_one, say
from berth.ecs import shapes
from berth.ecs.arns import Arns
from berth.errors import InvalidArgument
from berth.names import protocol_name
from berth.taskdef import load_json, parse_container_definitions, parse_register_document, to_ecs_document
from berth.v1 import operator_pb2 as api
from berth.v1 import resources_pb2 as pb

app = command_group("Task definitions: families of numbered revisions.")


def _request(
    family: str | None, container_definitions: str | None, cli_input_json: str | None
) -> api.RegisterTaskDefinitionRequest:
    if bool(container_definitions) == bool(cli_input_json):
        raise fail("give either --container-definitions or --cli-input-json")
    try:
        if cli_input_json:
            text = read_argument_file(cli_input_json, "--cli-input-json")
            td, notes = parse_register_document(load_json(text, "--cli-input-json"))
            for note in notes:
                say(f"note: {note}", err=True)
            if family:
                td.family = family
        else:
            if not family:
                raise fail("--family is required with --container-definitions")
            text = read_argument_file(container_definitions or "", "--container-definitions")
            notes = []
            td = pb.TaskDefinition(
                family=family,
                container_definitions=parse_container_definitions(
                    load_json(text, "--container-definitions"), notes
                ),
            )
            for note in notes:
                say(f"note: {note}", err=True)
    except InvalidArgument as error:
        raise fail(str(error)) from None
    return api.RegisterTaskDefinitionRequest(
        family=td.family,
        container_definitions=td.container_definitions,
        cpu=td.cpu,
        memory=td.memory,
        network_mode=td.network_mode,
        pid_mode=td.pid_mode,
        ipc_mode=td.ipc_mode,
        aws_only_fields=td.aws_only_fields,
        volumes=td.volumes,
        tags=td.tags,
    )


@app.command("register")
def register(
    ctx: typer.Context,
    family: str = typer.Option(None, "--family", metavar="FAMILY", help="task definition family"),
    container_definitions: str = typer.Option(
        None, "--container-definitions", metavar="JSON", help="ECS containerDefinitions JSON, or file://PATH"
    ),
    cli_input_json: str = typer.Option(
        None,
        "--cli-input-json",
        metavar="JSON",
        help="a whole ECS register-task-definition document, or file://PATH",
    ),
) -> None:
    """Register a new revision of a task definition family."""
    cli: CliContext = ctx.obj
    request = _request(family, container_definitions, cli_input_json)
    with api_errors(cli):
        td = cli.stub.RegisterTaskDefinition(request)
    say(f"registered {td.family}:{td.revision}")


def _containers(td: pb.TaskDefinition) -> str:
    return ",".join(c.name for c in td.container_definitions)


@app.command("list")
def list_(
    ctx: typer.Context,
    family: str = typer.Option("", "--family", metavar="FAMILY", help="only this family (default: all)"),
    output: str = OutputOption,
) -> None:
    """List task definitions."""
    cli: CliContext = ctx.obj
    with api_errors(cli):
        items = cli.stub.ListTaskDefinitions(api.ListTaskDefinitionsRequest(family=family)).task_definitions
        arns = cli.arns() if output != "table" else Arns()
    emit(
        output,
        items,
        [
            ("TASK DEFINITION", lambda t: f"{t.family}:{t.revision}"),
            ("STATUS", lambda t: pb.TaskDefinitionStatus.Name(t.status)),
            ("CONTAINERS", _containers),
            ("AGE", lambda t: age(t.registered_at)),
        ],
        "taskDefinitions",
        lambda td: shapes.task_definition(arns, td),
    )


@app.command("describe")
def describe(
    ctx: typer.Context,
    task_definition: str = typer.Argument(..., metavar="TASK_DEFINITION", help="FAMILY or FAMILY:REVISION"),
    output: str = OutputOption,
) -> None:
    """Show one task definition (the newest active revision if none is given).

    -o json and -o yaml print ECS's TaskDefinition object, which `register --cli-input-json`
    takes back (its read-only fields ignored, with a note)."""
    cli: CliContext = ctx.obj
    with api_errors(cli):
        td = cli.stub.DescribeTaskDefinition(
            api.DescribeTaskDefinitionRequest(task_definition=task_definition)
        )
        arns = cli.arns() if output != "table" else Arns()

    def show() -> None:
        console = data_console()
        document = to_ecs_document(td)
        console.print(
            Text.assemble(
                (f"{td.family}:{td.revision}", "bold"),
                f"  {pb.TaskDefinitionStatus.Name(td.status)}",
                f"  networkMode={document.get('networkMode', 'bridge')}",
            )
        )
        for c in td.container_definitions:
            mappings = ", ".join(
                f"{p.host_port or 'any'}->{p.container_port}/{protocol_name(p.protocol)}"
                for p in c.port_mappings
            )
            console.print(
                f"  container {c.name}: image={c.image} cpu={c.cpu} memory={c.memory or '-'} "
                f"memoryReservation={c.memory_reservation or '-'} essential={str(c.essential).lower()} "
                f"ports=[{mappings}]",
            )
            if c.HasField("health_check"):
                check = c.health_check
                console.print(
                    f"    healthCheck: {json.dumps(list(check.command))} interval={check.interval}s "
                    f"timeout={check.timeout}s retries={check.retries} startPeriod={check.start_period}s",
                )
            for reference in c.secrets:
                # A reference only: the value never leaves the control plane except to the task's node.
                console.print(f"    secret {reference.name} from {reference.value_from}")

    emit_one(output, td, show, lambda t: shapes.task_definition(arns, t))


@app.command("deregister")
def deregister(
    ctx: typer.Context,
    task_definition: str = typer.Argument(..., metavar="TASK_DEFINITION", help="FAMILY:REVISION"),
) -> None:
    """Mark a revision INACTIVE: running services keep it, new uses are refused."""
    cli: CliContext = ctx.obj
    with api_errors(cli):
        td = cli.stub.DeregisterTaskDefinition(
            api.DescribeTaskDefinitionRequest(task_definition=task_definition)
        )
    say(f"deregistered {td.family}:{td.revision}")
