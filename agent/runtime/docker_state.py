"""What the agent believes about its Docker containers: the engine's list merged with its events (pure).

Docker's container list trails its event stream by about 100 ms: right after
a `die` event the list still says "running", and right after our own start it
may still say "created". The list alone is therefore not the truth; for each
container it is merged with what the agent learned meanwhile:

- deaths, from `die` events (exit code; "OOMKilled" when an `oom` event came
  first). A death wins over a list that still says running, and it is final:
  a container seen to die stays exited even if something else starts it
  again (only the agent's own restart, `restarted`, revives it, forgetting
  only the deaths noted before it started the container again: a new run's
  `die` is kept, however early it comes);
- starts, what inspect showed right after the agent's own start, believed
  until the list says "running" itself (a container inspect already shows
  exited is kept as finished instead);
- finished containers' exit details, inspected once (they never change
  until the agent restarts the container in place, its restartPolicy:
  `restarted` then forgets the exit, and counts the restart);
- health, from `health_status` events: the newest event wins over a list
  that may predate it (the list's "(healthy)" status text is used until an
  event is seen, e.g. after the agent restarts).

`merge` decides one container from those facts; `ContainerLedger` keeps them
until the container is gone. The ledger is plain data with no lock: the
Docker driver touches it only on the event loop's thread (events and starts
are handed over with `call_soon_threadsafe`, lists are merged after the
worker thread returns).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from agent.runtime.docker_events import ContainerEvent
from agent.runtime.driver import (
    DEFAULT_STOP_TIMEOUT,
    LABEL_CONTAINER,
    LABEL_ESSENTIAL,
    LABEL_HOST_PORTS,
    LABEL_NODE,
    LABEL_STOP_TIMEOUT,
    LABEL_TASK_ID,
    ContainerHealth,
    ContainerPhase,
    ObservedContainer,
    ObservedTask,
)
from berth.v1 import resources_pb2 as pb

OOM_KILLED = "OOMKilled"


@dataclass(frozen=True)
class ListedContainer:
    """One row of Docker's container list (`GET /containers/json`) for a container Berth labelled."""

    id: str
    task_id: str
    node_id: str
    name: str  # in the task definition
    essential: bool
    stop_timeout: int
    state: str  # Docker's: "created", "running", "exited", ...
    bindings: tuple[pb.NetworkBinding, ...] = ()
    health: ContainerHealth = ContainerHealth.NONE


@dataclass(frozen=True)
class Death:
    exit_code: int
    reason: str = ""
    noted_at: int = 0  # the ledger's clock when its event arrived (ContainerLedger.mark)


def bindings_from_list(name: str, ports: Iterable[Mapping[str, Any]]) -> tuple[pb.NetworkBinding, ...]:
    """Published ports as the container list shows them, one per (port, protocol), IPv4 preferred."""
    found: dict[tuple[int, str], pb.NetworkBinding] = {}
    for port in ports:
        if not port.get("PublicPort"):
            continue
        key = (int(port["PrivatePort"]), port.get("Type", "tcp"))
        ip = port.get("IP", "")
        if key in found and ":" in ip:
            continue  # prefer the IPv4 binding Docker lists beside the IPv6 one
        found[key] = pb.NetworkBinding(
            container_name=name,
            container_port=key[0],
            host_port=int(port["PublicPort"]),
            protocol=pb.UDP if key[1] == "udp" else pb.TCP,
            bind_ip=ip,
        )
    return tuple(found[k] for k in sorted(found))


def host_bindings(name: str, label: str) -> tuple[pb.NetworkBinding, ...]:
    """A host-network container's ports (its LABEL_HOST_PORTS label, "80/tcp,53/udp"): each is a
    host port of the same number. Anything malformed in the label is skipped."""
    found = []
    for item in label.split(",")[:100]:
        number, _, protocol = item.partition("/")
        if not (number.isascii() and number.isdigit() and len(number) <= 5 and protocol in ("tcp", "udp")):
            continue
        port = int(number)
        if 1 <= port <= 65535:
            found.append(
                pb.NetworkBinding(
                    container_name=name,
                    container_port=port,
                    host_port=port,
                    protocol=pb.UDP if protocol == "udp" else pb.TCP,
                )
            )
    return tuple(found)


