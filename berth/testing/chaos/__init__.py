"""The chaos test's machinery: victims killed with SIGKILL and restarted on a seeded schedule, while
a workload scales services and rolls deployments through the CLI and a client calls a VIP; then
the invariants (converged counts, no task twice, no acknowledged write lost, nothing stuck, VIP
failures bounded) are checked.

    schedule.py    which victim falls when (pure, seeded)
    victims.py     the victims a lab offers, each with kill() and restart()
    workload.py    the writes, recorded in a Ledger (ledger.py)
    probe.py       the VIP client, run in a lab host's network namespace
    invariants.py  observing the cluster (Berth and the engines) and what must hold
    run.py         one run, returning a Report
    __main__.py    the long form: `python -m berth.testing.chaos --rounds 30`
"""

from berth.testing.chaos.run import Report, Settings, run

__all__ = ["Report", "Settings", "run"]
