"""`berth node ...`"""

from __future__ import annotations

import typer

from berth.api_warnings import warnings_in
from berth.cli.client import CliContext, api_errors
from berth.cli.options import command_group
from berth.cli.output import OutputOption, emit, say
from berth.ecs import shapes
from berth.ecs.arns import Arns
from berth.names import node_cluster
from berth.v1 import operator_pb2 as api
from berth.v1 import resources_pb2 as pb

app = command_group("Nodes: the hosts agents run on.")


def _status(summary: api.NodeSummary) -> str:
    status = pb.NodeStatus.Name(summary.node.status)
    return status if summary.connected or summary.node.status == pb.DOWN else f"{status} (disconnected)"


@app.command("list")
def list_(
    ctx: typer.Context,
    cluster: str | None = typer.Option(
        None, "--cluster", "-c", metavar="CLUSTER", help="only the nodes of this cluster (default: all)"
    ),
    output: str = OutputOption,
) -> None:
    """List nodes with their cluster, status and resources used and free (-o json|yaml: ECS's
    ContainerInstance objects, under "containerInstances")."""
    cli: CliContext = ctx.obj
    with api_errors(cli):
        response, call = cli.stub.ListNodes.with_call(api.ListNodesRequest())
        listed = response.nodes
        arns = cli.arns() if output != "table" else Arns()
    for warning in warnings_in(call.trailing_metadata()):
        say(f"warning: {warning}", err=True)
    nodes = [s for s in listed if cluster is None or node_cluster(s.node) == cluster]
    emit(
        output,
        nodes,
        [
            ("ID", lambda s: s.node.id),
            ("NAME", lambda s: s.node.name),
            ("CLUSTER", lambda s: node_cluster(s.node)),
            ("ADDRESS", lambda s: s.node.address),
            ("STATUS", _status),
            ("TASKS", lambda s: str(s.running_tasks)),
            ("CPU USED/FREE", lambda s: f"{s.cpu_reserved}/{s.node.cpu_units - s.cpu_reserved}"),
            ("MEM MiB USED/FREE", lambda s: f"{s.memory_reserved}/{s.node.memory_mib - s.memory_reserved}"),
            ("CPU%", lambda s: f"{s.metrics.cpu_percent:.0f}" if s.HasField("metrics") else "-"),
            (
                "ATTRIBUTES",
                lambda s: ",".join(f"{k}={v}" for k, v in sorted(s.node.attributes.items())) or "-",
            ),
        ],
        "containerInstances",
        lambda s: shapes.container_instance(arns, s),
    )


def _set_status(ctx: typer.Context, node: str, status: pb.NodeStatus.ValueType) -> pb.Node:
    cli: CliContext = ctx.obj
    with api_errors(cli):
        updated: pb.Node = cli.stub.UpdateNodeStatus(api.UpdateNodeStatusRequest(node=node, status=status))
    return updated


@app.command("drain")
def drain(
    ctx: typer.Context, node: str = typer.Argument(..., metavar="NODE", help="node id or name")
) -> None:
    """Move service tasks off a node: replacements start elsewhere first, then its copies stop."""
    updated = _set_status(ctx, node, pb.DRAINING)
    say(f"node {updated.name} ({updated.id}) is DRAINING")


@app.command("activate")
def activate(
    ctx: typer.Context, node: str = typer.Argument(..., metavar="NODE", help="node id or name")
) -> None:
    """Let a drained node take tasks again."""
    updated = _set_status(ctx, node, pb.READY)
    say(f"node {updated.name} ({updated.id}) is READY")


@app.command("remove")
def remove(
    ctx: typer.Context,
    node: str = typer.Argument(..., metavar="NODE", help="node id or name"),
    force: bool = typer.Option(
        False, "--force", help="remove even with tasks there (recorded as lost) or its agent connected"
    ),
) -> None:
    """Forget a node: refused while tasks run there or its agent is connected, unless --force."""
    cli: CliContext = ctx.obj
    with api_errors(cli):
        removed: pb.Node = cli.stub.RemoveNode(api.RemoveNodeRequest(node=node, force=force))
    say(f"node {removed.name} ({removed.id}) removed")