def bindings_from_inspect(
    name: str, ports: Mapping[str, list[Mapping[str, str]] | None] | None
) -> tuple[pb.NetworkBinding, ...]:
    """Published ports as inspect shows them (`NetworkSettings.Ports`: {"80/tcp": [{HostIp, HostPort}]})."""
    rows = []
    for spec, bindings in (ports or {}).items():
        number, _, protocol = spec.partition("/")
        for binding in bindings or []:
            rows.append(
                {
                    "PrivatePort": int(number),
                    "PublicPort": int(binding["HostPort"]),
                    "Type": protocol,
                    "IP": binding.get("HostIp", ""),
                }
            )
    return bindings_from_list(name, rows)


_HEALTH_WORDS = {
    "starting": ContainerHealth.STARTING,
    "healthy": ContainerHealth.HEALTHY,
    "unhealthy": ContainerHealth.UNHEALTHY,
}


def health_from_word(word: str) -> ContainerHealth:
    """Docker's health word ("starting", "healthy", "unhealthy"); anything else is NONE."""
    return _HEALTH_WORDS.get(word.strip(), ContainerHealth.NONE)


def health_from_status(status: str) -> ContainerHealth:
    """The health in a list row's status text: "Up 5 seconds (healthy)", "(health: starting)"."""
    if not status.endswith(")") or "(" not in status:
        return ContainerHealth.NONE
    inner = status[status.rindex("(") + 1 : -1]
    return health_from_word(inner.removeprefix("health:"))


MAX_HEALTH_OUTPUT = 200


def health_output(state: Mapping[str, Any]) -> str:
    """The last check in inspect's `State.Health.Log`, as one short line: "exit 1: first line"."""
    log = ((state.get("Health") or {}).get("Log")) or []
    if not log:
        return ""
    last = log[-1]
    lines = str(last.get("Output") or "").strip().splitlines()
    text = f"exit {last.get('ExitCode', -1)}"
    if lines and lines[0].strip():
        text += f": {lines[0].strip()}"
    return text if len(text) <= MAX_HEALTH_OUTPUT else text[: MAX_HEALTH_OUTPUT - 3] + "..."


def from_summary(summary: Mapping[str, Any]) -> ListedContainer | None:
    """A list row as a ListedContainer; None for a container without a task id."""
    labels = summary.get("Labels") or {}
    task_id = labels.get(LABEL_TASK_ID)
    if not task_id:
        return None
    name = labels.get(LABEL_CONTAINER, "")
    return ListedContainer(
        id=summary["Id"],
        task_id=task_id,
        node_id=labels.get(LABEL_NODE, ""),
        name=name,
        essential=labels.get(LABEL_ESSENTIAL, "true") == "true",
        stop_timeout=int(labels.get(LABEL_STOP_TIMEOUT, DEFAULT_STOP_TIMEOUT)),
        state=summary.get("State", ""),
        bindings=bindings_from_list(name, summary.get("Ports") or [])
        or host_bindings(name, str(labels.get(LABEL_HOST_PORTS, ""))),
        health=health_from_status(str(summary.get("Status") or "")),
    )


def merge(
    listed: ListedContainer,
    death: Death | None,
    just_started: ObservedContainer | None,
    finished: ObservedContainer | None,
    health: ContainerHealth | None = None,
) -> ObservedContainer | None:
    """What to believe about one listed container; None when only an inspect can tell (exited, unseen).

    health: the newest health event's, if one was seen (it beats the list's).
    """

    def observed(phase: ContainerPhase, **details: Any) -> ObservedContainer:
        return ObservedContainer(
            listed.name, listed.id, phase, listed.essential, listed.stop_timeout, **details
        )

    if listed.state == "running":
        if death is not None:  # the list lags the event: the event wins
            return observed(ContainerPhase.EXITED, exit_code=death.exit_code, reason=death.reason)
        return observed(ContainerPhase.RUNNING, bindings=listed.bindings, health=health or listed.health)
    if just_started is not None and death is None:
        # The list has not caught up with our own start yet.
        return replace(just_started, health=health) if health else just_started
    if listed.state == "created":
        return observed(ContainerPhase.CREATED)
    return finished


_DOCKER_TIME = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)")


