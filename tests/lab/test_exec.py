"""`berth exec` on the lab's hosts (each its own netns, dockerd and agent; run under
`flock /tmp/berth-docker.lock`): a command runs in a task's container on every host and
returns its output and exit code; a viewer is refused and the audit log shows both."""

from __future__ import annotations

import json
from pathlib import Path

from berth.testing.cli import Berth, id_of, node_of
from berth.testing.lab import Lab
from berth.testing.waiting import wait_until
from tests.lab.conftest import delete_services

WHERE = [
    {
        "name": "app",
        "image": "berth-busybox:2",
        "cpu": 64,
        "memory": 32,
        "stopTimeout": 2,
        "entryPoint": ["sh", "-c"],
        "command": ["trap 'exit 0' TERM; while true; do sleep 0.5; done"],
    }
]


def test_exec_runs_in_a_container_on_every_host_and_a_viewer_is_refused(
    berth: Berth, lab: Lab, tmp_path: Path
) -> None:
    berth.register("where", WHERE, tmp_path)
    berth.ok(
        "service", "create", "--name", "where", "--task-definition", "where", "--desired-count", "3",
        "--placement-strategy", "type=spread,field=instanceId",
    )  # fmt: skip
    try:
        running = wait_until(lambda: berth.running_exactly("default", 3, "where"), 60, "3 tasks RUNNING")[0]
        assert len({node_of(t) for t in running}) == 3
        for task in running:
            # The container's hostname is its id on its host's own engine.
            result = berth("exec", id_of(task), "--", "sh", "-c", "hostname; exit 7")
            assert result.exit_code == 7, result.stderr
            hostname = result.stdout.strip()
            on_hosts = {
                host.name: [
                    c.id
                    for c in lab.agents[host.name].containers()
                    if c.labels["berth.task-id"] == id_of(task)
                ]
                for host in lab.hosts
            }
            (host,) = [name for name, ids in on_hosts.items() if ids]
            assert on_hosts[host][0].startswith(hostname), (host, hostname)

        berth.ok("user", "create", "val", "--role", "viewer", "--out", str(tmp_path / "val"))
        viewer = Berth(lab.controlplane.address, tmp_path / "val")
        viewer("exec", id_of(running[0]), "--", "id").assert_refused("user val (viewer) may not Exec")
        audit = [
            json.loads(line) for line in (lab.controlplane.data_dir / "audit.log").read_text().splitlines()
        ]
        execs = [e for e in audit if e["call"] == "Exec"]
        assert any(e["user"] == "val" and e["result"].startswith("denied") for e in execs)
        assert sum(e["result"] == "ok: exit code 7" for e in execs) == 3
    finally:
        delete_services(berth, ["where"])
