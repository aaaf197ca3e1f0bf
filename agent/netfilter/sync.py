"""Keeps a host's service rules in step with the latest route table, whatever the backend.

What every backend shares lives here: the loop that applies each new route
table (or checks, when nothing changed, that our rules are still there), the
local route for the service CIDR (so a packet for a VIP never leaves the host,
even before rules exist), the full resync after any failure, and the
conntrack clean-up of endpoints that went away. A backend (iptables.py,
nftables.py) only says how to check its rules and how to program a route
table, fully or as a delta.

Every program runs through a `ProgramRunner` given to the constructor (the
real one by default), so this logic is unit-tested against a fake.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import time
from collections.abc import Callable

from agent.metrics import RULES_APPLY_SECONDS
from agent.netfilter import rules
from agent.netfilter.runner import Completed, ProgramRunner, SubprocessRunner
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb

log = logging.getLogger(__name__)

CHECK_INTERVAL = 5.0
RETRY_DELAY = 1.0

# (cluster, service name) -> the route, serialized deterministically.
RouteTable = dict[tuple[str, str], bytes]


def run_program(
    runner: ProgramRunner, *command: str, input_text: str | None = None, check: bool = True
) -> Completed:
    """Run through `runner`; with check, a non-zero exit raises CalledProcessError (stderr kept)."""
    result = runner(command, input_text)
    if check and result.returncode != 0:
        raise subprocess.CalledProcessError(result.returncode, command, result.stdout, result.stderr)
    return result


class RuleSync:
    """The backend-neutral half of a service network; subclasses program the rules."""

    backend = ""

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
        self._pending = False
        self._applied_routes: RouteTable = {}
        self._wake = asyncio.Event()
        self._revision = 0
        # Called once, after the first full sync succeeded (backend.py retires the other backend).
        self.on_first_full_sync: Callable[[], None] | None = None

    # -- what a backend provides -----------------------------------------------

    def _healthy(self) -> bool:
        """Our rules are still where we put them (nobody flushed them)."""
        raise NotImplementedError

    def _forget_applied(self) -> None:
        """Forget what was applied: the next program() is a full one."""
        raise NotImplementedError

    def _program(self, current: RouteTable) -> str:
        """Apply the rules for `current` (a delta when the applied state is known); returns the kind."""
        raise NotImplementedError

    # -- the loop ----------------------------------------------------------------

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
        """One round: apply what changed, else check our rules (a full resync if they are gone).

        Returns False when applying failed; the next round is then a full resync.
        """
        if self._routes is None or not self.service_cidr:
            return True  # nothing heard from the control plane yet: touch nothing
        changed, self._pending = self._pending, False
        try:
            if not changed and not await asyncio.to_thread(self._healthy):
                log.warning("event=rules_missing backend=%s action=full_resync", self.backend)
                self._forget_applied()
                changed = True
            if changed:
                await asyncio.to_thread(self.sync, self._routes, self._revision)
        except (subprocess.SubprocessError, OSError) as error:
            detail = getattr(error, "stderr", "") or str(error)
            log.error(
                "event=rules_apply_failed backend=%s error=%r action=full_resync",
                self.backend,
                str(detail).strip(),
            )
            self._forget_applied()
            self._pending = True
            return False
        return True

    # -- blocking work, in a worker thread -------------------------------------

    def _run(self, *command: str, input_text: str | None = None, check: bool = True) -> Completed:
        return run_program(self._runner, *command, input_text=input_text, check=check)

    def _route_cidr_locally(self) -> None:
        self._run("ip", "route", "replace", "local", self.service_cidr, "dev", "lo", "table", "local")

    def sync(self, routes: list[agent_pb.ServiceRoute], revision: int) -> None:
        """Apply the rules for these routes: a delta if we know what is there, else everything."""
        ordered = sorted(routes, key=lambda r: (r.cluster, r.name))
        current = {(r.cluster, r.name): r.SerializeToString(deterministic=True) for r in ordered}
        started = time.perf_counter()
        kind = self._program(current)
        if kind == "full" and self.on_first_full_sync is not None:
            retire, self.on_first_full_sync = self.on_first_full_sync, None
            retire()
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
            "event=rules_applied backend=%s kind=%s services=%d endpoints_gone=%d revision=%d",
            self.backend,
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