def unix_time(text: Any) -> float:
    """Docker's RFC 3339 time with nanoseconds ("2026-11-27T05:00:00.123456789Z") as Unix
    seconds; 0.0 for Docker's zero time ("0001-01-01T00:00:00Z") or anything unreadable."""
    match = _DOCKER_TIME.fullmatch(str(text or "").strip())
    if match is None or match.group(1).startswith("0001-"):
        return 0.0
    zone = "+00:00" if match.group(3) == "Z" else match.group(3)
    try:
        whole = datetime.fromisoformat(match.group(1) + zone).timestamp()
    except ValueError:
        return 0.0
    fraction = match.group(2) or "0"
    return float(whole + int(fraction) / 10 ** len(fraction))


def from_inspect(listed: ListedContainer, state: Mapping[str, Any]) -> ObservedContainer:
    """An exited container from inspect's `State` (empty when it vanished meanwhile)."""
    reason = OOM_KILLED if state.get("OOMKilled") else state.get("Error", "")
    return ObservedContainer(
        listed.name,
        listed.id,
        ContainerPhase.EXITED,
        listed.essential,
        listed.stop_timeout,
        exit_code=int(state.get("ExitCode", -1)),
        reason=reason,
        started_at=unix_time(state.get("StartedAt")),
        finished_at=unix_time(state.get("FinishedAt")),
    )


def by_task(observed: Iterable[tuple[str, ObservedContainer]]) -> dict[str, ObservedTask]:
    grouped: dict[str, list[ObservedContainer]] = {}
    for task_id, container in observed:
        grouped.setdefault(task_id, []).append(container)
    return {task_id: ObservedTask(task_id, tuple(cs)) for task_id, cs in grouped.items()}


