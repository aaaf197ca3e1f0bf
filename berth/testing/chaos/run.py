"""One chaos run on a lab: the workload writes, victims fall and come back one at a time, a client
calls the web service's VIP throughout; then the cluster is given a bounded time to settle and
every invariant is checked (see invariants.py). Returns a report; raises nothing for a broken
invariant (the report lists it), so the caller decides.

The chaos schedule runs in a thread of its own; the workload, which drives the in-process CLI,
stays on the calling thread (the CLI runner swaps sys.stdout, so only one thread may use it).
"""

from __future__ import annotations

import contextlib
import random
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import grpc

from berth.testing.chaos.invariants import Observation, observe, violations
from berth.testing.chaos.ledger import Ledger
from berth.testing.chaos.probe import ProbeCount, Request, VipProbe
from berth.testing.chaos.schedule import Round, kind_of, schedule
from berth.testing.chaos.victims import Victim, victims_of
from berth.testing.chaos.watch import DuplicateWatcher
from berth.testing.chaos.workload import WEB_PORT, Workload
from berth.testing.cli import Berth
from berth.testing.lab import Lab
from berth.v1 import operator_pb2 as api
from berth.v1 import operator_pb2_grpc

# A victim that does not come back after this many tries breaks the lab, and the run.
RESTART_TRIES = 3
# Settled means every invariant held in two observations this far apart (not one lucky moment).
STABLE_FOR = 3.0
# The chaos lab's node grace (as the other lab tests'): downtimes are drawn on both sides of it.
GRACE = 3.0
# Explicit capacity, so placement does not depend on this machine's cores and memory.
CPU_UNITS = 2048
MEMORY_MIB = 4096


def lab_of(hosts: int, grace: float = GRACE, ha: bool = True) -> Lab:
    """The lab a chaos run expects: `hosts` hosts with explicit capacity and a control plane with
    `grace`; highly available by default (3 etcd members, 3 replicas), so the leader, a follower
    and each etcd member are victims too (`victims_of` follows from what the lab has)."""
    return Lab(
        hosts,
        controlplane_args=("--node-grace", str(grace)),
        agent_args=("--cpu-units", str(CPU_UNITS), "--memory-mib", str(MEMORY_MIB)),
        replicas=3 if ha else 1,
        etcd_members=3 if ha else 0,
    )


def cli_of(lab: Lab) -> Berth:
    """The administrator's CLI on every control-plane address the lab has (lab.server)."""
    return Berth(lab.server, lab.controlplane.admin_config)


@dataclass(frozen=True)
class Settings:
    rounds: int
    seed: int
    # The control plane's --node-grace: some downtimes are drawn longer than it.
    grace: float
    longest_calm: float = 5.0
    # After the chaos, how long the cluster has to reach every invariant.
    settle_timeout: float = 120.0
    client_host: str = "h1"
    # The VIP client's failed requests may be at most this share of all of them. Generous: a
    # crashed or cut host fails the requests sent to its endpoints until it is declared lost
    # (grace + a second or two), and on this lab an agent that restarts slower than the grace
    # loses its node's tasks too, so two hosts can be out at once (see the report's outages).
    max_failed_share: float = 0.2


@dataclass
class RoundResult:
    round: Round
    killed: str = ""
    # Unix time of the kill.
    killed_at: float = 0.0
    # Seconds from the kill until the victim served again.
    back_after: float = 0.0
    error: str = ""
    # The VIP client's requests from this kill to the next (to the end of the settling for the last).
    vip: ProbeCount = field(default_factory=lambda: ProbeCount(0, 0, ()))


@dataclass
class Report:
    seed: int
    rounds: list[RoundResult] = field(default_factory=list)
    writes: Counter[str] = field(default_factory=Counter)
    # The VIP client's requests before the first kill (with no victim, none should fail).
    calm_vip: ProbeCount = field(default_factory=lambda: ProbeCount(0, 0, ()))
    requests: int = 0
    failed: int = 0
    failure_reasons: tuple[str, ...] = ()
    # Seconds of the longest stretch of consecutive failed VIP requests.
    longest_outage: float = 0.0
    settle_seconds: float = 0.0
    # Sweeps of every engine for duplicates while the chaos ran.
    sweeps: int = 0
    violations: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        victims = Counter(kind_of(r.round.victim) for r in self.rounds)
        lines = [
            f"chaos seed {self.seed}: {len(self.rounds)} rounds "
            f"({', '.join(f'{kind} {n}' for kind, n in sorted(victims.items()))})",
            *(
                f"  round {r.round.index:>3}: {r.round.victim:<14} down {r.round.down:>4.1f}s, "
                f"back after {r.back_after:>5.1f}s, VIP {r.vip.failed:>3} of {r.vip.requests:>4} failed"
                + (f" (outage {r.vip.longest_outage:.1f}s)" if r.vip.longest_outage >= 1 else "")
                + (f"  ERROR {r.error.splitlines()[0][:200]}" if r.error else "")
                for r in self.rounds
            ),
            "  writes: " + ", ".join(f"{kind} {n}" for kind, n in sorted(self.writes.items())),
            f"  VIP client from the first kill on: {self.requests} requests, {self.failed} failed"
            + (f" ({'; '.join(self.failure_reasons[:5])})" if self.failure_reasons else "")
            + f"; longest outage {self.longest_outage:.1f}s"
            + f" (warming up before the first kill: {self.calm_vip.failed} of {self.calm_vip.requests})",
            f"  settled in {self.settle_seconds:.1f}s after the last round; "
            f"{self.sweeps} sweeps of the engines for duplicates meanwhile",
        ]
        if self.violations:
            lines += ["  INVARIANTS BROKEN:", *(f"    {v}" for v in self.violations)]
        else:
            lines.append(
                "  invariants held: desired counts (Berth and engines), no task twice, "
                "no acknowledged write lost, nothing stuck, VIP failures bounded and none once settled"
            )
        return lines


