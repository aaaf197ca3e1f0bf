"""`berth service update/create` deployment options, and `service wait`: the
outcome of a look at a service (every exit code), the plain progress lines,
and the waiting loop's timing rules (timeout, unreachable control plane),
all with hand-built messages and a scripted clock: no server."""

from __future__ import annotations

import datetime
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from berth import deployment_defaults, pki
from berth.cli import deployments, rollout, rollout_watch
from berth.cli.main import app
from berth.cli.rollout import Outcome
from berth.cli.services import update_request
from berth.clientconfig import ClientConfig
from berth.v1 import operator_pb2 as api
from berth.v1 import operator_pb2_grpc
from berth.v1 import resources_pb2 as pb


def _deployment(
    id: int,
    task_definition: str,
    status: pb.DeploymentStatus.ValueType,
    state: pb.RolloutState.ValueType,
    reason: str = "",
    rolled_back_from: int = 0,
    created: int = 1000,
) -> pb.Deployment:
    deployment = pb.Deployment(
        id=id,
        task_definition=task_definition,
        status=status,
        rollout_state=state,
        rollout_state_reason=reason,
        rolled_back_from=rolled_back_from,
    )
    deployment.created_at.seconds = created
    return deployment


def _counts(id: int, desired: int, running: int, pending: int = 0, healthy: int = 0, failed: int = 0) -> Any:
    return api.DeploymentCounts(
        id=id,
        desired_count=desired,
        running_count=running,
        pending_count=pending,
        healthy_count=healthy,
        failed_count=failed,
    )


def _event(seconds: int, message: str) -> pb.ServiceEvent:
    event = pb.ServiceEvent(message=message)
    event.created_at.seconds = seconds
    return event


def _described(
    *deployments_: pb.Deployment,
    counts: tuple[api.DeploymentCounts, ...] = (),
    desired: int = 6,
    running: int = 0,
    pending: int = 0,
    status: pb.ServiceStatus.ValueType = pb.SERVICE_ACTIVE,
    events: tuple[pb.ServiceEvent, ...] = (),
) -> api.ServiceDescription:
    service = pb.Service(
        cluster="default",
        name="web",
        desired_count=desired,
        status=status,
        deployments=deployments_,
        deployment_count=max((d.id for d in deployments_), default=0),
    )
    return api.ServiceDescription(
        service=service, running_count=running, pending_count=pending, deployment_counts=counts, events=events
    )


PRIMARY_3 = _deployment(3, "web:4", pb.PRIMARY, pb.IN_PROGRESS)
ACTIVE_2 = _deployment(2, "web:3", pb.DEPLOYMENT_ACTIVE, pb.COMPLETED)
DONE_3 = _deployment(3, "web:4", pb.PRIMARY, pb.COMPLETED)
FAILED_3_ACTIVE = _deployment(3, "web:4", pb.DEPLOYMENT_ACTIVE, pb.FAILED, "3 tasks failed to start")
FAILED_3_PRIMARY = _deployment(3, "web:4", pb.PRIMARY, pb.FAILED, "3 tasks failed to start")
FAILED_3_SAYS_WHERE = _deployment(
    3,
    "web:4",
    pb.DEPLOYMENT_ACTIVE,
    pb.FAILED,
    "circuit breaker: 3 tasks failed (threshold 3); rolled back to deployment 2 (web:3)",
)
BACK_TO_2 = _deployment(2, "web:3", pb.PRIMARY, pb.IN_PROGRESS, rolled_back_from=3)
BACK_TO_2_DONE = _deployment(2, "web:3", pb.PRIMARY, pb.COMPLETED, rolled_back_from=3)
PRIMARY_4 = _deployment(4, "web:5", pb.PRIMARY, pb.IN_PROGRESS)
SUPERSEDED_3 = _deployment(3, "web:4", pb.DEPLOYMENT_ACTIVE, pb.IN_PROGRESS)
ALL_SIX = (_counts(3, 6, 6, healthy=6),)


# ---- options -> request -------------------------------------------------------------------


def test_no_deployment_option_given_sets_no_field() -> None:
    assert deployments.deployment_options().ListFields() == []


