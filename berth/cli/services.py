"""`berth service ...`: keep N copies of a task definition running."""

from __future__ import annotations

import re
import time

import typer

from berth import deployment_defaults
from berth.cli import autoscale, deployments, placement, recommend, rollout, rollout_watch, top
from berth.cli.client import CliContext, api_errors, fail, node_label, node_names
from berth.cli.deployments import (
    CircuitBreakerOption,
    DeregistrationDelayOption,
    MaxPercentOption,
    MinHealthyOption,
    RebalanceOption,
    RollbackOption,
)
from berth.cli.options import ClusterOption, TagOption, command_group, tags
from berth.cli.output import OutputOption, age, data_console, emit, emit_one, say, utc_time
from berth.cli.placement import PlacementConstraintsOption, PlacementStrategyOption
from berth.ecs import shapes
from berth.ecs.arns import Arns
from berth.names import protocol_name, shown
from berth.v1 import operator_pb2 as api
from berth.v1 import resources_pb2 as pb

_PORT_NAME = re.compile(r"[a-z0-9_][a-z0-9_-]{0,63}")

app = command_group("Services: a desired count of tasks, kept running.")


def _split_protocol(text: str) -> tuple[str, pb.TransportProtocol.ValueType]:
    if text.endswith("/udp"):
        return text[: -len("/udp")], pb.UDP
    return text.removesuffix("/tcp"), pb.TCP


def _port_number(text: str) -> int | None:
    """A port 1-65535 written in ASCII digits, else None ("²".isdigit() is true; int("²") raises)."""
    if not (0 < len(text) <= 5 and text.isascii() and text.isdigit()):
        return None
    number = int(text)
    return number if 1 <= number <= 65535 else None


def _service_port(text: str) -> pb.ServicePort:
    """80:8080, 80:http or 53:53/udp (a bare 80 means 80:80)."""
    body, protocol = _split_protocol(text)
    service_port, _, target = body.partition(":")
    target = target or service_port
    port = _port_number(service_port)
    if port is None:
        raise fail(
            f"--port {shown(text)} is invalid: write SERVICE_PORT:CONTAINER_PORT_OR_NAME "
            "with ports 1-65535, e.g. 80:http"
        )
    if target.isascii() and target.isdigit():
        container_port = _port_number(target)
        if container_port is None:
            raise fail(f"--port {shown(text)} is invalid: the container port must be 1-65535")
        return pb.ServicePort(port=port, container_port=container_port, protocol=protocol)
    if not _PORT_NAME.fullmatch(target):
        raise fail(
            f"--port {shown(text)} is invalid: the container port is a number 1-65535 or a "
            "port mapping name (lowercase letters, digits, '_' or '-')"
        )
    return pb.ServicePort(port=port, name=target, protocol=protocol)


def _count(value: int) -> int:
    # The server enforces the limit; this only keeps the number inside the protocol's int64.
    if not -(2**63) <= value < 2**63:
        raise fail(f"--desired-count {value} is out of range")
    return value


@app.command("create")
def create(
    ctx: typer.Context,
    name: str = typer.Option(..., "--name", metavar="NAME", help="service name (a DNS label)"),
    task_definition: str = typer.Option(
        ..., "--task-definition", metavar="TASK_DEFINITION", help="FAMILY or FAMILY:REVISION"
    ),
    desired_count: int = typer.Option(
        1, "--desired-count", metavar="COUNT", help="how many tasks to keep running"
    ),
    cluster: str = ClusterOption,
    placement_strategy: list[str] = PlacementStrategyOption,
    placement_constraints: list[str] = PlacementConstraintsOption,
    port: list[str] = typer.Option(
        None,
        "--port",
        metavar="PORT",
        help="SERVICE_PORT:CONTAINER_PORT_OR_NAME[/udp], repeatable; e.g. 80:http",
    ),
    min_healthy_percent: int | None = MinHealthyOption,
    max_percent: int | None = MaxPercentOption,
    circuit_breaker: bool | None = CircuitBreakerOption,
    rollback: bool | None = RollbackOption,
    deregistration_delay: int | None = DeregistrationDelayOption,
    rebalance: bool | None = RebalanceOption,
    tag: list[str] = TagOption,
) -> None:
    """Create a service; with --port it gets a virtual IP and a DNS name.

    Deployment options left out take the defaults: min healthy 100%, max 200%,
    circuit breaker and rollback on, deregistration delay 5 s, rebalance on.
    """
    cli: CliContext = ctx.obj
    request = api.CreateServiceRequest(
        cluster=cluster,
        name=name,
        task_definition=task_definition,
        desired_count=_count(desired_count),
        placement_strategy=placement.strategies(placement_strategy),
        placement_constraints=placement.constraints(placement_constraints),
        ports=[_service_port(p) for p in port or []],
        deployment=deployments.deployment_options(
            min_healthy_percent=min_healthy_percent,
            max_percent=max_percent,
            circuit_breaker=circuit_breaker,
            rollback=rollback,
            deregistration_delay=deregistration_delay,
            rebalance=rebalance,
        ),
        tags=tags(tag),
    )
    with api_errors(cli):
        service = cli.stub.CreateService(request)
    say(
        f"service {service.name} created in cluster {service.cluster} "
        f"({service.task_definition}, desired count {service.desired_count})"
    )


