"""Carries out the reconciler's plans against a task driver.

One loop: wake on a new desired state, a change to one of this node's tasks
(the driver's per-node feed, followed from the moment the node id is known
and re-opened if it changes) or a periodic resync; observe; plan; launch
each action as its own asyncio task (a task id is busy until its action
ends, so no two actions on one task overlap). A start still in flight
(waiting on a dependency) is cancelled as soon as a snapshot says the task
is to stop or no longer holds it; the driver then removes what the start
made, and the next pass stops or forgets the task as usual.
A STOPPED report carries the last lines of the container that explains
the stop (`agent.logs.kept_output`), read once before the containers go.
Status reports go to whatever sink the current control-plane session set;
with no session they are dropped, and re-sent once a fresh snapshot shows
the control plane still lacks them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from agent import logs, reconciler
from agent.metrics import TASK_START_FAILURES, TASKS_OBSERVED, TASKS_STARTED
from agent.reconciler import Remove, Report, Restart, Start, Stop
from agent.redaction import without_secrets
from agent.runtime.driver import ObservedTask, StartFailed, TaskDriver
from berth.errors import Unavailable
from berth.taskdef_lifecycle import restart_total
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb

log = logging.getLogger(__name__)

ReportSink = Callable[[agent_pb.TaskStatusReport], None]


# A report the control plane has not recorded yet goes again only at a newer revision of the
# desired state and this long after it was last sent: a retry for a report that was lost (a
# replica's status writer gave up on etcd), not one per revision. While a burst of placements
# sends a host delta after delta, its reports are still on their way: resending each at every
# revision made five reports per task at 1,000 hosts (52,000 for 10,000 tasks), the control
# plane's busiest work. A new stream (another replica) gets every report again at once.
RESEND_AFTER = 2.0


@dataclass(frozen=True)
class _Sent:
    key: tuple[int, int, int]  # (status, health, restarts)
    revision: int  # of the desired state when sent
    at: float  # monotonic


class TaskSupervisor:
    def __init__(self, driver: TaskDriver, node_id: str = "", resync_interval: float = 30.0) -> None:
        self.driver = driver
        self._node_id = node_id
        self._node_changed = asyncio.Event()
        self._resync_interval = resync_interval
        self._desired: dict[str, agent_pb.TaskAssignment] | None = None
        self._revision = 0
        self._busy: set[str] = set()
        self._failed_starts: dict[str, agent_pb.TaskStatusReport] = {}
        # What was last reported per task: a change at once, a resend per RESEND_AFTER.
        self._reported: dict[str, _Sent] = {}
        self._sink: ReportSink | None = None
        # Last lines read from a stopped task's containers, so a re-report does not read again.
        self._kept: dict[str, pb.KeptOutput] = {}
        self._wake = asyncio.Event()
        self._actions: set[asyncio.Task[None]] = set()
        self._starts: dict[str, asyncio.Task[None]] = {}  # task id -> its Start in flight
        self.observed: dict[str, ObservedTask] = {}

    # -- inputs --------------------------------------------------------------

    def set_desired(self, state: agent_pb.DesiredState) -> None:
        self._desired = {a.task_id: a for a in state.tasks}
        self._revision = state.revision
        for task_id in list(self._failed_starts):
            if task_id not in self._desired:
                del self._failed_starts[task_id]
        for task_id in list(self._kept):
            if task_id not in self._desired:
                del self._kept[task_id]
        for task_id, start in list(self._starts.items()):
            wanted = self._desired.get(task_id)
            if wanted is None or wanted.desired_status == pb.DESIRED_STOPPED:
                log.info("event=task_start_cancelled task=%s", task_id)
                start.cancel()
        self._wake.set()

    def attach(self, sink: ReportSink) -> None:
        self._sink = sink
        self._reported.clear()
        self._wake.set()

    def detach(self) -> None:
        self._sink = None

    def wake(self) -> None:
        self._wake.set()

    def assignment(self, task_id: str) -> agent_pb.TaskAssignment | None:
        """The task as the latest snapshot assigns it to this host."""
        return (self._desired or {}).get(task_id)

    @property
    def node_id(self) -> str:
        return self._node_id

    @node_id.setter
    def node_id(self, value: str) -> None:
        """Set by the session once registered (again after a re-registration)."""
        if value != self._node_id:
            self._node_id = value
            self._node_changed.set()
            self._wake.set()

    # -- loops ---------------------------------------------------------------

    async def run(self) -> None:
        watcher = asyncio.create_task(self._watch_runtime(), name="runtime-changes")
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._resync_interval)
                self._wake.clear()
                try:
                    await self.reconcile_once()
                except Unavailable as error:
                    log.warning("event=reconcile_failed error=%r", str(error))
                    await asyncio.sleep(1.0)
                    self._wake.set()
        finally:
            watcher.cancel()
            for action in list(self._actions):
                action.cancel()
            await asyncio.gather(watcher, *self._actions, return_exceptions=True)

    async def _watch_runtime(self) -> None:
        """Follows the change feed of the current node; re-opens it when the node id changes."""
        while True:
            self._node_changed.clear()
            node_id = self._node_id
            if not node_id:
                await self._node_changed.wait()
                continue
            feed = asyncio.create_task(self._follow(node_id), name=f"runtime-changes-{node_id}")
            renamed = asyncio.create_task(self._node_changed.wait())
            done, _ = await asyncio.wait({feed, renamed}, return_when=asyncio.FIRST_COMPLETED)
            # Cancelling the follower unwinds the driver's feed (closing its subscription).
            for waiter in (feed, renamed):
                waiter.cancel()
            await asyncio.gather(feed, renamed, return_exceptions=True)
            if renamed not in done:
                error = None if feed.cancelled() else feed.exception()
                if error is not None:
                    log.error("event=runtime_changes_failed node=%s error=%r", node_id, str(error))
                return  # the feed ended by itself: rely on the periodic resync from now on

    async def _follow(self, node_id: str) -> None:
        async for _task_id in self.driver.changes(node_id):
            self._wake.set()

    async def reconcile_once(self) -> None:
        if not self.node_id:
            return  # not registered yet: we cannot tell our containers from others'
        self.observed = await self.driver.list_tasks(self.node_id)
        TASKS_OBSERVED.set(len(self.observed))
        actions = reconciler.plan(self._desired, self.observed, self._busy, self._failed_starts)
        for action in actions:
            if isinstance(action, Report):
                if self._due(action.report):
                    await self._keep_output(action.report)
                self._send(action.report)
            else:
                self._launch(action)

    # -- actions -------------------------------------------------------------

    def _due(self, report: agent_pb.TaskStatusReport) -> bool:
        if self._sink is None:
            return False
        sent = self._reported.get(report.task_id)
        if sent is None or sent.key != self._key(report):
            return True
        # Still not recorded: once per newer revision of the desired state, not faster than RESEND_AFTER.
        return sent.revision != self._revision and time.monotonic() - sent.at >= RESEND_AFTER

    def _key(self, report: agent_pb.TaskStatusReport) -> tuple[int, int, int]:
        return (report.last_status, report.health_status, restart_total(report.containers))

    async def _keep_output(self, report: agent_pb.TaskStatusReport) -> None:
        """Attach a stopped task's last lines while its containers still exist."""
        if report.last_status != pb.STOPPED:
            return
        kept = self._kept.get(report.task_id)
        if kept is None:
            container = logs.kept_container(
                self.observed.get(report.task_id), self.assignment(report.task_id)
            )
            if container is None:
                return
            kept = await logs.kept_output(self.driver, container)
            if kept is None:
                return
            self._kept[report.task_id] = kept
        report.kept_output.CopyFrom(kept)

    def _send(self, report: agent_pb.TaskStatusReport) -> None:
        if not self._due(report):
            return
        self._reported[report.task_id] = _Sent(self._key(report), self._revision, time.monotonic())
        assert self._sink is not None
        self._sink(report)

    def _launch(self, action: Start | Stop | Remove | Restart) -> None:
        self._busy.add(action.task_id)
        running = asyncio.create_task(self._perform(action), name=f"{type(action).__name__}-{action.task_id}")
        self._actions.add(running)
        running.add_done_callback(self._actions.discard)
        if isinstance(action, Start):
            self._starts[action.task_id] = running
            running.add_done_callback(lambda done: self._start_ended(action.task_id, done))

    def _start_ended(self, task_id: str, start: asyncio.Task[None]) -> None:
        if self._starts.get(task_id) is start:
            del self._starts[task_id]

    async def _perform(self, action: Start | Stop | Remove | Restart) -> None:
        task_id = action.task_id
        try:
            if isinstance(action, Start):
                assert self._desired is not None
                assignment = self._desired.get(task_id)
                if assignment is None:
                    return
                log.info("event=task_starting task=%s service=%s", task_id, assignment.service or "-")
                try:
                    if assignment.secrets_error:
                        # The control plane could not resolve its secrets (ECS: unable to pull secrets).
                        raise StartFailed(assignment.secrets_error)
                    await self.driver.start_task(assignment, self.node_id)
                    TASKS_STARTED.inc()
                except StartFailed as error:
                    TASK_START_FAILURES.inc()
                    # The engine may quote a value it refused, and a secretOption's is a secret.
                    reason = without_secrets(str(error), assignment)
                    log.warning("event=task_start_failed task=%s reason=%r", task_id, reason)
                    failure = reconciler.report(task_id, pb.STOPPED, None, pb.TASK_FAILED_TO_START, reason)
                    self._failed_starts[task_id] = failure
            elif isinstance(action, Restart):
                for runtime_id in action.runtime_ids:
                    log.info("event=container_restarting task=%s container=%s", task_id, runtime_id[:12])
                    await self.driver.restart_container(task_id, runtime_id)
            elif isinstance(action, Stop):
                log.info("event=task_stopping task=%s timeout=%ds", task_id, action.timeout)
                await self.driver.stop_task(task_id, action.timeout)
            else:
                log.info("event=task_removing task=%s", task_id)
                await self.driver.remove_task(task_id, action.timeout)
        except Unavailable as error:
            log.warning(
                "event=action_failed action=%s task=%s error=%r", type(action).__name__, task_id, str(error)
            )
        except Exception:
            log.exception("event=action_crashed action=%s task=%s", type(action).__name__, task_id)
        finally:
            self._busy.discard(task_id)
            self._wake.set()