def test_only_the_options_given_are_set_zeros_and_offs_included() -> None:
    options = deployments.deployment_options(
        min_healthy_percent=0, circuit_breaker=False, deregistration_delay=0
    )
    assert options.HasField("minimum_healthy_percent") and options.minimum_healthy_percent == 0
    assert options.HasField("circuit_breaker") and options.circuit_breaker is False
    assert options.HasField("deregistration_delay") and options.deregistration_delay == 0
    for absent in ("maximum_percent", "rollback", "rebalance"):
        assert not options.HasField(absent)
    every = deployments.deployment_options(
        min_healthy_percent=50,
        max_percent=150,
        circuit_breaker=True,
        rollback=False,
        deregistration_delay=30,
        rebalance=False,
    )
    assert every == api.DeploymentOptions(
        minimum_healthy_percent=50,
        maximum_percent=150,
        circuit_breaker=True,
        rollback=False,
        deregistration_delay=30,
        rebalance=False,
    )


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"min_healthy_percent": 101}, "--min-healthy-percent 101 is out of range: use 0-100"),
        ({"min_healthy_percent": -1}, "--min-healthy-percent -1 is out of range: use 0-100"),
        ({"max_percent": 99}, "--max-percent 99 is out of range: use 100-200"),
        ({"max_percent": 201}, "--max-percent 201 is out of range: use 100-200"),
        ({"deregistration_delay": 3601}, "--deregistration-delay 3601 is out of range: use 0-3600"),
    ],
)
def test_out_of_range_options_are_refused_in_one_line(
    given: dict[str, int], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(typer.Exit) as raised:
        deployments.deployment_options(**given)  # type: ignore[arg-type]
    assert raised.value.exit_code == 1
    assert capsys.readouterr().err.strip() == f"error: {message}"


def test_update_request_sets_only_what_was_given() -> None:
    empty = update_request(
        "default",
        "web",
        desired_count=None,
        task_definition="",
        force_new_deployment=False,
        options=api.DeploymentOptions(),
    )
    assert empty == api.UpdateServiceRequest(cluster="default", name="web")
    assert not empty.HasField("desired_count") and not empty.HasField("deployment")
    full = update_request(
        "prod",
        "web",
        desired_count=0,
        task_definition="web:4",
        force_new_deployment=True,
        options=api.DeploymentOptions(maximum_percent=150),
    )
    assert full.HasField("desired_count") and full.desired_count == 0
    assert (full.task_definition, full.force_new_deployment) == ("web:4", True)
    assert full.deployment == api.DeploymentOptions(maximum_percent=150)


class _FakeStub:
    """Records requests; answers UpdateService/CreateService with a service whose deployment 3 is new,
    and DescribeService with the scripted descriptions (the last one repeats)."""

    def __init__(self, descriptions: list[api.ServiceDescription]) -> None:
        self.requests: list[Any] = []
        self.descriptions = descriptions

    def UpdateService(self, request: api.UpdateServiceRequest, **_: Any) -> pb.Service:
        self.requests.append(request)
        return pb.Service(
            name=request.name, task_definition="web:4", desired_count=6, deployments=[PRIMARY_3, ACTIVE_2]
        )

    def CreateService(self, request: api.CreateServiceRequest, **_: Any) -> pb.Service:
        self.requests.append(request)
        return pb.Service(
            name=request.name, cluster=request.cluster, task_definition="web:1", desired_count=1
        )

    def DescribeService(self, request: api.ServiceRef, **_: Any) -> api.ServiceDescription:
        self.requests.append(request)
        return self.descriptions.pop(0) if len(self.descriptions) > 1 else self.descriptions[0]


@pytest.fixture()
def stub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[_FakeStub]:
    fake = _FakeStub([_described(DONE_3, counts=ALL_SIX)])
    monkeypatch.setattr(operator_pb2_grpc, "OperatorStub", lambda _channel: fake)
    monkeypatch.setattr(rollout_watch, "POLL", 0.0)
    # Credentials the CLI can load (the fake stub never dials).
    ca = pki.create_ca("unit")
    bundle = pki.issue_with_key(ca, "user", "admin", datetime.timedelta(hours=1))
    config = tmp_path / "config"
    ClientConfig(
        "127.0.0.1:1", "admin", ca.certificate.decode(), bundle.certificate.decode(), bundle.key.decode()
    ).save(config)
    monkeypatch.setenv("BERTH_CONFIG", str(config))
    yield fake


def _berth(*args: str) -> Any:
    return CliRunner().invoke(app, ["--server", "127.0.0.1:1", *args], catch_exceptions=False)


def test_service_create_sends_the_deployment_options_given(stub: _FakeStub) -> None:
    result = _berth(
        "service", "create", "--name", "web", "--task-definition", "web",
        "--min-healthy-percent", "50", "--no-rollback", "--deregistration-delay", "0",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (request,) = stub.requests
    assert request.deployment == api.DeploymentOptions(
        minimum_healthy_percent=50, rollback=False, deregistration_delay=0
    )


def test_service_create_without_deployment_options_sends_none(stub: _FakeStub) -> None:
    assert _berth("service", "create", "--name", "web", "--task-definition", "web").exit_code == 0
    assert stub.requests[0].deployment.ListFields() == []


def test_service_update_sends_task_definition_and_options(stub: _FakeStub) -> None:
    result = _berth(
        "service", "update", "web", "--task-definition", "web:4", "--max-percent", "150",
        "--circuit-breaker", "--no-rebalance",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (request,) = stub.requests
    assert request.task_definition == "web:4" and not request.HasField("desired_count")
    assert request.deployment == api.DeploymentOptions(
        maximum_percent=150, circuit_breaker=True, rebalance=False
    )
    assert "deployment 3 (web:4) IN_PROGRESS" in result.stdout


def test_service_update_wait_waits_for_the_deployment_it_started(stub: _FakeStub) -> None:
    stub.descriptions[:] = [
        _described(PRIMARY_3, ACTIVE_2, counts=(_counts(3, 6, 2, 1, 2), _counts(2, 4, 4))),
        _described(DONE_3, counts=ALL_SIX),
    ]
    result = _berth("service", "update", "web", "--force-new-deployment", "--wait", "--timeout", "30")
    assert result.exit_code == 0, result.output
    assert stub.requests[0].force_new_deployment
    assert "deployment 3 completed: web:4, 6 tasks healthy" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("service", "update", "web"), "nothing to update"),
        (
            ("service", "update", "web", "--desired-count", "2", "--timeout", "5"),
            "--timeout applies only with --wait",
        ),
        (
            ("service", "update", "web", "--min-healthy-percent", "150"),
            "--min-healthy-percent 150 is out of range",
        ),
        (
            ("service", "create", "--name", "w", "--task-definition", "w", "--max-percent", "50"),
            "--max-percent 50 is out of range: use 100-200",
        ),
    ],
)
def test_bad_update_options_are_refused_before_any_call(
    stub: _FakeStub, args: tuple[str, ...], message: str
) -> None:
    result = _berth(*args)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert stub.requests == []


