"""`berth top`: nodes' and tasks' CPU and memory now, and each service's utilization.

Figures come from the control plane's in-memory window (controlplane/usage.py):
a task's CPU in CPU units (1024 = one core) and as a percent of its CPU
reservation, its memory in MiB and as a percent of its memory reservation.
`--watch` redraws in place until Ctrl-C.
"""

from __future__ import annotations

import json
import sys
import time

import typer
import yaml
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from berth.cli.client import CliContext, api_errors, fail
from berth.cli.options import ClusterOption
from berth.cli.output import OutputOption, data_console, printable, to_data
from berth.v1 import operator_pb2 as api
from berth.v1 import resources_pb2 as pb

MIB = 1024 * 1024


def _percent(message: pb.TaskUsageSummary | pb.ServiceUsage, field: str) -> str:
    return f"{getattr(message, field):.0f}%" if message.HasField(field) else "-"  # type: ignore[arg-type]


def utilization_line(usage: pb.ServiceUsage) -> str:
    """`cpu 45% memory 12% (3 tasks, 1 warming up, 1 without figures)`, or why there is none."""
    if not usage.counted:
        return "no recent figures" + (
            f" ({usage.missing} running tasks without one)" if usage.missing else ""
        )
    parts = [f"{usage.counted} tasks"]
    if usage.warming:
        parts.append(f"{usage.warming} warming up")
    if usage.missing:
        parts.append(f"{usage.missing} without figures")
    cpu, memory = _percent(usage, "cpu_percent"), _percent(usage, "memory_percent")
    return f"cpu {cpu} memory {memory} ({', '.join(parts)})"


def _table(*columns: str) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for title in columns:
        table.add_column(title, overflow="fold")
    return table


def _row(table: Table, *cells: str) -> None:
    # Text, not str: rich would read a str cell as markup.
    table.add_row(*(Text(printable(cell)) for cell in cells))


def render(usage: api.GetUsageResponse) -> Group:
    """The tables `berth top` prints: nodes, tasks (one row per container), services."""
    nodes = _table("NODE", "CPU%", "MEMORY USED/TOTAL MiB", "TASKS")
    for node in usage.nodes:
        seen = node.HasField("sampled_at")
        _row(
            nodes,
            node.name or node.node_id,
            f"{node.cpu_percent:.0f}%" if seen else "-",
            f"{node.memory_used_bytes // MIB}/{node.memory_total_bytes // MIB}" if seen else "-",
            str(node.tasks),
        )
    names = {node.node_id: node.name for node in usage.nodes}
    tasks = _table("TASK", "SERVICE", "NODE", "CONTAINER", "CPU%", "CPU UNITS", "MEMORY MiB", "MEM%")
    for task in usage.tasks:
        service = task.service or "-"
        _row(
            tasks,
            task.task_id[:12],
            service,
            names.get(task.node_id, task.node_id),
            "(task)" if len(task.containers) > 1 else (task.containers[0].name if task.containers else "-"),
            _percent(task, "cpu_percent"),
            f"{task.cpu_units:.0f}",
            f"{task.memory_bytes / MIB:.1f}",
            _percent(task, "memory_percent"),
        )
        if len(task.containers) > 1:
            for container in task.containers:
                _row(
                    tasks,
                    "",
                    "",
                    "",
                    container.name,
                    "",
                    f"{container.cpu_units:.0f}",
                    f"{container.memory_bytes / MIB:.1f}",
                    "",
                )
    services = _table("SERVICE", "CLUSTER", "UTILIZATION")
    for service_usage in usage.services:
        _row(services, service_usage.service, service_usage.cluster, utilization_line(service_usage))
    return Group(nodes, Text(""), tasks, Text(""), services)


def service_utilization(cli: CliContext, cluster: str, service: str) -> str | None:
    """The utilization line of one service for `berth service describe`; None when unavailable."""
    try:
        usage = cli.stub.GetUsage(api.GetUsageRequest(cluster=cluster, service=service), timeout=5)
    except Exception:  # an older control plane, or a transient error: describe shows the rest
        return None
    return utilization_line(usage.services[0]) if usage.services else "no running tasks"


def top(
    ctx: typer.Context,
    cluster: str = ClusterOption,
    service: str = typer.Option("", "--service", "-s", metavar="SERVICE", help="only this service's tasks"),
    watch: bool = typer.Option(False, "--watch", "-w", help="redraw in place until Ctrl-C"),
    interval: float = typer.Option(
        2.0, "--interval", metavar="SECONDS", min=1.0, max=60.0, help="seconds between redraws with --watch"
    ),
    output: str = OutputOption,
) -> None:
    """Show nodes' and tasks' CPU and memory, and each service's utilization of its reservations."""
    cli: CliContext = ctx.obj
    request = api.GetUsageRequest(cluster=cluster, service=service)
    if watch and output != "table":
        raise fail("--watch redraws a table: leave out -o, or drop --watch for one JSON or YAML answer")
    with api_errors(cli):
        usage = cli.stub.GetUsage(request)
    if output == "json":
        print(json.dumps(to_data(usage), indent=2))
        return
    if output == "yaml":
        print(yaml.safe_dump(to_data(usage), sort_keys=False), end="")
        return
    if not watch:
        data_console().print(*render(usage).renderables)  # type: ignore[arg-type]
        return
    console = Console(file=sys.stdout, markup=False, emoji=False, highlight=False)
    try:
        with Live(render(usage), console=console, refresh_per_second=4) as live:
            while True:
                time.sleep(interval)
                with api_errors(cli):
                    usage = cli.stub.GetUsage(request)
                live.update(render(usage))
    except KeyboardInterrupt:
        return