class _Say:
    """Timestamped lines to one stream, from any thread."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._start = time.monotonic()
        self._lock = threading.Lock()

    def __call__(self, line: str) -> None:
        with self._lock:
            print(f"[{time.monotonic() - self._start:7.1f}s] {line}", file=self._out, flush=True)


class _Chaos(threading.Thread):
    """Plays the schedule: kill, wait, restart, calm; always restarts what it killed."""

    def __init__(self, victims: dict[str, Victim], plan: list[Round], say: Callable[[str], None]):
        super().__init__(name="chaos", daemon=True)
        self.victims = victims
        self.plan = plan
        self.say = say
        self.results: list[RoundResult] = []
        self.stopping = threading.Event()
        self.broken = ""

    def run(self) -> None:
        for planned in self.plan:
            if self.stopping.is_set():
                return
            result = RoundResult(planned)
            self.results.append(result)
            victim = self.victims[planned.victim]
            started = time.monotonic()
            result.killed_at = time.time()
            try:
                result.killed = victim.kill()
                self.say(f"round {planned.index}: killed {result.killed}; back in {planned.down}s")
                time.sleep(planned.down)
            except Exception as error:  # the victim may be half-dead: restart it all the same
                result.error = f"kill: {error}"
            if not self._restart(victim, result):
                self.broken = f"{victim.name} did not come back: {result.error}"
                return
            result.back_after = time.monotonic() - started
            self.say(f"round {planned.index}: {victim.name} back after {result.back_after:.1f}s")
            self.stopping.wait(planned.calm)

    def _restart(self, victim: Victim, result: RoundResult) -> bool:
        for attempt in range(1, RESTART_TRIES + 1):
            try:
                victim.restart()
                return True
            except Exception as error:
                result.error = f"restart {attempt}: {error}"
                self.say(f"{victim.name}: restart {attempt} failed: {error}")
                time.sleep(1)
        return False


def run(lab: Lab, berth: Berth, settings: Settings, directory: Path, out: TextIO) -> Report:
    say = _Say(out)
    report = Report(settings.seed)
    victims = {v.name: v for v in victims_of(lab, settings.client_host, random.Random(settings.seed + 1))}
    plan = schedule(
        settings.seed,
        list(victims),
        settings.rounds,
        longest_down=2 * settings.grace + 2,
        longest_calm=settings.longest_calm,
    )
    say(f"chaos seed {settings.seed} (BERTH_CHAOS_SEED replays it); victims: {', '.join(victims)}")
    workload = Workload(berth, random.Random(settings.seed + 2), directory)
    workload.setup()
    channel = lab.controlplane.admin_channel()
    stub = operator_pb2_grpc.OperatorStub(channel)
    probe: VipProbe | None = None
    watcher: DuplicateWatcher | None = None
    try:
        took, left = settle(stub, lab, workload.ledger, settings.settle_timeout)
        if left:
            report.violations = ["the workload never converged before the chaos:", *left]
            return report
        say(f"services converged in {took:.1f}s; starting the VIP client and the chaos")
        _wait_endpoints(stub, "web", 3, settings.settle_timeout)
        probe = VipProbe(
            lab,
            settings.client_host,
            workload.vip(),
            WEB_PORT,
            directory / "vip-client.log",
            # Bounded, but never before the chaos and the settling are over.
            max_seconds=600 + 60 * settings.rounds + 2 * settings.settle_timeout,
        )
        _wait_answering(probe, 20, settings.settle_timeout)
        chaos = _Chaos(victims, plan, say)
        watcher = DuplicateWatcher(lab, longest=600 + 60 * settings.rounds + 2 * settings.settle_timeout)
        watcher.start()
        chaos.start()
        steps = random.Random(settings.seed + 3)
        try:
            while chaos.is_alive():
                say(workload.step())
                chaos.join(steps.uniform(0.3, 1.5))
        finally:
            chaos.stopping.set()
            chaos.join()
        report.rounds = chaos.results
        report.writes = workload.outcomes
        if chaos.broken:
            report.violations = [chaos.broken]
            return report
        say("chaos over; waiting for the cluster to settle")
        report.settle_seconds, report.violations = settle(stub, lab, workload.ledger, settings.settle_timeout)
        # The watcher swept through the settling too: a host back from the dead is when a
        # superseded copy could start again.
        watcher.stop()
        report.sweeps = watcher.sweeps
        report.violations += watcher.duplicates
        if watcher.error or watcher.sweeps < len(report.rounds):
            report.violations.append(
                watcher.error or f"the duplicate watcher swept only {watcher.sweeps} times"
            )
        if not report.violations:
            # Settled, every host back: the VIP must answer every request again.
            try:
                _wait_answering(probe, 20, 30)
            except RuntimeError as error:
                report.violations.append(f"after the settling, {error}")
        requests = probe.finish()
        _attribute(report.rounds, requests)
        first_kill = report.rounds[0].killed_at if report.rounds else float("inf")
        # Before the first kill the client was only warming up (the hosts' rules may still have
        # been on their way); the bound is on what the chaos did.
        report.calm_vip = ProbeCount.of([r for r in requests if r.at < first_kill])
        counted = ProbeCount.of([r for r in requests if r.at >= first_kill])
        report.requests, report.failed, report.failure_reasons, report.longest_outage = (
            counted.requests,
            counted.failed,
            counted.reasons,
            counted.longest_outage,
        )
        if counted.requests < 100:
            report.violations.append(f"the VIP client made only {counted.requests} requests")
        elif counted.failed > settings.max_failed_share * counted.requests:
            report.violations.append(
                f"the VIP client saw {counted.failed} of {counted.requests} requests fail "
                f"(more than {settings.max_failed_share:.0%})"
            )
        return report
    finally:
        if probe is not None:
            probe.close()
        if watcher is not None:
            watcher.stop()
        channel.close()
        _keep_logs(lab, directory / "logs")
        for line in report.lines():
            say(line)


def _attribute(rounds: list[RoundResult], requests: list[Request]) -> None:
    """Each round's share of the VIP client's requests: from its kill to the next one."""
    for index, result in enumerate(rounds):
        until = rounds[index + 1].killed_at if index + 1 < len(rounds) else float("inf")
        result.vip = ProbeCount.of([r for r in requests if result.killed_at <= r.at < until])


def settle(
    stub: operator_pb2_grpc.OperatorStub, lab: Lab, ledger: Ledger, timeout: float
) -> tuple[float, list[str]]:
    """Wait until every invariant holds, twice STABLE_FOR apart, or `timeout` passes: the seconds
    until they first held for good and what is still broken (empty when everything held)."""
    started = time.monotonic()
    held_at: float | None = None
    while True:
        try:
            observed: Observation = observe(stub, lab)
            broken = violations(observed, ledger)
        except grpc.RpcError as error:
            broken = [f"the control plane did not answer: {error.code().name} {error.details()}"]
        now = time.monotonic()
        if broken:
            held_at = None
        elif held_at is None:
            held_at = now
        elif now - held_at >= STABLE_FOR:
            return held_at - started, []
        if now - started > timeout + STABLE_FOR:
            return now - started, broken or ["did not stay settled"]
        time.sleep(1)


def _wait_answering(probe: VipProbe, least: int, timeout: float) -> float:
    """Until the VIP client has had `least` answers in a row from now on (it runs, the VIP works);
    the seconds it took."""
    started, since = time.monotonic(), time.time()
    while time.monotonic() < started + timeout:
        requests = [r for r in probe.requests() if r.at >= since]
        if len(requests) >= least and all(r.ok for r in requests[-least:]):
            return time.monotonic() - started
        time.sleep(0.2)
    raise RuntimeError(f"the VIP client had no {least} answers in a row in {timeout}s")


def _keep_logs(lab: Lab, directory: Path) -> None:
    """The daemons' logs, before the lab goes (its down() removes them)."""
    directory.mkdir(parents=True, exist_ok=True)
    daemons = {"controlplane": lab.controlplane, **{f"agent-{h}": a for h, a in lab.agents.items()}}
    for name, daemon in daemons.items():
        with contextlib.suppress(OSError):
            shutil.copy(daemon.log_path, directory / f"{name}.log")


def _wait_endpoints(stub: operator_pb2_grpc.OperatorStub, service: str, least: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        endpoints = stub.ListEndpoints(api.ServiceRef(cluster="default", name=service), timeout=10).endpoints
        if len(endpoints) >= least:
            # Every host programs its rules a moment after the control plane knows the endpoints.
            time.sleep(2)
            return
        time.sleep(0.5)
    raise RuntimeError(f"{service} has fewer than {least} endpoints after {timeout}s")