@app.command("list")
def list_(
    ctx: typer.Context,
    cluster: str = ClusterOption,
    output: str = OutputOption,
) -> None:
    """List the services of a cluster (-o json|yaml: ECS's Service objects, counts and
    deployments included)."""
    cli: CliContext = ctx.obj
    with api_errors(cli):
        services = cli.stub.ListServices(api.ListServicesRequest(cluster=cluster)).services
        arns = cli.arns() if output != "table" else Arns()
        # ECS's Service carries the counts and events only a describe has.
        described = (
            {
                s.name: cli.stub.DescribeService(api.ServiceRef(cluster=s.cluster, name=s.name))
                for s in services
            }
            if output != "table"
            else {}
        )
    emit(
        output,
        services,
        [
            ("NAME", lambda s: s.name),
            ("TASK DEFINITION", lambda s: s.task_definition),
            ("DESIRED", lambda s: str(s.desired_count)),
            ("STATUS", lambda s: pb.ServiceStatus.Name(s.status).removeprefix("SERVICE_")),
            ("AGE", lambda s: age(s.created_at)),
        ],
        "services",
        lambda s: shapes.service(arns, described[s.name]),
    )


@app.command("describe")
def describe(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="NAME", help="service name"),
    cluster: str = ClusterOption,
    output: str = OutputOption,
) -> None:
    """Show a service, its counts and its newest events."""
    cli: CliContext = ctx.obj
    with api_errors(cli):
        description = cli.stub.DescribeService(api.ServiceRef(cluster=cluster, name=name))
        arns = cli.arns() if output != "table" else Arns()

    def show() -> None:
        s = description.service
        console = data_console()
        console.print(f"service:          {s.name}")
        console.print(f"cluster:          {s.cluster}")
        console.print(f"status:           {pb.ServiceStatus.Name(s.status).removeprefix('SERVICE_')}")
        console.print(f"task definition:  {s.task_definition}")
        if s.vip:
            console.print(f"virtual IP:       {s.vip}   DNS name: {description.dns_name}")
        for p in s.ports:
            proto = protocol_name(p.protocol)
            console.print(
                f"port:             {s.vip}:{p.port}/{proto} -> container port {p.container_port}"
                + (f" ({p.name})" if p.name else ""),
            )
        if description.exposed_addresses:
            console.print(f"load balancer:    {', '.join(description.exposed_addresses)}")
        console.print(
            f"desired/running/pending: {s.desired_count}/{description.running_count}"
            f"/{description.pending_count}"
        )
        if s.backoff.attempts:
            wait = max(0, round(s.backoff.next_attempt_at.seconds - time.time()))
            console.print(
                f"failing:          {s.backoff.failed_tasks} tasks in a row ({s.backoff.last_failure}); "
                + (f"next attempt in {wait} s" if wait else "retrying")
            )
        strategy = ", ".join(f"{p.type}:{p.field}" if p.field else p.type for p in s.placement_strategy)
        constraints = ", ".join(
            f"{c.type}({c.expression})" if c.expression else c.type for c in s.placement_constraints
        )
        console.print(
            f"placement:        {strategy or 'spread:instanceId'}; {constraints or 'no constraints'}",
        )
        config = deployment_defaults.configuration(s)
        console.print(f"deployment configuration: {deployments.configuration_line(config)}")
        for line in autoscale.describe_lines(s):
            console.print(line)
        utilization = top.service_utilization(cli, s.cluster, s.name)
        if utilization is not None:
            console.print(f"utilization:      {utilization}")
        if s.deployments:
            console.print("deployments (PRIMARY first):")
            for line in deployments.deployment_lines(description):
                console.print(line)
        console.print("events (newest first):")
        for event in description.events[:20]:
            console.print(f"  {age(event.created_at):>4} ago  {event.message}")

    emit_one(output, description, show, lambda d: shapes.service(arns, d))


