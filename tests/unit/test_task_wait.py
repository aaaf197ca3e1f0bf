"""`berth task run --wait`: a stopped task's outcome as one line and a process exit code."""

from __future__ import annotations

import pytest

from berth.cli.tasks import _outcome
from berth.v1 import resources_pb2 as pb


def _stopped(stop_code: pb.StopCode.ValueType, reason: str, exit_code: int | None) -> pb.Task:
    task = pb.Task(id="t1", last_status=pb.STOPPED, stop_code=stop_code, stopped_reason=reason)
    if exit_code is not None:
        task.has_exit_code, task.exit_code = True, exit_code
    return task


@pytest.mark.parametrize(
    ("task", "code", "line"),
    [
        (_stopped(pb.ESSENTIAL_CONTAINER_EXITED, "Essential container exited", 0), 0, "exit code 0"),
        (_stopped(pb.ESSENTIAL_CONTAINER_EXITED, "", 7), 7, "EssentialContainerExited; exit code 7"),
        (_stopped(pb.USER_INITIATED, "done", 143), 143, "UserInitiated: done; exit code 143"),
        (_stopped(pb.TASK_FAILED_TO_START, "no such image", None), 1, "failed to start (TaskFailedToStart"),
        (_stopped(pb.TASK_FAILED_TO_START, "x", 0), 1, "failed to start"),
        (_stopped(pb.NODE_LOST, "node gone", None), 1, "without an exit code (NodeLost: node gone)"),
        # Exit codes outside 0-255 would wrap (256 -> 0): they exit 1.
        (_stopped(pb.ESSENTIAL_CONTAINER_EXITED, "", 256), 1, "exit code 256"),
        (_stopped(pb.ESSENTIAL_CONTAINER_EXITED, "", -1), 1, "exit code -1"),
    ],
)
def test_the_outcome_says_how_the_task_stopped_and_exits_with_its_code(
    task: pb.Task, code: int, line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _outcome(task) == code
    printed = capsys.readouterr()
    failed = task.stop_code == pb.TASK_FAILED_TO_START or not task.has_exit_code
    assert line in (printed.err if failed else printed.out)
