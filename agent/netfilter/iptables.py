"""Applies Berth's rules with iptables-restore, atomically, touching only Berth's chains.

Order of work on every change: route the service CIDR locally (so a packet
for a VIP never leaves the host, even before rules exist), apply the whole
batch in one `iptables-restore --noflush`, make sure the jumps from the
built-in chains are in place, then delete conntrack entries of endpoints
that went away (UDP flows would otherwise stick to a dead endpoint). Any
failure, or a canary rule gone missing (someone flushed the table), makes
the next round a full resync.

Every program runs through a `ProgramRunner` given to the constructor (the
real one by default), so this logic is unit-tested against a fake.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import time

from agent.metrics import RULES_APPLY_SECONDS
from agent.netfilter import rules
from agent.netfilter.runner import Completed, ProgramRunner, SubprocessRunner
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb

log = logging.getLogger(__name__)

CHECK_INTERVAL = 5.0
RETRY_DELAY = 1.0


def _run(
    runner: ProgramRunner, *command: str, input_text: str | None = None, check: bool = True
) -> Completed:
    """Run through `runner`; with check, a non-zero exit raises CalledProcessError (stderr kept)."""
    result = runner(command, input_text)
    if check and result.returncode != 0:
        raise subprocess.CalledProcessError(result.returncode, command, result.stdout, result.stderr)
    return result


class ServiceNetwork:
    """Keeps this host's iptables in step with the latest route table."""

    def __init__(
        self,
        node_address: str,
        command_prefix: tuple[str, ...] = (),
        runner: ProgramRunner | None = None,
        check_interval: float = CHECK_INTERVAL,
        retry_delay: float = RETRY_DELAY,
    ) -> None:
        """command_prefix: e.g. ("nsenter", "--net=/run/netns/X") for the default runner."""
        self._node_address = node_address
        self._runner = runner or SubprocessRunner(command_prefix)
        self._check_interval = check_interval
        self._retry_delay = retry_delay
        self.service_cidr = ""
        self._routes: list[agent_pb.ServiceRoute] | None = None
        self._applied: rules.RuleSet | None = None
        self._pending = False
        self._applied_routes: dict[tuple[str, str], bytes] = {}
        self._wake = asyncio.Event()
        self._revision = 0

    def update(self, routes: list[agent_pb.ServiceRoute], revision: int) -> None:
        self._routes = list(routes)
        self._revision = revision
        self._pending = True
        self._wake.set()

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._check_interval)
            self._wake.clear()
            if not await self.step():
                await asyncio.sleep(self._retry_delay)
                self._wake.set()

    async def step(self) -> bool:
        """One round: apply what changed, else check the canary (a full resync if it is gone).

        Returns False when applying failed; the next round is then a full resync.
        """
        if self._routes is None or not self.service_cidr:
            return True  # nothing heard from the control plane yet: touch nothing
        changed, self._pending = self._pending, False
        try:
            if not changed and not await asyncio.to_thread(self._healthy):
                log.warning("event=rules_missing action=full_resync")
                self._applied = None
            if changed or self._applied is None:
                await asyncio.to_thread(self.sync, self._routes, self._revision)
        except (subprocess.SubprocessError, OSError) as error:
            detail = getattr(error, "stderr", "") or str(error)
            log.error("event=rules_apply_failed error=%r action=full_resync", str(detail).strip())
            self._applied = None
            self._pending = True
            return False
        return True

    # -- blocking work, in a worker thread -------------------------------------

    def _run(self, *command: str, input_text: str | None = None, check: bool = True) -> Completed:
        return _run(self._runner, *command, input_text=input_text, check=check)

    def _healthy(self) -> bool:
        """Our canary rule and jumps are where we put them (nobody flushed the tables)."""
        table, chain, args = rules.CANARY_RULE
        if self._run("iptables", "-t", table, "-C", chain, *args, check=False).returncode != 0:
            return False
        return all(
            self._run("iptables", "-t", t, "-C", builtin, "-j", ours, check=False).returncode == 0
            for t, builtin, ours in rules.JUMPS
        )

    def sync(self, routes: list[agent_pb.ServiceRoute], revision: int) -> None:
        """Apply the rules for these routes: a delta if we know what is there, else everything."""
        ordered = sorted(routes, key=lambda r: (r.cluster, r.name))
        current = {(r.cluster, r.name): r.SerializeToString(deterministic=True) for r in ordered}
        started = time.perf_counter()
        rule_set = rules.build_serialized(current.values(), self._node_address, self.service_cidr)
        if self._applied is None:
            existing = [
                line[1:].split()[0]
                for line in self._run("iptables-save", "-t", "nat").stdout.splitlines()
                if line.startswith(":" + rules.PREFIX)
            ]
            self._run("ip", "route", "replace", "local", self.service_cidr, "dev", "lo", "table", "local")
            self._run("iptables-restore", "--noflush", input_text=rules.batch(rule_set, existing))
            for table, builtin, ours in rules.JUMPS:
                if self._run("iptables", "-t", table, "-C", builtin, "-j", ours, check=False).returncode != 0:
                    self._run("iptables", "-t", table, "-I", builtin, "1", "-j", ours)
            kind = "full"
        else:
            change = rules.delta(self._applied, rule_set)
            if change is not None:
                self._run("iptables-restore", "--noflush", input_text=change)
            kind = "delta"
        self._applied = rule_set
        # Endpoints that went away, and UDP service ports that had no endpoint
        # and now have one, found by comparing only the routes that changed.
        gone: set[tuple[str, str, int, int]] = set()
        newly_served: set[tuple[str, int]] = set()
        first_sync = not self._applied_routes
        for key in self._applied_routes.keys() | current.keys():
            raw_before, raw_after = self._applied_routes.get(key), current.get(key)
            if raw_before == raw_after:
                continue
            before = [agent_pb.ServiceRoute.FromString(raw_before)] if raw_before else []
            after = [agent_pb.ServiceRoute.FromString(raw_after)] if raw_after else []
            gone |= rules.endpoint_keys(before) - rules.endpoint_keys(after)
            if not first_sync:
                newly_served |= rules.served_udp_ports(after) - rules.served_udp_ports(before)
        for vip, address, port, protocol in sorted(gone):
            self._forget_flows(vip, address, port, protocol)
        for vip, port in sorted(newly_served):
            self._forget_unserved_flows(vip, port)
        self._applied_routes = current
        RULES_APPLY_SECONDS.labels(kind).observe(time.perf_counter() - started)
        log.info(
            "event=rules_applied kind=%s services=%d endpoints_gone=%d revision=%d",
            kind,
            len(routes),
            len(gone),
            revision,
        )

    def _forget_unserved_flows(self, vip: str, port: int) -> None:
        """Delete UDP flows to VIP:port recorded while it had no endpoint (kube-proxy does the same).

        A datagram sent while a UDP service port had no endpoint left a flow
        with no DNAT in conntrack; every later datagram of that client (same
        source port) would follow it past the new endpoint until the flow
        times out. Only ports that had no endpoint are cleared, so no live,
        DNATed flow is cut.
        """
        if not rules.valid_endpoint(vip, port, pb.UDP):
            return
        result = self._run(
            "conntrack", "-D", "-p", "udp", "--orig-dst", vip, "--orig-port-dst", str(port), check=False
        )
        log.info(
            "event=conntrack_flushed vip=%s port=%d protocol=udp reason=first_endpoint result=%r",
            vip,
            port,
            result.stderr.strip().splitlines()[-1:],
        )

    def _forget_flows(self, vip: str, address: str, port: int, protocol: int) -> None:
        if not rules.valid_endpoint(address, port, protocol):
            return  # endpoint_keys() gives only valid ones; never pass anything else to conntrack
        name = rules.PROTOCOLS[protocol]
        # Flows whose replies come from the gone endpoint (DNATed to it).
        result = self._run(
            "conntrack", "-D", "-p", name, "--reply-src", address, "--reply-port-src", str(port), check=False
        )
        log.info(
            "event=conntrack_flushed vip=%s endpoint=%s:%d protocol=%s result=%r",
            vip,
            address,
            port,
            name,
            result.stderr.strip().splitlines()[-1:],
        )