# ---- the outcome of one look ------------------------------------------------------------


@pytest.mark.parametrize(
    ("description", "waited", "outcome", "line"),
    [
        # Still going: no verdict.
        (_described(PRIMARY_3, ACTIVE_2), 3, None, ""),
        # COMPLETED and PRIMARY, every task running: exit 0.
        (
            _described(DONE_3, counts=ALL_SIX),
            3,
            Outcome.COMPLETED,
            "deployment 3 completed: web:4, 6 tasks healthy",
        ),
        # COMPLETED but a later scale-up is not running yet: not steady, keep waiting.
        (_described(DONE_3, counts=(_counts(3, 8, 6, 2, 6),)), 3, None, ""),
        # COMPLETED without counts (an older server): the rollout state decides.
        (_described(DONE_3, running=6), 3, Outcome.COMPLETED, "deployment 3 completed"),
        # The circuit breaker tripped, no rollback: it stays PRIMARY and FAILED.
        (
            _described(FAILED_3_PRIMARY, ACTIVE_2),
            3,
            Outcome.FAILED,
            "deployment 3 failed: 3 tasks failed to start",
        ),
        # Rolled back: the PRIMARY is a rollback from the waited deployment, rolling and done.
        (
            _described(BACK_TO_2, FAILED_3_ACTIVE),
            3,
            Outcome.ROLLED_BACK,
            "deployment 3 failed: 3 tasks failed to start; rolled back to deployment 2 (web:3)"
            " (the rollback is in progress)",
        ),
        (
            _described(BACK_TO_2_DONE),
            3,
            Outcome.ROLLED_BACK,
            "deployment 3 failed; rolled back to deployment 2 (web:3)",
        ),
        # The control plane's reason names the rollback already: not said twice; a finished one says so.
        (
            _described(BACK_TO_2_DONE, FAILED_3_SAYS_WHERE),
            3,
            Outcome.ROLLED_BACK,
            "deployment 3 failed: circuit breaker: 3 tasks failed (threshold 3); rolled back to deployment 2"
            " (web:3)",
        ),
        # The failed deployment was dropped (no task left): its reason comes from the event that said it.
        (
            _described(
                BACK_TO_2_DONE,
                events=(
                    _event(1040, "service web has reached a steady state."),
                    _event(
                        1030,
                        "deployment 3 failed: 3 tasks failed (threshold 3); "
                        "rolled back to deployment 2 (web:3)",
                    ),
                ),
            ),
            3,
            Outcome.ROLLED_BACK,
            "deployment 3 failed: 3 tasks failed (threshold 3); rolled back to deployment 2 (web:3)",
        ),
        # Waiting on the rollback itself (the PRIMARY after a rollback): a failure, even COMPLETED.
        (
            _described(BACK_TO_2_DONE),
            2,
            Outcome.ROLLED_BACK,
            "deployment 2 (web:3) is a rollback: deployment 3 failed; rolled back to deployment 2 (web:3)",
        ),
        # A newer deployment took over: still listed as ACTIVE, or already dropped.
        (
            _described(PRIMARY_4, SUPERSEDED_3),
            3,
            Outcome.SUPERSEDED,
            "deployment 3 was superseded by deployment 4",
        ),
        (_described(PRIMARY_4), 2, Outcome.SUPERSEDED, "deployment 2 was superseded by deployment 4 (web:5)"),
        # The service is gone, or going.
        (None, 3, Outcome.DELETED, "the service was deleted"),
        (_described(PRIMARY_3, status=pb.SERVICE_DRAINING), 3, Outcome.DELETED, "the service was deleted"),
        # A service without deployments (written before them): steady once the desired count runs.
        (_described(desired=2, running=1, pending=1), 0, None, ""),
        (_described(desired=2, running=2), 0, Outcome.COMPLETED, "service web is steady: 2 tasks running"),
    ],
)
def test_judge(
    description: api.ServiceDescription | None, waited: int, outcome: Outcome | None, line: str
) -> None:
    verdict = rollout.judge(description, waited)
    if outcome is None:
        assert verdict is None
        return
    assert verdict is not None
    assert verdict.outcome is outcome
    assert verdict.exit_code == (0 if outcome is Outcome.COMPLETED else 1)
    assert line in verdict.line