class ContainerLedger:
    """The facts `merge` needs, per container id, kept until a list shows the container gone."""

    def __init__(self) -> None:
        self._deaths: dict[str, Death] = {}
        self._oom_killed: dict[str, int] = {}  # container -> when its oom event was noted
        self._just_started: dict[str, ObservedContainer] = {}
        self._finished: dict[str, ObservedContainer] = {}
        self._health: dict[str, ContainerHealth] = {}
        # Per unhealthy container: its last check's output, inspected once per unhealthy spell.
        self._health_output: dict[str, str] = {}
        # Restarts in place (restartPolicy): start/exit times of exits seen by event only, how
        # often each container was restarted, and the ones whose restart the engine refused.
        self._times: dict[str, tuple[float, float]] = {}
        self._restarts: dict[str, int] = {}
        self._restart_refused: set[str] = set()
        # Per container: its node (to forget only that node's containers) and
        # when it was last noted (to keep what a list taken earlier could not show).
        self._node: dict[str, str] = {}
        self._noted_at: dict[str, int] = {}
        self._clock = itertools.count()

    def _note(self, container_id: str, node_id: str) -> None:
        self._node[container_id] = node_id
        self._noted_at[container_id] = next(self._clock)

    def mark(self) -> int:
        """A point in time, taken just before asking Docker for a list."""
        return next(self._clock)

    def record(self, event: ContainerEvent) -> None:
        if event.action not in ("oom", "die", "health_status"):
            return
        self._note(event.container_id, event.node_id)
        noted_at = self._noted_at[event.container_id]
        if event.action == "oom":
            self._oom_killed[event.container_id] = noted_at
        elif event.action == "die":
            reason = OOM_KILLED if event.container_id in self._oom_killed else ""
            self._deaths[event.container_id] = Death(event.exit_code, reason, noted_at)
        else:
            self._health[event.container_id] = health_from_word(event.health)
            self._health_output.pop(event.container_id, None)

    def started(self, node_id: str, container: ObservedContainer) -> None:
        """The agent started this container: believed (running) until the list catches up; one
        inspect already showed exited is what the container finished as."""
        if container.phase is ContainerPhase.EXITED:
            self._finished[container.runtime_id] = container
        else:
            self._just_started[container.runtime_id] = container
        self._note(container.runtime_id, node_id)

    def observe(self, listed: ListedContainer) -> ObservedContainer | None:
        """`merge` with what the ledger knows; None: inspect it and pass the result to `inspected`."""
        if listed.state == "running":
            self._just_started.pop(listed.id, None)
        return merge(
            listed,
            self._deaths.get(listed.id),
            self._just_started.get(listed.id),
            self._finished.get(listed.id),
            self._health.get(listed.id),
        )

    def inspected(self, listed: ListedContainer, state: Mapping[str, Any]) -> ObservedContainer:
        container = from_inspect(listed, state)
        self._finished[listed.id] = container
        self._note(listed.id, listed.node_id)
        return container

    def forget_missing(self, node_id: str, listed_ids: set[str], listed_since: int) -> None:
        """Forget this node's containers that a list asked for at `listed_since` no longer shows.

        Facts noted after that point are kept: the list may simply predate the container.
        """
        for container_id, noted_at in list(self._noted_at.items()):
            if (
                container_id in listed_ids
                or noted_at > listed_since
                or self._node[container_id] not in (node_id, "")
            ):
                continue
            for facts in (
                self._deaths,
                self._just_started,
                self._finished,
                self._health,
                self._health_output,
                self._times,
                self._restarts,
            ):
                facts.pop(container_id, None)
            self._oom_killed.pop(container_id, None)
            self._restart_refused.discard(container_id)
            del self._node[container_id], self._noted_at[container_id]

    def forget_health(self) -> None:
        """Events may have been missed (the stream reconnected): believe the lists' health again."""
        self._health.clear()
        self._health_output.clear()

    def lacks_health_output(self, container: ObservedContainer) -> bool:
        """Unhealthy and running, and its last check's output not yet inspected."""
        return (
            container.health is ContainerHealth.UNHEALTHY
            and container.phase is ContainerPhase.RUNNING
            and container.runtime_id not in self._health_output
        )

    def with_health_output(self, container: ObservedContainer) -> ObservedContainer:
        output = self._health_output.get(container.runtime_id, "")
        if container.health is not ContainerHealth.UNHEALTHY or not output:
            return container
        return replace(container, health_output=output)

    def inspected_health(self, container_id: str, state: Mapping[str, Any]) -> None:
        self._health_output[container_id] = health_output(state)

    # -- restarts in place -----------------------------------------------------

    def lacks_times(self, container: ObservedContainer) -> bool:
        """Exited (seen by its die event only) and its start and exit times not yet inspected."""
        return (
            container.phase is ContainerPhase.EXITED
            and not container.finished_at
            and container.runtime_id not in self._times
            and container.runtime_id not in self._finished  # inspected already
        )

    def inspected_times(self, container_id: str, state: Mapping[str, Any]) -> None:
        if state.get("Running"):
            # The die event predates the agent's own restart: the container runs again.
            self._deaths.pop(container_id, None)
            return
        self._times[container_id] = (unix_time(state.get("StartedAt")), unix_time(state.get("FinishedAt")))

    def with_lifecycle(self, container: ObservedContainer) -> ObservedContainer:
        """The container with its times and restart count; a refused restart reads as an exit
        that ran no time (never restarted again)."""
        started, finished = container.started_at, container.finished_at
        if container.phase is ContainerPhase.EXITED and not finished:
            started, finished = self._times.get(container.runtime_id, (0.0, 0.0))
        if container.runtime_id in self._restart_refused:
            started = finished
        return replace(
            container,
            started_at=started,
            finished_at=finished,
            restart_count=self._restarts.get(container.runtime_id, 0),
        )

    def restarted(self, node_id: str, container: ObservedContainer, since: int) -> None:
        """The agent started this exited container again (`since`: a mark taken before it asked
        the engine): forget the previous run's exit, count the restart. A death or an oom noted
        after the mark is the new run's and stays; `container` is what inspect showed after the
        start (`docker_lifecycle.after_start`), exited already if the new run died at once."""
        container_id = container.runtime_id
        death = self._deaths.get(container_id)
        if death is not None and death.noted_at < since:
            del self._deaths[container_id]
        if self._oom_killed.get(container_id, since) < since:
            del self._oom_killed[container_id]
        for facts in (self._finished, self._health, self._health_output, self._times):
            facts.pop(container_id, None)  # type: ignore[attr-defined]
        self._restarts[container_id] = self._restarts.get(container_id, 0) + 1
        self.started(node_id, container)

    def restart_refused(self, container_id: str) -> None:
        self._restart_refused.add(container_id)

    def __len__(self) -> int:
        return len(self._noted_at)


def task_addresses(summaries: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """IP address -> task id, from container list rows (only rows with a task id and an address)."""
    found: dict[str, str] = {}
    for summary in summaries:
        task_id = (summary.get("Labels") or {}).get(LABEL_TASK_ID)
        if not task_id:
            continue
        networks = (summary.get("NetworkSettings") or {}).get("Networks") or {}
        for network in networks.values():
            address = (network or {}).get("IPAddress")
            if address:
                found[str(address)] = str(task_id)
    return found
