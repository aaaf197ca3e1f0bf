"""Victims: small named things the chaos test kills with SIGKILL (or cuts off) and brings back.

Each victim has a name ("agent-h2"), `kill()` and `restart()`; `restart()` returns once the
victim is back (a control plane answers, an agent is connected, an engine answers). The victims of
a lab are found by `victims_of`: the control plane, every agent, every host as a whole (its agent,
its engine and its containers killed, as a power cut would; or its network cut) and, when the lab
is highly available (`lab.replicas`, `lab.etcd`), the leader, a follower replica and each etcd
member.

The host whose netns runs the VIP client is never crashed or cut as a whole (the client would die
with it, which says nothing about Berth); its agent still is.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from berth.testing.daemons import ControlPlaneProcess
from berth.testing.etcd_cluster import EtcdCluster, EtcdMember
from berth.testing.lab import Lab, LabHost

CGROUP_ROOT = Path("/sys/fs/cgroup")


class Victim(Protocol):
    @property
    def name(self) -> str: ...

    def kill(self) -> str:
        """Kill it; a few words on what was killed (for the report)."""

    def restart(self) -> None:
        """Bring it back and return once it serves again."""


@dataclass
class ControlPlaneVictim:
    """The only control plane (and, as a child, its embedded etcd)."""

    plane: ControlPlaneProcess
    name: str = "controlplane"

    def kill(self) -> str:
        self.plane.kill9()
        return "control plane"

    def restart(self) -> None:
        self.plane.restart()


@dataclass
class AgentVictim:
    lab: Lab
    host: str

    @property
    def name(self) -> str:
        return f"agent-{self.host}"

    def kill(self) -> str:
        self.lab.agents[self.host].kill9()
        return f"agent of {self.host}"

    def restart(self) -> None:
        self.lab.start_agent(self.host).wait_registered(timeout=60)


@dataclass
class HostCrashVictim:
    """A host losing power: its agent, its engine and every container process die at once.
    (Containers' shims outlive it, as they do dockerd's own crash; the processes they ran do not.)"""

    lab: Lab
    host: str

    @property
    def name(self) -> str:
        return f"crash-{self.host}"

    def kill(self) -> str:
        self.lab.agents[self.host].kill9()
        self._kill_engine()
        killed = kill_containers(self.lab.host(self.host))
        return f"{self.host}'s agent, engine and {killed} container processes"

    def restart(self) -> None:
        host = self.lab.host(self.host)
        self.lab.dockerds[self.host].start()
        try:
            # Sooner than the lab's 60 s: a dockerd that did not start in 20 is tried again.
            host.wait_docker(timeout=20)
        except RuntimeError:
            # Leave nothing half-started for the next try.
            self._kill_engine()
            raise
        self.lab.start_agent(self.host).wait_registered(timeout=60)

    def _kill_engine(self) -> None:
        """dockerd and the containerd it started (by the pid file in its exec root): a containerd
        outliving its dockerd would keep the next dockerd from starting its own."""
        self.lab.dockerds[self.host].kill9()
        pid_file = self.lab.host(self.host).run_dir / "exec" / "containerd" / "containerd.pid"
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text().strip())
            os.kill(pid, signal.SIGKILL)
            # Dead (a zombie at most) before a new dockerd starts its own on the same socket.
            deadline = time.monotonic() + 10
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)


@dataclass
class HostCutVictim:
    """A host whose link goes down (a switch port, a partition): everything on it keeps running."""

    lab: Lab
    host: str

    @property
    def name(self) -> str:
        return f"cut-{self.host}"

    def kill(self) -> str:
        self.lab.host(self.host).cut()
        return f"{self.host}'s network"

    def restart(self) -> None:
        self.lab.host(self.host).reconnect()


@dataclass
class ReplicaVictim:
    """A control-plane replica of an HA lab, chosen when killed: the leader, or a follower."""

    lab: Lab  # an HA lab: more than one replica
    leader: bool
    rng: random.Random
    _killed: ControlPlaneProcess | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return "leader" if self.leader else "follower"

    def kill(self) -> str:
        leader: ControlPlaneProcess = self.lab.leader()
        replicas: list[ControlPlaneProcess] = self.lab.replicas
        chosen = leader if self.leader else self.rng.choice([r for r in replicas if r is not leader])
        chosen.kill9()
        self._killed = chosen
        return f"replica {replicas.index(chosen)} ({'leader' if chosen is leader else 'follower'})"

    def restart(self) -> None:
        assert self._killed is not None, "restart before kill"
        self._killed.restart()
        self._killed = None


@dataclass
class EtcdMemberVictim:
    """One member of an HA lab's etcd cluster (berth.testing.etcd_cluster)."""

    cluster: EtcdCluster
    member: EtcdMember

    @property
    def name(self) -> str:
        return f"etcd-{self.member.name}"

    def kill(self) -> str:
        self.member.kill9()
        return f"etcd member {self.member.name}"

    def restart(self) -> None:
        self.member.start()
        self.cluster.wait_healthy(60, [self.member])


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def kill_containers(
    host: LabHost, kill: Callable[[int, int], None] = os.kill, cgroups: Path = CGROUP_ROOT
) -> int:
    """SIGKILL every process in the host's containers (found in the cgroups under the lab's
    --cgroup-parent, so nothing else on the machine is touched); how many were killed."""
    pids: set[int] = set()
    # cgroup v1 lists the same processes under each controller.
    for procs in cgroups.glob(f"*/berthlab-{host.name}/**/cgroup.procs"):
        with contextlib.suppress(OSError):
            pids.update(int(line) for line in procs.read_text().split())
    for pid in sorted(pids):
        with contextlib.suppress(ProcessLookupError):
            kill(pid, signal.SIGKILL)
    return len(pids)


def victims_of(lab: Lab, client_host: str, rng: random.Random) -> list[Victim]:
    """Every victim the lab offers (see the module's docstring)."""
    victims: list[Victim] = []
    if len(lab.replicas) > 1:
        victims += [ReplicaVictim(lab, leader=True, rng=rng), ReplicaVictim(lab, leader=False, rng=rng)]
    else:
        victims.append(ControlPlaneVictim(lab.controlplane))
    if lab.etcd is not None:
        victims += [EtcdMemberVictim(lab.etcd, member) for member in lab.etcd.members]
    for host in lab.hosts:
        victims.append(AgentVictim(lab, host.name))
        if host.name != client_host:
            victims += [HostCrashVictim(lab, host.name), HostCutVictim(lab, host.name)]
    return victims
