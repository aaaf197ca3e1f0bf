"""Docker's container list merged with its event stream (pure): the list lags, the events win."""

from __future__ import annotations

from typing import Any

import pytest

from agent.runtime.docker_events import ContainerEvent, parse_event
from agent.runtime.docker_state import (
    ContainerLedger,
    Death,
    ListedContainer,
    bindings_from_inspect,
    bindings_from_list,
    from_summary,
    merge,
)
from agent.runtime.driver import ContainerPhase, ObservedContainer
from berth.v1 import resources_pb2 as pb

BINDING = pb.NetworkBinding(container_name="web", container_port=80, host_port=32768, bind_ip="0.0.0.0")


def listed(state: str, container_id: str = "c1", node_id: str = "n1") -> ListedContainer:
    return ListedContainer(container_id, "t1", node_id, "web", True, 30, state, (BINDING,))


def container(phase: ContainerPhase, **details: Any) -> ObservedContainer:
    return ObservedContainer("web", "c1", phase, True, 30, **details)


STARTED = container(ContainerPhase.RUNNING, bindings=(BINDING,))
FINISHED = container(ContainerPhase.EXITED, exit_code=2, reason="boom")

# (case, list state, death, just started, finished, expected; None = inspect it)
MERGES: list[tuple[str, str, Death | None, ObservedContainer | None, ObservedContainer | None, Any]] = [
    ("running, nothing heard", "running", None, None, None, STARTED),
    (
        "the list still says running after a die event: the die wins",
        "running",
        Death(137, "OOMKilled"),
        None,
        None,
        container(ContainerPhase.EXITED, exit_code=137, reason="OOMKilled"),
    ),
    (
        "a container started again after a die stays exited (Berth never restarts one)",
        "running",
        Death(0),
        STARTED,
        None,
        container(ContainerPhase.EXITED, exit_code=0),
    ),
    ("the list still says created after our own start", "created", None, STARTED, None, STARTED),
    (
        "created after our start, but it died already",
        "created",
        Death(1),
        STARTED,
        None,
        container(ContainerPhase.CREATED),
    ),
    (
        "created and never started (an interrupted start)",
        "created",
        None,
        None,
        None,
        container(ContainerPhase.CREATED),
    ),
    ("exited, inspected before", "exited", Death(2), None, FINISHED, FINISHED),
    ("exited, never inspected: inspect it", "exited", Death(2), None, None, None),
    ("exited right after our start, no event yet: trust our start", "exited", None, STARTED, None, STARTED),
]


@pytest.mark.parametrize(
    ("state", "death", "just_started", "finished", "expected"),
    [m[1:] for m in MERGES],
    ids=[m[0] for m in MERGES],
)
def test_merge(
    state: str,
    death: Death | None,
    just_started: ObservedContainer | None,
    finished: ObservedContainer | None,
    expected: ObservedContainer | None,
) -> None:
    assert merge(listed(state), death, just_started, finished) == expected


def die(container_id: str = "c1", exit_code: int = 137, node_id: str = "n1") -> ContainerEvent:
    return ContainerEvent("die", container_id, "t1", node_id, exit_code)


def test_a_die_event_beats_the_lagging_list_and_an_oom_before_it_names_the_reason() -> None:
    ledger = ContainerLedger()
    ledger.record(ContainerEvent("oom", "c1", "t1", "n1"))
    ledger.record(die())
    assert ledger.observe(listed("running")) == container(
        ContainerPhase.EXITED, exit_code=137, reason="OOMKilled"
    )


def test_our_own_start_is_believed_until_the_list_says_running_itself() -> None:
    ledger = ContainerLedger()
    ledger.started("n1", STARTED)
    assert ledger.observe(listed("created")) == STARTED
    assert ledger.observe(listed("running")) == STARTED
    # Once the list caught up, the start is forgotten: a later "created" is believed.
    assert ledger.observe(listed("created")) == container(ContainerPhase.CREATED)


