"""Watching the engines during the chaos: a task must never run twice, not even for a moment.

A task id is placed on one node once and never moves, so the same id running on two hosts (or in
two containers on one) at any instant is a duplicate, whatever the control plane believes. The
watcher sweeps every host's engine about once a second while the chaos runs (an engine that is
down or cut off is skipped for that sweep) and keeps every duplicate it sees.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import docker

from berth.testing.chaos.invariants import LABEL_TASK_ID
from berth.testing.lab import Lab

SWEEP_INTERVAL = 1.0


class DuplicateWatcher(threading.Thread):
    def __init__(self, lab: Lab, longest: float) -> None:
        super().__init__(name="duplicate-watcher", daemon=True)
        self.lab = lab
        self.longest = longest
        self.sweeps = 0
        # "task T on h1, h2" lines, each once.
        self.duplicates: list[str] = []
        self.error = ""
        self._stopping = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + self.longest
        try:
            while not self._stopping.is_set() and time.monotonic() < deadline:
                self._sweep()
                self._stopping.wait(SWEEP_INTERVAL)
        except BaseException as error:  # handed to the run: a dead watcher must fail it
            self.error = f"the duplicate watcher died: {type(error).__name__}: {error}"

    def _sweep(self) -> None:
        seen: Counter[tuple[str, str]] = Counter()
        for host in self.lab.hosts:
            try:
                # A client per sweep: making one asks the engine its API version, and the
                # engine may be the one the chaos took down.
                engine = docker.DockerClient(base_url=host.docker_url, timeout=3)
                try:
                    listed = engine.api.containers(filters={"label": LABEL_TASK_ID, "status": "running"})
                finally:
                    engine.close()
            except Exception:  # an engine down or cut off (docker's and requests' errors alike): skipped
                continue
            for summary in listed:
                seen[((summary.get("Labels") or {})[LABEL_TASK_ID], host.name)] += 1
        hosts: dict[str, list[str]] = {}
        for (task_id, host_name), count in seen.items():
            hosts.setdefault(task_id, []).extend([host_name] * count)
        for task_id, where in sorted(hosts.items()):
            line = f"task {task_id} ran {len(where)} times at once (on {', '.join(sorted(where))})"
            if len(where) > 1 and line not in self.duplicates:
                self.duplicates.append(line)
        self.sweeps += 1

    def stop(self) -> None:
        self._stopping.set()
        self.join(15)
