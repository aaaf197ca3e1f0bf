"""`berth task ...`: list, inspect, run and stop tasks."""

from __future__ import annotations

import time

import grpc
import typer

from berth.cli import placement
from berth.cli.client import CliContext, api_errors, fail, node_label, node_names
from berth.cli.options import ClusterOption, TagOption, command_group, tags
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
    utc_time,
)
from berth.cli.placement import PlacementConstraintsOption, PlacementStrategyOption
from berth.ecs import shapes
from berth.ecs.arns import Arns
from berth.names import protocol_name
from berth.tasklist import all_tasks
from berth.v1 import operator_pb2 as api
from berth.v1 import resources_pb2 as pb

# The control plane's largest page (controlplane.task_pages.MAX_PAGE_SIZE): the CLI does not import it.
MAX_PAGE_SIZE = 1000

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


_LAST_STATUSES = {"PENDING": pb.PENDING, "RUNNING": pb.RUNNING, "STOPPED": pb.STOPPED}
_DESIRED_STATUSES = {"RUNNING": pb.DESIRED_RUNNING, "STOPPED": pb.DESIRED_STOPPED}


def _last_status(value: str) -> str:
    if value and value.upper() not in _LAST_STATUSES:
        raise typer.BadParameter("use PENDING, RUNNING or STOPPED")
    return value.upper()


def _desired_status(value: str) -> str:
    if value and value.upper() not in _DESIRED_STATUSES:
        raise typer.BadParameter("use RUNNING or STOPPED")
    return value.upper()


def _node_id(names: dict[str, str], node: str) -> str:
    """The id of the node given by id or name; an unknown one is passed on as an id
    (a node removed since still has its stopped tasks), for the server to judge."""
    if node in names:
        return node
    ids = [node_id for node_id, name in names.items() if name == node]
    if len(ids) > 1:
        raise fail(f"node name {node!r} is ambiguous: give the node id ({', '.join(sorted(ids))})")
    return ids[0] if ids else node