# ---- plain progress ------------------------------------------------------------------------


def test_progress_line_shows_every_deployment_primary_first() -> None:
    description = _described(
        PRIMARY_3, ACTIVE_2, counts=(_counts(3, 6, 3, pending=1, healthy=2), _counts(2, 4, 4))
    )
    assert rollout.progress_line(description) == (
        "deployment 3 web:4 PRIMARY IN_PROGRESS: 2/6 healthy, 3 running, 1 pending, 0 failed"
        " | deployment 2 web:3 ACTIVE: 4 running"
    )
    draining = _described(PRIMARY_3, ACTIVE_2, counts=(_counts(2, 0, 1, failed=2),))
    assert rollout.progress_line(draining).endswith("| deployment 2 web:3 ACTIVE: 1 running, 2 failed")


def test_describe_lines_show_counts_reason_and_configuration_defaults() -> None:
    description = _described(
        BACK_TO_2, FAILED_3_ACTIVE, counts=(_counts(2, 6, 4, 2, 4), _counts(3, 0, 0, failed=3))
    )
    lines = deployments.deployment_lines(description)
    assert "2  PRIMARY  web:3  IN_PROGRESS, rollback from FAILED deployment 3" in lines[0]
    assert "desired 6, running 4, pending 2, healthy 4, failed 0" in lines[0]
    assert "3  ACTIVE   web:4  FAILED" in lines[1] and "failed 3" in lines[1]
    assert lines[2].strip() == "3 tasks failed to start"
    assert deployments.configuration_line(deployment_defaults.configuration(pb.Service())) == (
        "min healthy 100%, max 200%, circuit breaker on (rollback on), deregistration delay 5s, rebalance on"
    )
    stored = pb.Service(deployment_configuration=pb.DeploymentConfiguration(maximum_percent=100))
    assert deployments.configuration_line(deployment_defaults.configuration(stored)) == (
        "min healthy 0%, max 100%, circuit breaker off, deregistration delay 0s, rebalance off"
    )


