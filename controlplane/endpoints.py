"""Service endpoints and the route table every agent programs (pure).

An endpoint is a RUNNING task that is still wanted (not being stopped, nor
deregistered ahead of its stop) on a node that is not DOWN and, when an
essential container has a health check, HEALTHY (as in ECS): that node's
address and the host port published for the service port's container port.
Every agent gets the same table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from berth.errors import InvalidArgument
from berth.names import port_text
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb


def serves_health(task: pb.Task) -> bool:
    """Healthy enough to serve: HEALTHY, or without a health check."""
    return not task.health_checked or task.health_status == pb.HEALTHY


def endpoints(
    service: pb.Service, tasks: Iterable[pb.Task], nodes: Mapping[str, pb.Node]
) -> list[pb.Endpoint]:
    found = []
    for task in tasks:
        if task.last_status != pb.RUNNING or task.desired_status != pb.DESIRED_RUNNING:
            continue
        if task.HasField("deregistered_at") or not serves_health(task):
            continue
        node = nodes.get(task.node_id)
        if node is None or node.status == pb.DOWN:
            continue
        for port in service.ports:
            for binding in task.network_bindings:
                if binding.container_port == port.container_port and binding.protocol == port.protocol:
                    found.append(
                        pb.Endpoint(
                            task_id=task.id,
                            node_id=node.id,
                            address=node.address,
                            port=binding.host_port,
                            service_port=port.port,
                            protocol=port.protocol,
                        )
                    )
                    break
    found.sort(key=lambda e: (e.service_port, e.protocol, e.address, e.port))
    return found


def not_ready(
    tasks: Iterable[pb.Task], nodes: Mapping[str, pb.Node], serving: Iterable[pb.Endpoint]
) -> dict[str, str]:
    """Why each live task that is not an endpoint is not serving (task id -> reason)."""
    serving_ids = {e.task_id for e in serving}
    reasons = {}
    for task in tasks:
        if task.id in serving_ids or task.last_status == pb.STOPPED:
            continue
        node = nodes.get(task.node_id)
        if task.desired_status == pb.DESIRED_STOPPED:
            reasons[task.id] = "stopping"
        elif task.HasField("deregistered_at"):
            reasons[task.id] = "deregistering"
        elif node is not None and node.status == pb.DOWN:
            reasons[task.id] = "node DOWN"
        elif task.last_status == pb.RUNNING and not serves_health(task):
            reasons[task.id] = "unhealthy" if task.health_status == pb.UNHEALTHY else "health unknown"
        else:
            reasons[task.id] = pb.TaskStatus.Name(task.last_status)
    return reasons


def route(
    service: pb.Service, tasks: Iterable[pb.Task], nodes: Mapping[str, pb.Node]
) -> agent_pb.ServiceRoute:
    return agent_pb.ServiceRoute(
        cluster=service.cluster,
        name=service.name,
        vip=service.vip,
        ports=service.ports,
        endpoints=endpoints(service, tasks, nodes),
        load_balancers=service.load_balancers,
    )


def resolve_ports(ports: Iterable[pb.ServicePort], td: pb.TaskDefinition) -> list[pb.ServicePort]:
    """Check service ports against the task definition; a named container port becomes its number."""
    mappings = [m for c in td.container_definitions for m in c.port_mappings]
    resolved: list[pb.ServicePort] = []
    seen: set[tuple[int, int]] = set()
    for port in ports:
        if not 1 <= port.port <= 65535:
            raise InvalidArgument(f"service port {port.port} is out of range: use 1-65535")
        if (port.port, port.protocol) in seen:
            raise InvalidArgument(f"service port {port.port} is given twice")
        seen.add((port.port, port.protocol))
        if port.container_port:
            match = [
                m for m in mappings if m.container_port == port.container_port and m.protocol == port.protocol
            ]
        else:
            match = [m for m in mappings if m.name and m.name == port.name and m.protocol == port.protocol]
        if not match:
            target = port.container_port or repr(port.name)
            known = (
                ", ".join(
                    port_text(m.container_port, m.protocol) + (f" ({m.name})" if m.name else "")
                    for m in mappings
                )
                or "none"
            )
            raise InvalidArgument(
                f"service port {port.port} maps to container port {target}, which task definition "
                f"{td.family}:{td.revision} does not publish (its portMappings: {known})"
            )
        mapping = match[0]
        resolved.append(
            pb.ServicePort(
                name=port.name or mapping.name,
                port=port.port,
                container_port=mapping.container_port,
                protocol=mapping.protocol,
            )
        )
    return resolved
