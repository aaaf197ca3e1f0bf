"""Desired-state deltas: what changed between two snapshots of one node, and applying it.

Shared by both ends of the agent stream: the control plane builds a delta
(`changes`, over the versions it remembers having sent) and the agent applies
it (`apply_delta`) to the snapshot it holds, handing the complete result on
as if a snapshot had come, so nothing downstream of the session knows deltas
exist. A delta names the revision it was built against (`base_revision`);
applied to any other revision it is a gap, and the agent asks for a full
snapshot instead (as xDS's incremental protocol does).

Snapshots are canonical: tasks sorted by task id, routes by (cluster, name),
each key once (as `controlplane.desired` builds them); applying keeps that
order, so a snapshot and the delta-built copy of it compare equal.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import TypeVar

from berth.v1 import agent_pb2 as agent_pb

Key = TypeVar("Key", bound=Hashable)
Item = TypeVar("Item")

RouteId = tuple[str, str]


def route_id(route: agent_pb.ServiceRoute) -> RouteId:
    return (route.cluster, route.name)


def changes(
    sent: Mapping[Key, object], current: Iterable[tuple[Key, object, Item]]
) -> tuple[list[Item], list[Key]]:
    """The items whose version differs from the one sent (or were not sent), and the keys gone.

    `current` holds (key, version, item); a version is anything comparable for
    equality (the control plane's build versions, or the item itself).
    """
    changed = []
    live = set()
    for key, version, item in current:
        live.add(key)
        if key not in sent or sent[key] != version:
            changed.append(item)
    removed = [key for key in sent if key not in live]
    return changed, removed


def diff(base: agent_pb.DesiredState, target: agent_pb.DesiredState) -> agent_pb.DesiredStateDelta:
    """The delta that turns `base` into `target` (by content: the specification of the wire delta)."""
    tasks, removed_tasks = changes(
        {task.task_id: task for task in base.tasks}, ((t.task_id, t, t) for t in target.tasks)
    )
    routes, removed_routes = changes(
        {route_id(route): route for route in base.routes}, ((route_id(r), r, r) for r in target.routes)
    )
    return agent_pb.DesiredStateDelta(
        revision=target.revision,
        base_revision=base.revision,
        tasks=tasks,
        removed_task_ids=removed_tasks,
        routes=routes,
        removed_routes=[agent_pb.RouteKey(cluster=c, name=n) for c, n in removed_routes],
    )


def apply_delta(
    state: agent_pb.DesiredState, delta: agent_pb.DesiredStateDelta
) -> agent_pb.DesiredState | None:
    """`state` with `delta` applied; None when the delta was not built against `state` (a gap)."""
    if delta.base_revision != state.revision:
        return None
    tasks = {task.task_id: task for task in state.tasks}
    for task_id in delta.removed_task_ids:
        tasks.pop(task_id, None)
    for task in delta.tasks:
        tasks[task.task_id] = task
    routes = {route_id(route): route for route in state.routes}
    for key in delta.removed_routes:
        routes.pop((key.cluster, key.name), None)
    for route in delta.routes:
        routes[route_id(route)] = route
    return agent_pb.DesiredState(
        revision=delta.revision,
        tasks=[tasks[task_id] for task_id in sorted(tasks)],
        routes=[routes[key] for key in sorted(routes)],
    )
