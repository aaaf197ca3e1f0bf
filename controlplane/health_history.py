"""A task's health history: the newest changes of its containers' health, in its own record.

Issue 9 keeps a stopped task's health history as long as its exit code and stop reason
(the stopped-task retention), so "why was it replaced?" has an answer days later. The
history rides in the task's etcd record (`Task.health_history`): it costs no write of its
own (it is appended in the write that records the agent's report), survives a control-plane
restart, and goes with the record when the stopped task is purged.

Pure functions over messages; `lifecycle.apply_report` calls `record`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from google.protobuf.timestamp_pb2 import Timestamp

from berth.v1 import resources_pb2 as pb

# Changes kept per task, the newest. Nothing replaces a one-off task whose check flaps
# (HEALTHY, UNHEALTHY, HEALTHY ...), nor a task whose container its restartPolicy restarts
# in place (HEALTHY, UNKNOWN, HEALTHY ...), so without a bound its record would grow for
# as long as it runs. Ten show the pattern and the latest turns, and cap the growth at
# about 10 x (MAX_OUTPUT + 50) bytes per task: a status batch of 100 reports stays far
# below etcd's request limit (1.5 MiB).
HISTORY_LENGTH = 10

# Characters of a failed check's output kept per change: the agent's own bound on
# ContainerState.health_output (agent/runtime/docker_state.MAX_HEALTH_OUTPUT), enforced
# again here because the boundary allows an agent a longer reason.
MAX_OUTPUT = 200


def _output(container: pb.ContainerState) -> str:
    """The failed check's output as one short line (empty unless UNHEALTHY)."""
    if container.health_status != pb.UNHEALTHY:
        return ""
    lines = container.health_output.splitlines()
    line = lines[0].strip() if lines else ""
    return line if len(line) <= MAX_OUTPUT else line[: MAX_OUTPUT - 3] + "..."


def changes(
    recorded: Iterable[pb.ContainerState], reported: Iterable[pb.ContainerState], at: Timestamp
) -> list[pb.HealthChange]:
    """One change per reported container whose health differs from the recorded one.

    A container not recorded yet counts as HEALTH_UNKNOWN (its check has not run), so a
    container without a check never shows up, and one starting up shows up when its first
    check decides.
    """
    before = {c.name: c.health_status for c in recorded}
    found = []
    for container in reported:
        if container.health_status == before.get(container.name, pb.HEALTH_UNKNOWN):
            continue
        change = pb.HealthChange(container=container.name, status=container.health_status)
        change.at.CopyFrom(at)
        change.output = _output(container)
        found.append(change)
    return found


def appended(
    history: Sequence[pb.HealthChange], new: Sequence[pb.HealthChange], limit: int = HISTORY_LENGTH
) -> list[pb.HealthChange]:
    """history followed by new, keeping only the newest `limit` changes (oldest first)."""
    kept = [*history, *new]
    return kept[-limit:] if limit > 0 else []


def record(task: pb.Task, reported: Iterable[pb.ContainerState], at: Timestamp) -> None:
    """Append to `task.health_history` the changes from its recorded containers to `reported`.

    Call it before `task.containers` is replaced with the reported ones.
    """
    new = changes(task.containers, reported, at)
    if not new:
        return
    kept = appended(task.health_history, new)
    del task.health_history[:]
    task.health_history.extend(kept)