@app.command("events")
def events(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="NAME", help="service name"),
    cluster: str = ClusterOption,
    limit: int = typer.Option(
        0, "--limit", metavar="N", min=0, max=2**32 - 1, help="at most N events; 0: all that are kept"
    ),
    output: str = OutputOption,
) -> None:
    """A service's events, newest first, with their times (UTC); the newest 100 are kept."""
    cli: CliContext = ctx.obj
    with api_errors(cli):
        found = cli.stub.ListServiceEvents(
            api.ListServiceEventsRequest(cluster=cluster, name=name, limit=limit)
        ).events
    emit(
        output,
        found,
        [
            ("TIME", lambda e: utc_time(e.created_at)),
            ("AGE", lambda e: age(e.created_at)),
            ("MESSAGE", lambda e: e.message),
        ],
        "events",
    )


@app.command("update")
def update(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="NAME", help="service name"),
    desired_count: int | None = typer.Option(
        None, "--desired-count", metavar="COUNT", help="how many tasks to keep running"
    ),
    task_definition: str = typer.Option(
        "",
        "--task-definition",
        metavar="TASK_DEFINITION",
        help="FAMILY or FAMILY:REVISION; a new one starts a deployment",
        show_default=False,
    ),
    force_new_deployment: bool = typer.Option(
        False, "--force-new-deployment", help="start a deployment even with the same task definition"
    ),
    min_healthy_percent: int | None = MinHealthyOption,
    max_percent: int | None = MaxPercentOption,
    circuit_breaker: bool | None = CircuitBreakerOption,
    rollback: bool | None = RollbackOption,
    deregistration_delay: int | None = DeregistrationDelayOption,
    rebalance: bool | None = RebalanceOption,
    wait: bool = typer.Option(
        False, "--wait", help="wait for the deployment, showing progress (see `berth service wait`)"
    ),
    timeout: float = typer.Option(
        0.0, "--timeout", metavar="SECONDS", min=0, help="with --wait: give up after this long; 0: never"
    ),
    cluster: str = ClusterOption,
) -> None:
    """Change a service: its desired count, its task definition (a rolling
    deployment), its deployment settings. Options left out stay as they are.

    With --wait: wait for the deployment the update started (or the current
    one when it started none), like `berth service wait`, and exit as it does:
    0 completed, 1 failed or rolled back, 124 --timeout passed."""
    cli: CliContext = ctx.obj
    if timeout and not wait:
        raise fail("--timeout applies only with --wait")
    request = update_request(
        cluster,
        name,
        desired_count=desired_count,
        task_definition=task_definition,
        force_new_deployment=force_new_deployment,
        options=deployments.deployment_options(
            min_healthy_percent=min_healthy_percent,
            max_percent=max_percent,
            circuit_breaker=circuit_breaker,
            rollback=rollback,
            deregistration_delay=deregistration_delay,
            rebalance=rebalance,
        ),
    )
    if request == api.UpdateServiceRequest(cluster=cluster, name=name):
        raise fail(
            "nothing to update: give --desired-count, --task-definition, --force-new-deployment "
            "or a deployment option"
        )
    with api_errors(cli):
        service = cli.stub.UpdateService(request)
    say(updated_line(service))
    if wait:
        current = rollout.primary(service)
        code = rollout_watch.wait_for_deployment(
            service.name,
            rollout_watch.describe_service(cli, cluster, service.name),
            current.id if current is not None else None,
            timeout or None,
            rollout_watch.display_for_terminal,
        )
        raise typer.Exit(code=code)


def update_request(
    cluster: str,
    name: str,
    *,
    desired_count: int | None,
    task_definition: str,
    force_new_deployment: bool,
    options: api.DeploymentOptions,
) -> api.UpdateServiceRequest:
    """Only what the user gave is set: the rest of the service stays as it is."""
    request = api.UpdateServiceRequest(
        cluster=cluster,
        name=name,
        task_definition=task_definition,
        force_new_deployment=force_new_deployment,
    )
    if desired_count is not None:
        request.desired_count = _count(desired_count)
    if options.ListFields():
        request.deployment.CopyFrom(options)
    return request


def updated_line(service: pb.Service) -> str:
    current = rollout.primary(service)
    line = f"service {service.name}: desired count {service.desired_count}, {service.task_definition}"
    if current is not None:
        line += f"; deployment {current.id} ({current.task_definition}) {deployments.rollout_word(current)}"
    return line


