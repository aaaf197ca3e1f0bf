"""A local lab of real hosts on one machine: `up N` / `down`.

Each host is a network namespace joined to a bridge, with its own address,
its own `dockerd` (own data root, exec root, socket and bridge subnet) and
its own `berth-agent`; the control plane (with its embedded etcd) runs in
the root namespace on the bridge's address. Daemons start inside a
namespace with `nsenter --net=...` (`ip netns exec` remounts /sys and
dockerd then cannot find its cgroups). Test images reach each engine with
`docker save | docker load`.

Everything the lab makes is named `berthlab*` and recorded in its state
directory, so `down` removes it all, even from another process.

    bash deploy/lab.sh up 3     # or: python -m berth.testing.lab up 3
    bash deploy/lab.sh up 3 --ha  # 3 etcd members, 3 control-plane replicas
    bash deploy/lab.sh down
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import docker

from berth.testing.daemons import AgentProcess, ControlPlaneProcess, Daemon, JoinFlags
from berth.testing.etcd_cluster import EtcdCluster

BRIDGE = "berthlab0"
# Host ends of the hosts' veth pairs: blab1, blab2, ...
VETH_PREFIX = "blab"
SUBNET = "10.213.0"  # the lab's own network: only its namespaces live here
BRIDGE_ADDRESS = f"{SUBNET}.1"
STATE_ROOT = Path("/var/lib/berthlab")
RUN_ROOT = Path("/run/berthlab")
IMAGES = ("berth-busybox:2",)
ZONES = ("a", "b", "c")
FORWARD_RULE = ["FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT"]


def _run(*command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, check=check, capture_output=True, text=True)


@dataclass
class LabHost:
    index: int
    control_plane: str
    agent_args: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"h{self.index}"

    @property
    def netns(self) -> str:
        return f"berthlab-{self.name}"

    @property
    def address(self) -> str:
        return f"{SUBNET}.{10 + self.index}"

    @property
    def veth(self) -> str:
        return f"{VETH_PREFIX}{self.index}"

    @property
    def zone(self) -> str:
        return ZONES[(self.index - 1) % len(ZONES)]

    @property
    def state_dir(self) -> Path:
        return STATE_ROOT / self.name

    @property
    def run_dir(self) -> Path:
        return RUN_ROOT / self.name

    @property
    def docker_url(self) -> str:
        return f"unix://{self.run_dir}/docker.sock"

    def nsenter(self) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.netns}"]

    # -- network -----------------------------------------------------------

    def create_network(self) -> None:
        # A namespace deleted while something still held it keeps its veth in
        # the root namespace for a while; a stale one must not stop this lab.
        _run("ip", "link", "delete", self.veth, check=False)
        _run("ip", "netns", "add", self.netns)
        _run("ip", "link", "add", self.veth, "type", "veth", "peer", "name", "eth0", "netns", self.netns)
        _run("ip", "link", "set", self.veth, "master", BRIDGE, "up")
        inside = ["ip", "netns", "exec", self.netns]
        _run(*inside, "ip", "addr", "add", f"{self.address}/24", "dev", "eth0")
        _run(*inside, "ip", "link", "set", "eth0", "up")
        _run(*inside, "ip", "link", "set", "lo", "up")
        _run(*inside, "ip", "route", "add", "default", "via", BRIDGE_ADDRESS)

    def cut(self) -> None:
        """Cut the host off the network, as a failed link or switch port would."""
        _run("ip", "link", "set", self.veth, "down")

    def reconnect(self) -> None:
        _run("ip", "link", "set", self.veth, "up")

    # -- daemons -------------------------------------------------------------

    def dockerd(self) -> Daemon:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        command = [
            *self.nsenter(),
            "dockerd",
            "--host",
            self.docker_url,
            "--data-root",
            str(self.state_dir / "docker"),
            "--exec-root",
            str(self.run_dir / "exec"),
            "--pidfile",
            str(self.run_dir / "docker.pid"),
            "--bip",
            f"172.30.{self.index}.1/24",
            "--cgroup-parent",
            f"/berthlab-{self.name}",
            "--containerd-namespace",
            f"berthlab-{self.name}",
            "--containerd-plugins-namespace",
            f"berthlab-{self.name}-plugins",
        ]
        return Daemon(f"dockerd-{self.name}", command, self.state_dir / "dockerd.log")

    def wait_docker(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                client = docker.DockerClient(base_url=self.docker_url)
                client.ping()
                client.close()
                return
            time.sleep(0.2)
        log = (self.state_dir / "dockerd.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"dockerd of {self.name} did not start:\n{log}")

    def load_images(self) -> None:
        for image in IMAGES:
            saved = subprocess.run(["docker", "save", image], check=True, capture_output=True)
            subprocess.run(
                ["docker", "-H", self.docker_url, "load"], input=saved.stdout, check=True, capture_output=True
            )

    def agent(self, join: JoinFlags) -> AgentProcess:
        """The host's agent, joining (the first time) with `join`'s flags, as the install script does."""
        process = AgentProcess(
            self.state_dir / "agent",
            self.control_plane,
            ["--name", self.name, "--attribute", f"zone={self.zone}", *self.agent_args],
            docker_url=self.docker_url,
            address=self.address,
            join=join,
        )
        process.command = [*self.nsenter(), *process.command]
        return process


class Lab:
    """N hosts and a control plane; `up()` and `down()` (idempotent).

    HA mode (`replicas=3, etcd_members=3`): a real etcd cluster of its own
    (`etcd`, members on loopback with TLS) and several control-plane
    replicas on the bridge's address, each on its own ports, sharing one
    PKI (the first replica's, copied to the others before they start). Every
    agent is given every replica's address and join listener.
    `controlplane` is the first replica, for callers that know only one.
    """

    def __init__(
        self,
        hosts: int,
        controlplane_args: tuple[str, ...] = (),
        agent_args: tuple[str, ...] = (),
        replicas: int = 1,
        etcd_members: int = 0,
    ):
        if replicas < 1:
            raise ValueError("a lab needs at least one control-plane replica")
        if replicas > 1 and etcd_members < 1:
            raise ValueError("several replicas share an etcd cluster: give etcd_members too")
        self.count = hosts
        self.etcd: EtcdCluster | None = (
            EtcdCluster(STATE_ROOT / "etcd", etcd_members) if etcd_members > 0 else None
        )
        etcd_args = self.etcd.controlplane_args() if self.etcd is not None else []
        self.replicas = [
            ControlPlaneProcess(
                STATE_ROOT / ("controlplane" if index == 0 else f"controlplane{index}"),
                [*controlplane_args, *etcd_args],
                listen=f"{BRIDGE_ADDRESS}:0",
            )
            for index in range(replicas)
        ]
        for index, replica in enumerate(self.replicas):
            replica.name = "controlplane" if index == 0 else f"controlplane{index}"
        self.controlplane = self.replicas[0]
        self.hosts = [LabHost(i, self.server, agent_args) for i in range(1, hosts + 1)]
        self.dockerds: dict[str, Daemon] = {}
        self.agents: dict[str, AgentProcess] = {}

    @property
    def server(self) -> str:
        """Every replica's API address, as agents and the CLI take them (A,B,C)."""
        return ",".join(replica.address for replica in self.replicas)

    @property
    def join_server(self) -> str:
        """Every replica's join listener (A,B,C)."""
        return ",".join(replica.join_address for replica in self.replicas)

    def host(self, name: str) -> LabHost:
        return next(h for h in self.hosts if h.name == name)

    def up(self) -> None:
        down()  # leftovers of an interrupted run
        STATE_ROOT.mkdir(parents=True, exist_ok=True)
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
        _run("ip", "addr", "add", f"{BRIDGE_ADDRESS}/24", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")
        # Docker's FORWARD policy would drop traffic bridged between hosts.
        _run("iptables", "-I", *FORWARD_RULE)
        for host in self.hosts:
            host.create_network()
        if self.etcd is not None:
            self.etcd.start()
            self._save_state()
        self.start_replicas()
        for host in self.hosts:
            self.dockerds[host.name] = host.dockerd()
            self.dockerds[host.name].start()
        for host in self.hosts:
            host.wait_docker()
            host.load_images()
        for host in self.hosts:
            self.start_agent(host.name)
        for host in self.hosts:
            self.agents[host.name].wait_registered()
        self._save_state()

    def start_replicas(self) -> None:
        """The first replica makes the cluster's PKI; the others start with a copy of it."""
        first = self.replicas[0]
        first.start()
        self._save_state()
        for replica in self.replicas[1:]:
            pki_dir = replica.data_dir / "pki"
            if not pki_dir.exists():
                replica.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                shutil.copytree(first.data_dir / "pki", pki_dir)
            replica.start()
            self._save_state()

    def leader(self, timeout: float = 30) -> ControlPlaneProcess:
        """The live replica that holds the leader key now (waits up to `timeout` for one)."""
        if self.etcd is None:
            return self.controlplane  # one replica, on its embedded etcd
        return self.etcd.leading_replica(self.replicas, timeout)

    def start_agent(self, name: str) -> AgentProcess:
        # Each host joins with a single-use token of its own, as a new VM would.
        agent = self.agents.get(name)
        if agent is None:
            token, ca_hash = self.controlplane.create_join_token(uses=1)
            agent = self.host(name).agent(JoinFlags(token, ca_hash, self.join_server))
        agent.start()
        self.agents[name] = agent
        self._save_state()
        return agent

    def _daemons(self) -> list[Daemon]:
        members: list[Daemon] = list(self.etcd.members) if self.etcd is not None else []
        return [*self.dockerds.values(), *self.agents.values(), *self.replicas, *members]

    def _save_state(self) -> None:
        pids = [d.process.pid for d in self._daemons() if d.process is not None]
        (STATE_ROOT / "state.json").write_text(json.dumps({"pids": pids, "hosts": self.count}))

    def down(self) -> None:
        down()
        # Reap our own children (down() signalled them).
        for daemon in self._daemons():
            daemon.stop(timeout=10)


def _kill_groups(pids: list[int], timeout: float = 10.0) -> None:
    """SIGTERM every process group at once, wait, then SIGKILL what is left."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if Path(f"/proc/{pid}").exists() and not _is_zombie(pid)]
        time.sleep(0.1)
    for pid in alive:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def down() -> None:
    """Remove everything a lab made: containers, daemons, namespaces, bridge, state."""
    namespaces = [line.split()[0] for line in _run("ip", "netns", "list", check=False).stdout.splitlines()]
    lab_namespaces = [n for n in namespaces if n.startswith("berthlab-")]
    for namespace in lab_namespaces:
        socket = RUN_ROOT / namespace.removeprefix("berthlab-") / "docker.sock"
        if socket.exists():
            with contextlib.suppress(Exception):
                client = docker.DockerClient(base_url=f"unix://{socket}", timeout=10)
                for container in client.containers.list(all=True):
                    container.remove(force=True)
                client.close()
    state = STATE_ROOT / "state.json"
    if state.exists():
        _kill_groups(json.loads(state.read_text()).get("pids", []))
    # Anything still running inside a lab namespace (dockerd's containerd, shims).
    for namespace in lab_namespaces:
        for pid in _run("ip", "netns", "pids", namespace, check=False).stdout.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
    for namespace in lab_namespaces:
        _run("ip", "netns", "delete", namespace, check=False)
    # A veth goes with its namespace only once nothing holds the namespace
    # any more; take the host ends off explicitly.
    for line in _run("ip", "-o", "link", "show", check=False).stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0] if line.count(":") >= 2 else ""
        if name.startswith(VETH_PREFIX):
            _run("ip", "link", "delete", name, check=False)
    _run("ip", "link", "delete", BRIDGE, check=False)
    while _run("iptables", "-C", *FORWARD_RULE, check=False).returncode == 0:
        _run("iptables", "-D", *FORWARD_RULE, check=False)
    for root in (RUN_ROOT, STATE_ROOT):
        if root.exists():
            _unmount_under(root)
            shutil.rmtree(root, ignore_errors=True)


def _unmount_under(root: Path) -> None:
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(str(root))), key=len, reverse=True):
        _run("umount", "-l", mount, check=False)


def instructions(server: str, config: Path) -> list[str]:
    """What `up` prints after the hosts: the commands README's lab section uses."""
    return [
        f"export BERTH_SERVER={server} BERTH_CONFIG={config}",
        "remove it with: bash deploy/lab.sh down",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="berth-lab", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up_parser = commands.add_parser("up", help="create N hosts and a control plane")
    up_parser.add_argument("hosts", type=int, nargs="?", default=3)
    up_parser.add_argument(
        "--ha", action="store_true", help="3 etcd members and 3 control-plane replicas instead of one"
    )
    commands.add_parser("down", help="remove everything the lab made")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("error: the lab needs root (network namespaces, dockerd)")
    if args.command == "down":
        down()
        print("lab removed")
        return
    lab = Lab(args.hosts, replicas=3, etcd_members=3) if args.ha else Lab(args.hosts)
    lab.up()
    # The daemons live on after this process: `down` finds them by their pids.
    print(
        f"lab up: {args.hosts} hosts ({', '.join(f'{h.name}={h.address} zone {h.zone}' for h in lab.hosts)})"
    )
    if lab.etcd is not None:
        print(f"HA: {len(lab.replicas)} control-plane replicas, etcd members {','.join(lab.etcd.endpoints)}")
    for line in instructions(lab.server, lab.controlplane.admin_config):
        print(line)


if __name__ == "__main__":
    main()
