"""What must hold once the chaos has stopped and the cluster has had time to settle.

`observe` reads the cluster twice over: what Berth says (services, live tasks, nodes, through the
operator API) and what the hosts' engines run (containers by the labels the agent puts on them).
`violations` is pure: it compares an Observation with the Ledger of acknowledged writes and names
every broken invariant in one line each:

- every service converges to exactly its desired count, in Berth and on the engines, all on the
  service's task definition, with one COMPLETED deployment;
- no task runs twice (running containers per task id across every host's engine);
- no acknowledged write is lost (desired count, task definition, existence: see Ledger.allowed);
- nothing stays stuck: no PENDING task, no task told to stop that still runs, no service left
  DRAINING, no container of a deleted service, every node READY.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import docker

from berth.tasklist import all_tasks
from berth.testing.chaos.ledger import Ledger
from berth.testing.lab import Lab
from berth.v1 import operator_pb2 as api
from berth.v1 import operator_pb2_grpc
from berth.v1 import resources_pb2 as pb

# The labels the agent puts on every container (agent/runtime/driver.py).
LABEL_TASK_ID = "berth.task-id"
LABEL_SERVICE = "berth.service"


@dataclass(frozen=True)
class ServiceState:
    name: str
    status: str  # ACTIVE, DRAINING
    desired_count: int
    task_definition: str
    # (id, task definition, rollout state) of each deployment, newest first.
    deployments: tuple[tuple[int, str, str], ...]


@dataclass(frozen=True)
class TaskState:
    id: str
    service: str
    task_definition: str
    last_status: str
    desired_status: str
    node: str


@dataclass(frozen=True)
class ContainerState:
    host: str
    task_id: str
    service: str


@dataclass(frozen=True)
class Observation:
    services: dict[str, ServiceState]
    # Tasks not STOPPED.
    tasks: tuple[TaskState, ...]
    # Containers running on the hosts' engines.
    containers: tuple[ContainerState, ...]
    # Node name -> status (READY, DRAINING, DOWN).
    nodes: dict[str, str]


def services_of(ledger: Ledger) -> list[str]:
    """Every service the workload ever tried to create."""
    return [key.rsplit("/", 1)[0] for key in ledger.keys("exists")]


def violations(observed: Observation, ledger: Ledger) -> list[str]:
    """Every invariant the observation breaks, one line each (empty: all hold)."""
    found: list[str] = []
    names = services_of(ledger)
    for name in names:
        found += _service_violations(name, observed, ledger)
    found += _duplicates(observed.containers)
    found += _stuck(observed, set(names))
    found += [
        f"node {node} is {status}" for node, status in sorted(observed.nodes.items()) if status != "READY"
    ]
    return found


def _service_violations(name: str, observed: Observation, ledger: Ledger) -> list[str]:
    exists = ledger.allowed(f"{name}/exists")
    service = observed.services.get(name)
    if service is None:
        return [] if False in exists else [f"service {name}: gone, but its create was acknowledged"]
    if service.status != "ACTIVE":
        return [f"service {name}: still {service.status}"]
    if True not in exists:
        return [f"service {name}: still exists, but its delete was acknowledged"]
    found = []
    counts = ledger.allowed(f"{name}/count")
    if service.desired_count not in counts:
        found.append(
            f"service {name}: desired count {service.desired_count}, "
            f"acknowledged {_last(ledger, name, 'count')}"
        )
    definitions = ledger.allowed(f"{name}/taskdef")
    if service.task_definition not in definitions:
        found.append(
            f"service {name}: task definition {service.task_definition}, "
            f"acknowledged {_last(ledger, name, 'taskdef')} (deployments {list(service.deployments)})"
        )
    if len(service.deployments) != 1 or service.deployments[0][2] != "COMPLETED":
        found.append(f"service {name}: deployments not settled: {list(service.deployments)}")
    running = {t.id for t in observed.tasks if t.service == name and t.last_status == "RUNNING"}
    if len(running) != service.desired_count:
        found.append(
            f"service {name}: {len(running)} tasks RUNNING in Berth, desired {service.desired_count}"
        )
    stale = sorted(
        {t.task_definition for t in observed.tasks if t.service == name} - {service.task_definition}
    )
    if stale:
        found.append(f"service {name}: tasks still on {stale}, service on {service.task_definition}")
    on_engines = [c for c in observed.containers if c.service == name]
    if len(on_engines) != service.desired_count:
        found.append(
            f"service {name}: {len(on_engines)} containers running on the engines, "
            f"desired {service.desired_count} ({_by_host(on_engines)})"
        )
    if {c.task_id for c in on_engines} != running:
        found.append(f"service {name}: the engines run other tasks than Berth's RUNNING ones")
    return found


def _duplicates(containers: Iterable[ContainerState]) -> list[str]:
    hosts: dict[str, list[str]] = {}
    for container in containers:
        hosts.setdefault(container.task_id, []).append(container.host)
    return [
        f"task {task_id} runs {len(where)} times (on {', '.join(sorted(where))})"
        for task_id, where in sorted(hosts.items())
        if len(where) > 1
    ]


def _stuck(observed: Observation, names: set[str]) -> list[str]:
    found = []
    for task in observed.tasks:
        if task.last_status == "PENDING":
            found.append(f"task {task.id} of {task.service or '-'} stuck PENDING")
        elif task.desired_status == "STOPPED":
            found.append(f"task {task.id} of {task.service or '-'} told to stop, still {task.last_status}")
        elif task.service not in observed.services:
            found.append(f"task {task.id} of deleted service {task.service or '-'} still {task.last_status}")
    live = set(observed.services)
    for container in observed.containers:
        if container.service not in live:
            found.append(
                f"container of task {container.task_id} (service {container.service or '-'}) "
                f"still running on {container.host}"
            )
    return found


def _last(ledger: Ledger, name: str, kind: str) -> str:
    history = ledger.writes.get(f"{name}/{kind}", [])
    acknowledged = [w.value for w in history if w.acknowledged]
    return f"{acknowledged[-1]!r} last, then {sorted(map(repr, ledger.allowed(f'{name}/{kind}')))} allowed"


def _by_host(containers: Iterable[ContainerState]) -> str:
    return ", ".join(f"{host}: {n}" for host, n in sorted(Counter(c.host for c in containers).items()))


# -- reading the cluster -------------------------------------------------------------------------


def observe(stub: operator_pb2_grpc.OperatorStub, lab: Lab, cluster: str = "default") -> Observation:
    """Berth's view through the operator API and the engines' own."""
    services = {
        s.name: ServiceState(
            s.name,
            pb.ServiceStatus.Name(s.status).removeprefix("SERVICE_"),
            s.desired_count,
            s.task_definition,
            tuple((d.id, d.task_definition, pb.RolloutState.Name(d.rollout_state)) for d in s.deployments),
        )
        for s in stub.ListServices(api.ListServicesRequest(cluster=cluster), timeout=10).services
    }
    listed = [n.node for n in stub.ListNodes(api.ListNodesRequest(), timeout=10).nodes]
    names = {node.id: node.name for node in listed}
    nodes = {node.name: pb.NodeStatus.Name(node.status) for node in listed}
    tasks = tuple(
        TaskState(
            t.id,
            t.service,
            t.task_definition,
            pb.TaskStatus.Name(t.last_status),
            pb.DesiredStatus.Name(t.desired_status).removeprefix("DESIRED_"),
            names.get(t.node_id, t.node_id),
        )
        for t in all_tasks(stub, api.ListTasksRequest(cluster=cluster, page_size=1000), timeout=10)
        if t.last_status != pb.STOPPED
    )
    return Observation(services, tasks, tuple(engine_containers(lab)), nodes)


def engine_containers(lab: Lab) -> list[ContainerState]:
    """Every running container Berth started, on every host's engine."""
    found = []
    for host in lab.hosts:
        engine = docker.DockerClient(base_url=host.docker_url, timeout=20)
        try:
            for summary in engine.api.containers(filters={"label": LABEL_TASK_ID, "status": "running"}):
                labels = summary.get("Labels") or {}
                found.append(ContainerState(host.name, labels[LABEL_TASK_ID], labels.get(LABEL_SERVICE, "")))
        finally:
            engine.close()
    return found
