"""What the Docker driver reads off the engine for ordering and restarts in place (pure).

A dependency's state from inspect's `State` (`seen`), a container's place in
its task's start order and its own stopTimeout from its labels (`start_rank`,
`own_timeout`: stops go dependents first), and a container the agent just
started or started again, from inspect (`after_start`: running, or already
exited if it died at once). The decisions themselves are `agent.ordering`'s.
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


def after_start(
    runtime_id: str, attrs: Mapping[str, Any], labels: Mapping[str, str], health_checked: bool
) -> tuple[str, ObservedContainer]:
    """The node and the container, from inspect right after the agent (re)started it: running,
    or exited already (inspect's State.Running false) with its exit code and times, so a
    container that dies at once is never shown running. `labels`: the container's (its node,
    name, essential, stopTimeout, host ports); `health_checked`: it has a health check."""
    listed = docker_state.from_summary({"Id": runtime_id, "Labels": labels, "State": "running"})
    if listed is None:  # not Berth's: nothing to believe about it but its id
        listed = docker_state.ListedContainer(runtime_id, "", "", "", True, DEFAULT_STOP_TIMEOUT, "")
    state = attrs.get("State") or {}
    if not state.get("Running"):
        return listed.node_id, docker_state.from_inspect(listed, state)
    container = ObservedContainer(
        listed.name,
        runtime_id,
        ContainerPhase.RUNNING,
        listed.essential,
        listed.stop_timeout,
        bindings=docker_state.bindings_from_inspect(
            listed.name, (attrs.get("NetworkSettings") or {}).get("Ports")
        )
        or docker_state.host_bindings(listed.name, str(labels.get(LABEL_HOST_PORTS, ""))),
        health=ContainerHealth.STARTING if health_checked else ContainerHealth.NONE,
        started_at=docker_state.unix_time(state.get("StartedAt")),
    )
    return listed.node_id, container


def restarted(runtime_id: str, attrs: Mapping[str, Any]) -> tuple[str, ObservedContainer]:
    """`after_start` for a container started again: its labels and health check from inspect."""
    config = attrs.get("Config") or {}
    return after_start(runtime_id, attrs, config.get("Labels") or {}, bool(config.get("Healthcheck")))