# ---- the waiting loop ----------------------------------------------------------------------


class _Script:
    """Looks answered from a list (the last repeats), on a clock that moves only when the loop sleeps."""

    def __init__(self, *looks: rollout_watch.Look) -> None:
        self.looks = list(looks)
        self.now = 0.0
        self.calls = 0

    def look(self) -> rollout_watch.Look:
        self.calls += 1
        return self.looks.pop(0) if len(self.looks) > 1 else self.looks[0]

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += max(seconds, 0.25)  # a sleep of 0 still moves on, so a bug cannot spin forever

    def wait(self, requested: int | None = None, timeout: float | None = None, limit: float = 60) -> int:
        assert self.calls < 10_000
        return rollout_watch.wait_for_deployment(
            "web",
            self.look,
            requested,
            timeout,
            rollout_watch.PlainDisplay,
            clock=lambda: self.now,
            sleep=self.sleep,
            poll=1.0,
            unreachable_limit=limit,
        )


IN_PROGRESS_2_OF_6 = _described(PRIMARY_3, ACTIVE_2, counts=(_counts(3, 6, 3, 1, 2), _counts(2, 4, 4)))
IN_PROGRESS_4_OF_6 = _described(PRIMARY_3, ACTIVE_2, counts=(_counts(3, 6, 5, 0, 4), _counts(2, 2, 2)))


def test_wait_prints_a_line_only_when_something_changed_then_the_outcome(
    capsys: pytest.CaptureFixture[str],
) -> None:
    script = _Script(
        IN_PROGRESS_2_OF_6,
        IN_PROGRESS_2_OF_6,
        IN_PROGRESS_2_OF_6,
        IN_PROGRESS_4_OF_6,
        _described(DONE_3, counts=ALL_SIX),
    )
    assert script.wait() == rollout.EXIT_COMPLETED
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        rollout.progress_line(IN_PROGRESS_2_OF_6),
        rollout.progress_line(IN_PROGRESS_4_OF_6),
        rollout.progress_line(_described(DONE_3, counts=ALL_SIX)),
        "deployment 3 completed: web:4, 6 tasks healthy",
    ]


def test_wait_times_out_with_124_and_says_where_it_stood(capsys: pytest.CaptureFixture[str]) -> None:
    script = _Script(IN_PROGRESS_2_OF_6)
    assert script.wait(timeout=5) == rollout.EXIT_TIMEOUT
    assert 5 <= script.now < 7
    err = capsys.readouterr().err
    assert "error: deployment 3 did not finish within 5s; now: deployment 3 web:4 PRIMARY IN_PROGRESS" in err