@app.command("wait")
def wait_(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="NAME", help="service name"),
    deployment: int | None = typer.Option(
        None,
        "--deployment",
        metavar="N",
        min=1,
        max=2**32 - 1,
        help="the deployment to wait for; default: the current PRIMARY",
    ),
    timeout: float = typer.Option(
        0.0, "--timeout", metavar="SECONDS", min=0, help="give up after this long (exit 124); 0: never"
    ),
    cluster: str = ClusterOption,
) -> None:
    """Wait until a deployment ends, showing its progress (like `kubectl rollout
    status`): a live display on a terminal, plain lines when piped. On failure
    prints the reason and the service's events since the deployment began.

    Exit codes: 0 the deployment completed and is PRIMARY (a steady state);
    1 it failed, was rolled back, was superseded by a newer deployment, or the
    service was deleted; 124 --timeout passed first.
    """
    cli: CliContext = ctx.obj
    code = rollout_watch.wait_for_deployment(
        name,
        rollout_watch.describe_service(cli, cluster, name),
        deployment,
        timeout or None,
        rollout_watch.display_for_terminal,
    )
    raise typer.Exit(code=code)


@app.command("delete")
def delete(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="NAME", help="service name"),
    cluster: str = ClusterOption,
) -> None:
    """Delete a service: its tasks are stopped, then the service is removed."""
    cli: CliContext = ctx.obj
    with api_errors(cli):
        cli.stub.DeleteService(api.ServiceRef(cluster=cluster, name=name))
    say(f"service {name} is being deleted; its tasks are stopping")


@app.command("expose")
def expose(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="NAME", help="service name"),
    type_: str = typer.Option(
        "LoadBalancer", "--type", metavar="TYPE", help="LoadBalancer: open the port on every host"
    ),
    port: str = typer.Option(
        ..., "--port", metavar="PORT", help="HOST_PORT[:SERVICE_PORT][/udp], e.g. 8080:80"
    ),
    cluster: str = ClusterOption,
) -> None:
    """Open a port on every host's own address, forwarded to the service."""
    cli: CliContext = ctx.obj
    body, protocol = _split_protocol(port)
    host_text, _, service_text = body.partition(":")
    host_port = _port_number(host_text)
    service_port = _port_number(service_text or host_text)
    if host_port is None or service_port is None:
        raise fail(
            f"--port {shown(port)} is invalid: write HOST_PORT[:SERVICE_PORT] with ports 1-65535, "
            "e.g. 8080:80"
        )
    request = api.ExposeServiceRequest(
        cluster=cluster,
        name=name,
        type=type_,
        port=host_port,
        service_port=service_port,
        protocol=protocol,
    )
    with api_errors(cli):
        cli.stub.ExposeService(request)
        description = cli.stub.DescribeService(api.ServiceRef(cluster=cluster, name=name))
    say(f"service {name} is exposed at {', '.join(description.exposed_addresses) or '(no nodes yet)'}")


@app.command("unexpose")
def unexpose(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="NAME", help="service name"),
    port: str = typer.Option(..., "--port", metavar="PORT", help="HOST_PORT[/udp] given to expose"),
    cluster: str = ClusterOption,
) -> None:
    """Close a port opened by `expose`: every host drops its forwarding rules."""
    cli: CliContext = ctx.obj
    body, protocol = _split_protocol(port)
    if not (body.isascii() and body.isdecimal()) or not 1 <= int(body) <= 65535:
        raise fail(f"--port {port!r} is invalid: write HOST_PORT[/udp] (1-65535), e.g. 8080")
    with api_errors(cli):
        cli.stub.UnexposeService(
            api.UnexposeServiceRequest(cluster=cluster, name=name, port=int(body), protocol=protocol)
        )
    say(f"service {name} is no longer exposed on port {port}")


@app.command("endpoints")
def endpoints(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="NAME", help="service name"),
    cluster: str = ClusterOption,
    output: str = OutputOption,
) -> None:
    """The service's endpoints (RUNNING, healthy tasks' host address and port), and tasks not serving."""
    cli: CliContext = ctx.obj
    with api_errors(cli):
        response = cli.stub.ListEndpoints(api.ServiceRef(cluster=cluster, name=name))
        names = node_names(cli) if output == "table" else {}
    rows = list(response.endpoints)
    if output != "table":
        emit(output, rows, [], "endpoints")
        return
    emit(
        output,
        rows,
        [
            ("SERVICE PORT", lambda e: f"{e.service_port}/{protocol_name(e.protocol)}"),
            ("ENDPOINT", lambda e: f"{e.address}:{e.port}"),
            ("TASK", lambda e: e.task_id[:12]),
            ("NODE", lambda e: node_label(names, e.node_id)),
            ("STATE", lambda e: "ready"),
        ],
        "endpoints",
    )
    for task_id, why in sorted(response.not_ready.items()):
        say(f"not serving: task {task_id[:12]} ({why})")


app.command("autoscale")(autoscale.autoscale)
app.command("recommend")(recommend.recommend)
