"""`berth task ...`: list, inspect, run and stop tasks."""

from __future__ import annotations

import typer

from berth.cli import placement
from berth.cli.client import CliContext, api_errors, node_label, node_names
from berth.cli.options import ClusterOption, command_group
from berth.cli.output import (
    OutputOption,
    age,
    data_console,
    emit,
    emit_one,
    exit_code,
    ports,
    say,
    status_name,
)
from berth.cli.placement import PlacementConstraintsOption, PlacementStrategyOption
from berth.names import protocol_name
from berth.v1 import operator_pb2 as api
from berth.v1 import resources_pb2 as pb

app = command_group("Tasks: running (or stopped) copies of a task definition.")

STOP_CODES = {
    pb.TASK_FAILED_TO_START: "TaskFailedToStart",
    pb.ESSENTIAL_CONTAINER_EXITED: "EssentialContainerExited",
    pb.USER_INITIATED: "UserInitiated",
    pb.SERVICE_SCHEDULER_INITIATED: "ServiceSchedulerInitiated",
    pb.NODE_LOST: "NodeLost",
}


def _desired(task: pb.Task) -> str:
    return pb.DesiredStatus.Name(task.desired_status).removeprefix("DESIRED_")


def _node(names: dict[str, str], node_id: str) -> str:
    name = node_label(names, node_id)
    return f"{name} ({node_id})" if name != node_id else name


def health_name(status: pb.HealthStatus.ValueType) -> str:
    """ECS's healthStatus words: UNKNOWN, HEALTHY, UNHEALTHY."""
    return pb.HealthStatus.Name(status).removeprefix("HEALTH_")


def _health(task: pb.Task) -> str:
    if not task.health_checked and task.health_status == pb.HEALTH_UNKNOWN:
        return "-"  # no health check
    return health_name(task.health_status)


def _reason(task: pb.Task) -> str:
    if task.last_status == pb.PENDING and task.pending_reason:
        return task.pending_reason
    return task.stopped_reason or "-"


@app.command("list")
def list_(
    ctx: typer.Context,
    service: str = typer.Option("", "--service", metavar="SERVICE", help="only this service's tasks"),
    cluster: str = ClusterOption,
    output: str = OutputOption,
) -> None:
    """List tasks, stopped ones included (with exit code and stop reason)."""
    cli: CliContext = ctx.obj
    with api_errors(cli):
        tasks = cli.stub.ListTasks(
            api.ListTasksRequest(cluster=cluster, service=service, include_stopped=True)
        ).tasks
        names = node_names(cli) if output == "table" else {}
    emit(
        output,
        tasks,
        [
            ("ID", lambda t: t.id[:12]),
            ("SERVICE", lambda t: t.service or "-"),
            ("TASK DEFINITION", lambda t: t.task_definition),
            ("DESIRED", _desired),
            ("LAST", lambda t: status_name(t.last_status)),
            ("HEALTH", _health),
            ("NODE", lambda t: node_label(names, t.node_id)),
            ("PORTS", ports),
            ("EXIT", exit_code),
            ("REASON", _reason),
            ("AGE", lambda t: age(t.created_at)),
        ],
        "tasks",
    )


@app.command("describe")
def describe(
    ctx: typer.Context,
    task_id: str = typer.Argument(..., metavar="TASK_ID", help="task id or a unique prefix"),
    cluster: str = ClusterOption,
    output: str = OutputOption,
) -> None:
    """Show one task in detail."""
    cli: CliContext = ctx.obj
    with api_errors(cli):
        task = cli.stub.DescribeTask(api.TaskRef(cluster=cluster, id=task_id))
        names = node_names(cli) if output == "table" and task.node_id else {}

    def show() -> None:
        console = data_console()
        lines = [
            f"task:             {task.id}",
            f"cluster:          {task.cluster}",
            f"service:          {task.service or '-'}",
            f"task definition:  {task.task_definition}",
            f"desired status:   {_desired(task)}",
            f"last status:      {status_name(task.last_status)}",
            f"health:           {_health(task)}",
            f"node:             {_node(names, task.node_id)}",
            f"ports:            {ports(task)}",
            f"exit code:        {exit_code(task)}",
            f"stop code:        {STOP_CODES.get(task.stop_code, '-')}",
            f"reason:           {_reason(task)}",
            f"created:          {age(task.created_at)} ago",
        ]
        for line in lines:
            console.print(line)
        for c in task.containers:
            code = str(c.exit_code) if c.has_exit_code else "-"
            console.print(
                f"  container {c.name}: {status_name(c.last_status)} exit={code} "
                f"health={health_name(c.health_status)} id={c.docker_id[:12]} {c.reason}"
                + (f" (last check: {c.health_output})" if c.health_output else ""),
            )
        for b in task.network_bindings:
            console.print(
                f"  binding {b.container_name}: {b.bind_ip or '0.0.0.0'}:{b.host_port} -> "
                f"{b.container_port}/{protocol_name(b.protocol)}",
            )

    emit_one(output, task, show)


@app.command("run")
def run(
    ctx: typer.Context,
    task_definition: str = typer.Option(
        ..., "--task-definition", metavar="TASK_DEFINITION", help="FAMILY or FAMILY:REVISION"
    ),
    cluster: str = ClusterOption,
    placement_strategy: list[str] = PlacementStrategyOption,
    placement_constraints: list[str] = PlacementConstraintsOption,
) -> None:
    """Run a one-off task (not restarted when it exits)."""
    cli: CliContext = ctx.obj
    request = api.RunTaskRequest(
        cluster=cluster,
        task_definition=task_definition,
        placement_strategy=placement.strategies(placement_strategy),
        placement_constraints=placement.constraints(placement_constraints),
    )
    with api_errors(cli):
        task = cli.stub.RunTask(request)
    say(task.id)


@app.command("stop")
def stop(
    ctx: typer.Context,
    task_id: str = typer.Argument(..., metavar="TASK_ID", help="task id or a unique prefix"),
    reason: str = typer.Option("", "--reason", metavar="TEXT", help="why, shown as the stop reason"),
    cluster: str = ClusterOption,
) -> None:
    """Stop a task (SIGTERM, then SIGKILL after its stop timeout)."""
    cli: CliContext = ctx.obj
    with api_errors(cli):
        task = cli.stub.StopTask(api.StopTaskRequest(cluster=cluster, id=task_id, reason=reason))
    say(f"task {task.id} is stopping")
