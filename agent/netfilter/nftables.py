"""Applies Berth's rules with `nft -f -`, one transaction each time, touching only `table ip berth`.

The preferred backend (backend.py chooses). A full sync routes the service
CIDR locally and then replaces our table whole in one transaction; after it,
a route-table change is a small transaction over only the map elements (and
pick chains) that changed (nft_rules.delta_script), computed against the
model of what was applied. Any failure, or our table, a base chain or the
prerouting lookup gone missing (someone deleted or flushed the table), makes
the next round a full sync.
The loop and the conntrack clean-up are sync.py's.

One piece stays in iptables where it is installed: the filter chain that
accepts forwarded service traffic (iptables.ensure_forward_accept says why).
"""

from __future__ import annotations

import logging
import subprocess

from agent.netfilter import iptables, nft_rules
from agent.netfilter.runner import ProgramRunner, SubprocessRunner
from agent.netfilter.sync import CHECK_INTERVAL, RETRY_DELAY, RouteTable, RuleSync, run_program

log = logging.getLogger(__name__)

# Every this many checks (one per quiet round, CHECK_INTERVAL apart), the rule itself is read.
RULE_CHECK_EVERY = 12


class NftablesNetwork(RuleSync):
    """Keeps this host's `table ip berth` in step with the latest route table."""

    backend = "nftables"

    def __init__(
        self,
        node_address: str,
        command_prefix: tuple[str, ...] = (),
        runner: ProgramRunner | None = None,
        check_interval: float = CHECK_INTERVAL,
        retry_delay: float = RETRY_DELAY,
        iptables_forward: bool = False,
    ) -> None:
        """command_prefix: e.g. ("nsenter", "--net=/run/netns/X") for the default runner.

        iptables_forward: also keep the iptables filter chain that accepts forwarded service
        traffic (iptables.ensure_forward_accept says why), where iptables is installed.
        """
        super().__init__(node_address, command_prefix, runner, check_interval, retry_delay)
        self._applied: nft_rules.NftRuleSet | None = None
        self._iptables_forward = iptables_forward
        self._forward_in_place = False
        self._reported_forward = False
        self._checks = 0

    def _forget_applied(self) -> None:
        self._applied = None

    def _healthy(self) -> bool:
        """Our table is there with its chains (every round) and its lookup rule (every few rounds)."""
        self._checks += 1
        if self._checks % RULE_CHECK_EVERY:
            result = self._run("nft", "list", "chains", nft_rules.FAMILY, check=False)
            if result.returncode != 0 or not nft_rules.has_base_chains(result.stdout):
                return False
        else:
            # Reads the whole table: worth it only now and then (a flushed table keeps its chains).
            result = self._run(
                "nft", "list", "chain", nft_rules.FAMILY, nft_rules.TABLE, nft_rules.CANARY_CHAIN, check=False
            )
            if result.returncode != 0 or nft_rules.CANARY_RULE not in result.stdout:
                return False
        return not self._forward_in_place or iptables.forward_accept_in_place(self._runner)

    def _program(self, current: RouteTable) -> str:
        rule_set = nft_rules.build_serialized(current.values(), self._node_address, self.service_cidr)
        if self._applied is None:
            self._route_cidr_locally()
            self._run("nft", "-f", "-", input_text=nft_rules.full_script(rule_set))
            if self._iptables_forward:
                self._keep_forward_accept()
            kind = "full"
        else:
            change = nft_rules.delta_script(self._applied, rule_set)
            if change is not None:
                self._run("nft", "-f", "-", input_text=change)
            kind = "delta"
        self._applied = rule_set
        return kind

    def _keep_forward_accept(self) -> None:
        try:
            iptables.ensure_forward_accept(self._runner)
        except (OSError, subprocess.SubprocessError) as error:
            # No iptables here, or one that cannot work: then no iptables chain drops either.
            detail = getattr(error, "stderr", "") or str(error)
            if self._forward_in_place or not self._reported_forward:
                log.warning("event=iptables_forward_accept_unavailable error=%r", str(detail).strip()[:200])
            self._reported_forward = True
            self._forward_in_place = False
        else:
            self._forward_in_place = True


def owned_rules(runner: ProgramRunner | None = None) -> str:
    """Berth's table as `nft list table` prints it ("" when it is not there)."""
    result = run_program(
        runner or SubprocessRunner(), "nft", "list", "table", nft_rules.FAMILY, nft_rules.TABLE, check=False
    )
    return result.stdout if result.returncode == 0 else ""


def remove_owned_rules(runner: ProgramRunner | None = None) -> None:
    """Delete Berth's table, and nothing else (no error when it is not there)."""
    run_program(runner or SubprocessRunner(), "nft", "-f", "-", input_text=nft_rules.remove_script())
