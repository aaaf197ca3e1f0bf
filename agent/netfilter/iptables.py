"""Applies Berth's rules with iptables-restore, atomically, touching only Berth's chains.

The fallback backend, used where nftables is not there (backend.py chooses).
On a full sync: route the service CIDR locally, apply the whole batch in one
`iptables-restore --noflush`, make sure the jumps from the built-in chains
are in place. Afterwards only the chains that changed are rewritten. A
canary rule gone missing (someone flushed the table) makes the next round a
full resync; the loop and the conntrack clean-up are sync.py's.
"""

from __future__ import annotations

import logging

from agent.netfilter import rules
from agent.netfilter.runner import ProgramRunner, SubprocessRunner
from agent.netfilter.sync import CHECK_INTERVAL, RETRY_DELAY, RouteTable, RuleSync
from agent.netfilter.sync import run_program as _run

log = logging.getLogger(__name__)

__all__ = [
    "CHECK_INTERVAL",
    "RETRY_DELAY",
    "ServiceNetwork",
    "ensure_forward_accept",
    "forward_accept_in_place",
    "owned_rules",
    "remove_owned_rules",
]


class ServiceNetwork(RuleSync):
    """Keeps this host's iptables in step with the latest route table."""

    backend = "iptables"

    def __init__(
        self,
        node_address: str,
        command_prefix: tuple[str, ...] = (),
        runner: ProgramRunner | None = None,
        check_interval: float = CHECK_INTERVAL,
        retry_delay: float = RETRY_DELAY,
    ) -> None:
        """command_prefix: e.g. ("nsenter", "--net=/run/netns/X") for the default runner."""
        super().__init__(node_address, command_prefix, runner, check_interval, retry_delay)
        self._applied: rules.RuleSet | None = None

    def _forget_applied(self) -> None:
        self._applied = None

    def _healthy(self) -> bool:
        """Our canary rule and jumps are where we put them (nobody flushed the tables)."""
        table, chain, args = rules.CANARY_RULE
        if self._run("iptables", "-t", table, "-C", chain, *args, check=False).returncode != 0:
            return False
        return all(
            self._run("iptables", "-t", t, "-C", builtin, "-j", ours, check=False).returncode == 0
            for t, builtin, ours in rules.JUMPS
        )

    def _program(self, current: RouteTable) -> str:
        rule_set = rules.build_serialized(current.values(), self._node_address, self.service_cidr)
        if self._applied is None:
            existing = [
                line[1:].split()[0]
                for line in self._run("iptables-save", "-t", "nat").stdout.splitlines()
                if line.startswith(":" + rules.PREFIX)
            ]
            self._route_cidr_locally()
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
        return kind


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


FORWARD_JUMP = ("filter", "FORWARD", rules.FORWARD)


def ensure_forward_accept(runner: ProgramRunner) -> None:
    """Only the filter table's BERTH-FORWARD chain and its jump (what the nftables backend keeps here).

    An accept in our nftables table cannot override a drop in another table:
    Docker's FORWARD policy (DROP) in iptables' filter table would still drop
    load-balancer traffic forwarded to another host. Only a rule in that very
    chain accepts it, so this one piece of the iptables backend stays.
    """
    _run(runner, "iptables-restore", "--noflush", input_text=f"*filter\n{rules.FORWARD_RULES}\nCOMMIT\n")
    if not forward_accept_in_place(runner):
        table, builtin, ours = FORWARD_JUMP
        _run(runner, "iptables", "-t", table, "-I", builtin, "1", "-j", ours)


def forward_accept_in_place(runner: ProgramRunner) -> bool:
    table, builtin, ours = FORWARD_JUMP
    return _run(runner, "iptables", "-t", table, "-C", builtin, "-j", ours, check=False).returncode == 0


def remove_owned_rules(
    service_cidr: str | None, runner: ProgramRunner | None = None, tables: tuple[str, ...] = ("nat", "filter")
) -> None:
    """Take Berth's jumps, chains (in `tables`) and local service route off this host (for teardown)."""
    runner = runner or SubprocessRunner()
    for table, builtin, ours in rules.JUMPS:
        if table not in tables:
            continue
        # Delete every copy of the jump (an outside script may have added more), but never loop forever.
        for _ in range(MAX_JUMP_COPIES):
            if _run(runner, "iptables", "-t", table, "-D", builtin, "-j", ours, check=False).returncode != 0:
                break
    for table in tables:
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
