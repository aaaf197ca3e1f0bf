"""What the Docker driver reads off the engine for ordering and restarts in place (pure).

A dependency's state from inspect's `State` (`seen`), a container's place in
its task's start order and its own stopTimeout from its labels (`start_rank`,
`own_timeout`: stops go dependents first), and a container the agent just
started again, from inspect (`restarted`). The decisions themselves are
`agent.ordering`'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent import ordering
from agent.runtime import docker_state
from agent.runtime.driver import (
    DEFAULT_STOP_TIMEOUT,
    LABEL_HOST_PORTS,
    LABEL_START_ORDER,
    LABEL_STOP_TIMEOUT,
    ContainerHealth,
    ContainerPhase,
    ObservedContainer,
)


def seen(state: Mapping[str, Any]) -> ordering.Seen:
    """A dependency as inspect's `State` shows it."""
    status = str(state.get("Status", "exited"))
    if status in ("running", "paused", "restarting"):
        phase = ContainerPhase.RUNNING
    elif status == "created":
        phase = ContainerPhase.CREATED
    else:
        phase = ContainerPhase.EXITED
    health = docker_state.health_from_word(str((state.get("Health") or {}).get("Status", "")))
    exit_code = int(state.get("ExitCode", -1)) if phase is ContainerPhase.EXITED else None
    return ordering.Seen(phase, exit_code, health)


def _label_number(labels: Mapping[str, str] | None, label: str) -> int | None:
    text = str((labels or {}).get(label, ""))
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 6 else None


def start_rank(container: Any) -> int:
    """The SDK container's place in its task's start order (0 without dependsOn)."""
    rank = _label_number(container.labels, LABEL_START_ORDER)
    return rank if rank is not None else 0


def own_timeout(labels: Mapping[str, str] | None, timeout: int) -> int:
    """The container's own stopTimeout (its label), never longer than the task's `timeout`."""
    own = _label_number(labels, LABEL_STOP_TIMEOUT)
    return min(own, timeout) if own is not None else timeout


def restarted(runtime_id: str, attrs: Mapping[str, Any]) -> tuple[str, ObservedContainer]:
    """The node and the running container, from inspect right after the agent started it again."""
    labels = (attrs.get("Config") or {}).get("Labels") or {}
    listed = docker_state.from_summary({"Id": runtime_id, "Labels": labels, "State": "running"})
    name = listed.name if listed is not None else ""
    container = ObservedContainer(
        name,
        runtime_id,
        ContainerPhase.RUNNING,
        listed.essential if listed is not None else True,
        listed.stop_timeout if listed is not None else DEFAULT_STOP_TIMEOUT,
        bindings=docker_state.bindings_from_inspect(name, (attrs.get("NetworkSettings") or {}).get("Ports"))
        or docker_state.host_bindings(name, str(labels.get(LABEL_HOST_PORTS, ""))),
        health=ContainerHealth.STARTING
        if (attrs.get("Config") or {}).get("Healthcheck")
        else ContainerHealth.NONE,
        started_at=docker_state.unix_time((attrs.get("State") or {}).get("StartedAt")),
    )
    return (listed.node_id if listed is not None else ""), container