@app.command("list")
def list_(
    ctx: typer.Context,
    service: str = typer.Option("", "--service", metavar="SERVICE", help="only this service's tasks"),
    node: str = typer.Option("", "--node", metavar="NODE", help="only tasks on this node (id or name)"),
    family: str = typer.Option(
        "", "--family", metavar="FAMILY[:REVISION]", help="only tasks of this task definition"
    ),
    status: str = typer.Option(
        "", "--status", metavar="STATUS", callback=_last_status, help="only PENDING, RUNNING or STOPPED tasks"
    ),
    desired: str = typer.Option(
        "",
        "--desired",
        metavar="STATUS",
        callback=_desired_status,
        help="only tasks desired RUNNING or STOPPED",
    ),
    page_size: int = typer.Option(
        0,
        "--page-size",
        metavar="N",
        min=0,
        max=MAX_PAGE_SIZE,
        help="tasks per page (default 100; with --all 1000)",
    ),
    page_token: str = typer.Option(
        "", "--page-token", metavar="TOKEN", help="the next page of a listing (same filters), as printed"
    ),
    all_pages: bool = typer.Option(False, "--all", help="every page, from --page-token (or the first) on"),
    cluster: str = ClusterOption,
    output: str = OutputOption,
) -> None:
    """List tasks, oldest first, stopped ones included (with exit code and stop reason).

    The control plane answers a page at a time (100 tasks unless --page-size
    says otherwise); when more tasks match, a line on stderr gives the token of
    the next page. --all follows every page.
    """
    cli: CliContext = ctx.obj
    with api_errors(cli):
        names = node_names(cli) if output == "table" or node else {}
        request = api.ListTasksRequest(
            cluster=cluster,
            service=service,
            include_stopped=True,
            page_size=page_size or (MAX_PAGE_SIZE if all_pages else 0),
            page_token=page_token,
            node=_node_id(names, node) if node else "",
            family=family,
            desired_status=_DESIRED_STATUSES.get(desired, pb.DESIRED_STATUS_UNSPECIFIED),
            last_status=_LAST_STATUSES.get(status, pb.TASK_STATUS_UNSPECIFIED),
        )
        if all_pages:
            tasks = all_tasks(cli.stub, request)
            next_token, total = "", len(tasks)
        else:
            page = cli.stub.ListTasks(request)
            tasks, next_token, total = list(page.tasks), page.next_page_token, page.total
        arns = cli.arns() if output != "table" else Arns()
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
        lambda t: shapes.task(arns, t),
    )
    if next_token:
        # On stderr, so that -o json|yaml stays one document.
        say(
            f"{len(tasks)} of {total} tasks shown; next page: --page-token {next_token} "
            "(with the same filters), or --all for every page",
            err=True,
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
        arns = cli.arns() if output != "table" else Arns()

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
        if task.health_history:
            console.print("health history (oldest first):")
            for change in task.health_history:
                output = f"  {change.output}" if change.output else ""
                console.print(
                    f"  {utc_time(change.at)}  {change.container}  {health_name(change.status)}{output}"
                )  # the console escapes control characters
        if task.HasField("kept_output"):
            kept = task.kept_output
            older = "; older output was not kept" if kept.truncated else ""
            console.print(f"last output of container {kept.container or '-'} (kept when it stopped{older}):")
            for line in kept.lines:
                console.print(f"  | {line}")  # the console escapes control characters

    emit_one(output, task, show, lambda t: shapes.task(arns, t))


@app.command("run")
def run(
    ctx: typer.Context,
    task_definition: str = typer.Option(
        ..., "--task-definition", metavar="TASK_DEFINITION", help="FAMILY or FAMILY:REVISION"
    ),
    cluster: str = ClusterOption,
    placement_strategy: list[str] = PlacementStrategyOption,
    placement_constraints: list[str] = PlacementConstraintsOption,
    tag: list[str] = TagOption,
    wait: bool = typer.Option(False, "--wait", help="wait until the task stops and exit with its exit code"),
    timeout: float = typer.Option(
        0.0, "--timeout", metavar="SECONDS", min=0, help="with --wait: give up after this long; 0: never"
    ),
) -> None:
    """Run a one-off task (not restarted when it exits).

    With --wait: print the task's id, wait until it is STOPPED, print its stop
    code and reason, and exit with its essential container's exit code; exit 1
    when it failed to start, stopped without an exit code, or --timeout passed.
    """
    cli: CliContext = ctx.obj
    if timeout and not wait:
        raise fail("--timeout applies only with --wait")
    request = api.RunTaskRequest(
        cluster=cluster,
        task_definition=task_definition,
        placement_strategy=placement.strategies(placement_strategy),
        placement_constraints=placement.constraints(placement_constraints),
        tags=tags(tag),
    )
    with api_errors(cli):
        task = cli.stub.RunTask(request)
    say(task.id)
    if wait:
        raise typer.Exit(code=_outcome(_wait_stopped(cli, task, timeout or None)))


# Seconds between looks at a waited-for task, and how long the control plane
# may be unreachable (a restart) before `--wait` gives up.
WAIT_POLL = 0.5
WAIT_UNREACHABLE = 60.0
_UNREACHABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def _look(cli: CliContext, task: pb.Task) -> pb.Task | None:
    """The task as stored now; None while the control plane is unreachable (restarting, say)."""
    with api_errors(cli):
        try:
            return cli.stub.DescribeTask(api.TaskRef(cluster=task.cluster, id=task.id), timeout=10)
        except grpc.RpcError as error:
            if error.code() not in _UNREACHABLE:  # type: ignore[attr-defined]
                raise
    return None


def _wait_stopped(cli: CliContext, task: pb.Task, timeout: float | None) -> pb.Task:
    """The task once it is STOPPED; exits 1 when `timeout` passes first."""
    started = time.monotonic()
    reachable_at = started
    told_pending = ""
    while True:
        seen = _look(cli, task)
        now = time.monotonic()
        if seen is not None:
            task, reachable_at = seen, now
            if task.last_status == pb.STOPPED:
                return task
            if task.pending_reason and task.pending_reason != told_pending:
                told_pending = task.pending_reason
                say(f"task {task.id} is waiting to be placed: {task.pending_reason}", err=True)
        elif now - reachable_at > WAIT_UNREACHABLE:
            raise fail(f"the control plane at {cli.server} stayed unreachable for {WAIT_UNREACHABLE:g}s")
        if timeout is not None and now - started >= timeout:
            raise fail(
                f"task {task.id} is still {status_name(task.last_status)} after {timeout:g}s; "
                f"it was not stopped (berth task stop {task.id} stops it)"
            )
        pause = WAIT_POLL if timeout is None else min(WAIT_POLL, timeout - (now - started))
        time.sleep(max(0.0, pause))


def _outcome(task: pb.Task) -> int:
    """Print the stopped task's one-line outcome; the process exit code it means."""
    code = STOP_CODES.get(task.stop_code, "stopped")
    reason = f": {task.stopped_reason}" if task.stopped_reason else ""
    if task.stop_code == pb.TASK_FAILED_TO_START:
        say(f"error: task {task.id} failed to start (TaskFailedToStart{reason})", err=True)
        return 1
    if not task.has_exit_code:
        say(f"error: task {task.id} stopped without an exit code ({code}{reason})", err=True)
        return 1
    say(f"task {task.id} stopped: {code}{reason}; exit code {task.exit_code}")
    # A process can only exit 0-255: anything else that is not 0 is a failure, never 0 by wrapping.
    return task.exit_code if 0 <= task.exit_code <= 255 else 1


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
