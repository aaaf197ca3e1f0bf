"""Which netfilter backend programs this host's service rules, and tear-down of both.

`berth-agent --netfilter auto|nftables|iptables`: auto (the default) takes
nftables when `nft` is there and a probe table can be created and deleted,
iptables-restore otherwise. Once the chosen backend has applied its first
full rule set, Berth's rules of the other backend are removed, so the two
never both apply for long and there is no moment without rules on a switch.
One exception: with nftables, iptables' BERTH-FORWARD accept stays (a drop
in iptables' FORWARD chain, as Docker sets its policy, cannot be overridden
from our own table; iptables.ensure_forward_accept).
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable

from agent.netfilter import iptables, nftables
from agent.netfilter.runner import ProgramRunner, SubprocessRunner
from agent.netfilter.sync import RuleSync, run_program
from berth.errors import FailedPrecondition

log = logging.getLogger(__name__)

AUTO, NFTABLES, IPTABLES = "auto", "nftables", "iptables"
MODES = (AUTO, NFTABLES, IPTABLES)
PROBE_TABLE = "berth-probe"


def nftables_works(runner: ProgramRunner) -> tuple[bool, str]:
    """(whether a probe table can be created and deleted with nft, why not)."""
    try:
        created = run_program(runner, "nft", "add", "table", "ip", PROBE_TABLE, check=False)
        if created.returncode != 0:
            return False, created.stderr.strip()[:200] or f"nft exited {created.returncode}"
        deleted = run_program(runner, "nft", "delete", "table", "ip", PROBE_TABLE, check=False)
        if deleted.returncode != 0:
            return False, deleted.stderr.strip()[:200] or f"nft exited {deleted.returncode}"
    except (OSError, subprocess.SubprocessError) as error:
        return False, str(error)[:200]
    return True, ""


def choose(mode: str, runner: ProgramRunner) -> str:
    """The backend for this mode on this host; nftables asked for but unusable is an error."""
    if mode == IPTABLES:
        log.info("event=netfilter_backend backend=iptables reason=asked")
        return IPTABLES
    works, why = nftables_works(runner)
    if mode == NFTABLES:
        if not works:
            raise FailedPrecondition(f"--netfilter nftables: nft cannot create a table here: {why}")
        log.info("event=netfilter_backend backend=nftables reason=asked")
        return NFTABLES
    if mode != AUTO:
        raise FailedPrecondition(f"--netfilter must be one of {', '.join(MODES)}, not {mode!r}")
    if works:
        log.info("event=netfilter_backend backend=nftables reason=auto")
        return NFTABLES
    log.info("event=netfilter_backend backend=iptables reason=auto nftables_unusable=%r", why)
    return IPTABLES


def _quietly(what: str, action: Callable[[], None]) -> None:
    """Tear-down of a backend that may not be installed: its absence is not an error."""
    try:
        action()
    except (OSError, subprocess.SubprocessError) as error:
        detail = getattr(error, "stderr", "") or str(error)
        log.info("event=rules_not_removed backend=%s reason=%r", what, str(detail).strip()[:200])


def retire(backend: str, runner: ProgramRunner) -> None:
    """Remove Berth's rules of the backend that is not `backend` (the service route stays)."""
    if backend == NFTABLES:
        # The filter table's forward accept stays: the nftables backend keeps it (see iptables.py).
        _quietly(IPTABLES, lambda: iptables.remove_owned_rules(None, runner, tables=("nat",)))
    else:
        _quietly(NFTABLES, lambda: nftables.remove_owned_rules(runner))
    log.info("event=other_backend_rules_removed kept=%s", backend)


def make_network(
    backend: str,
    node_address: str,
    command_prefix: tuple[str, ...] = (),
    runner: ProgramRunner | None = None,
) -> RuleSync:
    """The service network for `backend` (from choose()); it retires the other one after its first sync."""
    runner = runner or SubprocessRunner(command_prefix)
    network: RuleSync
    if backend == NFTABLES:
        network = nftables.NftablesNetwork(node_address, runner=runner, iptables_forward=True)
    else:
        network = iptables.ServiceNetwork(node_address, runner=runner)
    network.on_first_full_sync = lambda: retire(backend, runner)
    return network


def owned_rules(runner: ProgramRunner | None = None) -> str:
    """Berth's rules of both backends, as iptables-save and nft print them (for `berth-agent rules`)."""
    runner = runner or SubprocessRunner()
    parts: list[str] = []

    def add(what: Callable[[ProgramRunner], str]) -> Callable[[], None]:
        return lambda: parts.append(what(runner).rstrip("\n"))

    _quietly(IPTABLES, add(iptables.owned_rules))
    _quietly(NFTABLES, add(nftables.owned_rules))
    return "\n".join(part for part in parts if part)


def remove_owned_rules(service_cidr: str | None, runner: ProgramRunner | None = None) -> None:
    """Take Berth's rules of both backends and its local service route off this host."""
    runner = runner or SubprocessRunner()
    _quietly(NFTABLES, lambda: nftables.remove_owned_rules(runner))
    _quietly(IPTABLES, lambda: iptables.remove_owned_rules(None, runner))
    if service_cidr:
        run_program(
            runner, "ip", "route", "del", "local", service_cidr, "dev", "lo", "table", "local", check=False
        )