def owned_rules(runner: ProgramRunner | None = None) -> str:
    """Berth's own chains and jumps, as iptables-save prints them (for `berth-agent rules`)."""
    runner = runner or SubprocessRunner()
    lines = []
    for table in ("nat", "filter"):
        lines.append(f"*{table}")
        lines += [
            line
            for line in _run(runner, "iptables-save", "-t", table).stdout.splitlines()
            if rules.PREFIX in line
        ]
    return "\n".join(lines)


MAX_JUMP_COPIES = 100


def remove_owned_rules(service_cidr: str | None, runner: ProgramRunner | None = None) -> None:
    """Take Berth's jumps, chains and local service route off this host (for teardown)."""
    runner = runner or SubprocessRunner()
    for table, builtin, ours in rules.JUMPS:
        # Delete every copy of the jump (an outside script may have added more), but never loop forever.
        for _ in range(MAX_JUMP_COPIES):
            if _run(runner, "iptables", "-t", table, "-D", builtin, "-j", ours, check=False).returncode != 0:
                break
    for table in ("nat", "filter"):
        chains = [
            line[1:].split()[0]
            for line in _run(runner, "iptables-save", "-t", table).stdout.splitlines()
            if line.startswith(":" + rules.PREFIX)
        ]
        for chain in chains:
            _run(runner, "iptables", "-t", table, "-F", chain, check=False)
        for chain in chains:
            _run(runner, "iptables", "-t", table, "-X", chain, check=False)
    if service_cidr:
        _run(runner, "ip", "route", "del", "local", service_cidr, "dev", "lo", "table", "local", check=False)