def test_a_failure_prints_the_reason_and_the_events_since_the_deployment_began(
    capsys: pytest.CaptureFixture[str],
) -> None:
    events = (
        _event(1030, "deployment 3 failed: 3 tasks failed to start; rolled back to deployment 2 (web:3)"),
        _event(1010, "task 1a2b failed to start: no such image"),
        _event(1000, "deployment 3 started: web:4, 6 tasks"),
        _event(900, "service web has reached a steady state."),  # before the deployment: not its story
    )
    rolled_back = _described(BACK_TO_2, FAILED_3_ACTIVE, events=events)
    script = _Script(IN_PROGRESS_2_OF_6, rolled_back)
    assert script.wait() == rollout.EXIT_FAILED
    printed = capsys.readouterr()
    err = printed.err.splitlines()
    assert err[0] == (
        "error: deployment 3 failed: 3 tasks failed to start; rolled back to deployment 2 (web:3)"
        " (the rollback is in progress)"
    )
    assert err[1:] == [
        "events since the deployment began (oldest first):",
        "  deployment 3 started: web:4, 6 tasks",
        "  task 1a2b failed to start: no such image",
        "  deployment 3 failed: 3 tasks failed to start; rolled back to deployment 2 (web:3)",
    ]
    # Stdout has the progress only: no event (a rollback's "steady state" must not read as the outcome).
    assert printed.out.splitlines() == [
        rollout.progress_line(IN_PROGRESS_2_OF_6),
        rollout.progress_line(rolled_back),
    ]


def test_an_unreachable_control_plane_is_ridden_out_and_said(capsys: pytest.CaptureFixture[str]) -> None:
    gone = rollout_watch.UNREACHABLE
    script = _Script(
        IN_PROGRESS_2_OF_6, gone, gone, gone, gone, IN_PROGRESS_4_OF_6, _described(DONE_3, counts=ALL_SIX)
    )
    assert script.wait(limit=60) == rollout.EXIT_COMPLETED
    out = capsys.readouterr().out
    assert "the control plane is unreachable (restarting?); still waiting" in out
    assert "the control plane is reachable again" in out
    assert out.count("unreachable") == 1, "said once, not on every look"


def test_a_control_plane_unreachable_too_long_ends_the_wait(capsys: pytest.CaptureFixture[str]) -> None:
    script = _Script(IN_PROGRESS_2_OF_6, rollout_watch.UNREACHABLE)
    assert script.wait(limit=10) == rollout.EXIT_FAILED
    assert 10 < script.now < 13
    assert "error: the control plane stayed unreachable for 10s" in capsys.readouterr().err


def test_a_timeout_shorter_than_the_outage_still_exits_124() -> None:
    script = _Script(IN_PROGRESS_2_OF_6, rollout_watch.UNREACHABLE)
    assert script.wait(timeout=3, limit=60) == rollout.EXIT_TIMEOUT


def test_the_service_deleted_during_the_wait_is_a_failure(capsys: pytest.CaptureFixture[str]) -> None:
    assert _Script(IN_PROGRESS_2_OF_6, None).wait() == rollout.EXIT_FAILED
    assert "error: deployment 3: the service was deleted" in capsys.readouterr().err


def test_a_missing_service_or_deployment_is_refused_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    assert _Script(None).wait() == rollout.EXIT_FAILED
    assert capsys.readouterr().err.strip() == "error: service web not found"
    assert _Script(IN_PROGRESS_2_OF_6).wait(requested=9) == rollout.EXIT_FAILED
    assert capsys.readouterr().err.strip() == "error: service web has no deployment 9 (deployments: 1-3)"


def test_an_explicit_older_deployment_is_waited_for() -> None:
    # Deployment 2 is ACTIVE under 3: it was superseded.
    assert _Script(IN_PROGRESS_2_OF_6).wait(requested=2) == rollout.EXIT_FAILED


def test_the_live_view_renders_bars_counts_and_the_newest_event() -> None:
    description = _described(
        PRIMARY_3,
        ACTIVE_2,
        counts=(_counts(3, 6, 3, 1, 2), _counts(2, 4, 4)),
        events=(_event(1010, "task \x1b[31m1a2b started"), _event(1000, "deployment 3 started")),
    )
    console = Console(width=160, record=True, color_system=None, file=io.StringIO())
    console.print(rollout_watch.live_view(description, "the control plane is unreachable"))
    text = console.export_text()
    assert "deployment 3 web:4 PRIMARY IN_PROGRESS" in text
    assert "2/6 healthy, 3 running, 1 pending, 0 failed" in text
    assert "deployment 2 web:3 ACTIVE COMPLETED" in text and "4 running" in text
    assert "newest event: task \\x1b[31m1a2b started" in text, "control characters are shown escaped"
    assert "the control plane is unreachable" in text
