"""Keeping a task's secret values out of what the agent says about the task.

The control plane sends a task's secret values to its node only: its
containers' `secrets`, environment files that are secrets, and log options
from an engine driver's `secretOptions`. The engine may quote a value it
refuses in its error (a log option it cannot parse, for one), and a start's
error becomes the task's stopped reason, which describe, events and both
daemons' logs show: so every resolved value is replaced before a reason
leaves the agent.
"""

from __future__ import annotations

from berth.v1 import agent_pb2 as agent_pb

REDACTED = "[secret]"


def without_secrets(text: str, assignment: agent_pb.TaskAssignment) -> str:
    """`text` with each of the assignment's resolved secret values replaced by REDACTED."""
    values = {
        pair.value
        for group in (
            *assignment.secret_environment,
            *assignment.environment_file_secrets,
            *assignment.log_secret_options,
        )
        for pair in group.environment
        if pair.value
    }
    # Longest first, so a value that contains another is replaced whole.
    for value in sorted(values, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return text