def test_an_exited_container_is_inspected_once() -> None:
    ledger = ContainerLedger()
    assert ledger.observe(listed("exited")) is None
    first = ledger.inspected(listed("exited"), {"ExitCode": 3, "Error": "", "OOMKilled": False})
    assert first == container(ContainerPhase.EXITED, exit_code=3, reason="")
    assert ledger.observe(listed("exited")) == first
    vanished = ledger.inspected(listed("exited", "c2"), {})
    assert (vanished.exit_code, vanished.reason) == (-1, "")
    oom = ledger.inspected(listed("exited", "c3"), {"ExitCode": 137, "OOMKilled": True, "Error": "x"})
    assert oom.reason == "OOMKilled"


def test_facts_are_forgotten_once_a_list_shows_the_container_gone() -> None:
    ledger = ContainerLedger()
    ledger.record(die("c1"))
    ledger.started("n1", STARTED)
    ledger.inspected(listed("exited", "c2"), {"ExitCode": 0})
    since = ledger.mark()
    ledger.forget_missing("n1", {"c2"}, since)
    assert len(ledger) == 1  # only c2, which the list still shows
    # c1's death is gone with it: were the id ever listed again, the list would be believed.
    assert ledger.observe(listed("created")) == container(ContainerPhase.CREATED)


def test_a_list_asked_for_before_a_container_existed_does_not_erase_its_death() -> None:
    ledger = ContainerLedger()
    since = ledger.mark()  # the list is requested...
    ledger.record(die("c1"))  # ...the container starts and dies meanwhile...
    ledger.forget_missing("n1", set(), since)  # ...and the list comes back without it
    assert ledger.observe(listed("running")) == container(ContainerPhase.EXITED, exit_code=137)


def test_a_node_forgets_only_its_own_containers() -> None:
    ledger = ContainerLedger()
    ledger.record(die("c1", node_id="n1"))
    ledger.record(die("c2", node_id="n2"))
    ledger.forget_missing("n1", set(), ledger.mark())
    assert ledger.observe(listed("running", "c2", "n2")).phase is ContainerPhase.EXITED  # type: ignore[union-attr]
    assert ledger.observe(listed("running", "c1")).phase is ContainerPhase.RUNNING  # type: ignore[union-attr]


def test_events_that_say_nothing_about_an_exit_are_not_kept() -> None:
    ledger = ContainerLedger()
    ledger.record(ContainerEvent("start", "c1", "t1", "n1"))
    ledger.record(ContainerEvent("destroy", "c1", "t1", "n1"))
    assert len(ledger) == 0


def test_parse_event_reads_berths_labels_and_the_exit_code() -> None:
    raw = {
        "Type": "container",
        "Action": "die",
        "id": "abc",
        "Actor": {
            "ID": "abc",
            "Attributes": {"berth.task-id": "t1", "berth.node-id": "n1", "exitCode": "143"},
        },
    }
    assert parse_event(raw) == ContainerEvent("die", "abc", "t1", "n1", 143)
    assert parse_event({"Action": "exec_start: sh -c true", "id": "abc"}).action == "exec_start"


def test_summary_and_bindings_prefer_ipv4_and_skip_unpublished_ports() -> None:
    summary = {
        "Id": "c1",
        "State": "running",
        "Labels": {
            "berth.task-id": "t1",
            "berth.node-id": "n1",
            "berth.container-name": "web",
            "berth.essential": "false",
            "berth.stop-timeout": "5",
        },
        "Ports": [
            {"PrivatePort": 80, "PublicPort": 32768, "Type": "tcp", "IP": "0.0.0.0"},
            {"PrivatePort": 80, "PublicPort": 32768, "Type": "tcp", "IP": "::"},
            {"PrivatePort": 9090, "Type": "tcp"},
        ],
    }
    assert from_summary(summary) == ListedContainer("c1", "t1", "n1", "web", False, 5, "running", (BINDING,))
    assert from_summary({"Id": "x", "Labels": {"berth.managed": "true"}}) is None
    inspected = bindings_from_inspect(
        "web", {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "32768"}], "53/udp": [], "9/tcp": None}
    )
    assert inspected == (BINDING,)
    (udp,) = bindings_from_list("dns", [{"PrivatePort": 53, "PublicPort": 31000, "Type": "udp", "IP": "::"}])
    assert (udp.protocol, udp.bind_ip) == (pb.UDP, "::")
