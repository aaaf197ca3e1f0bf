"""The agent boundary (controlplane.validation.agent_reports): cases from the
security review, what real agents send, and properties over adversarial input."""

from __future__ import annotations

import contextlib
import ipaddress
import math
import re
from collections.abc import Callable
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.reconciler import report
from agent.runtime.driver import ContainerPhase, ObservedContainer, ObservedTask
from berth.errors import InvalidArgument
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb
from controlplane.operations.nodes import NodeFacts
from controlplane.validation import agent_reports as v

T = TypeVar("T")

TASK_ID = "0123456789abcdef0123456789abcdef"
INJECTION = "10.0.0.9\nCOMMIT\n*filter\n-A INPUT -j ACCEPT\nCOMMIT\n"


def facts(**changes: object) -> NodeFacts:
    values: dict[str, object] = {
        "node_id": "",
        "name": "h1",
        "address": "192.0.2.10",
        "cpu_units": 4096,
        "memory_mib": 16384,
        "agent_version": "0.1.0-hollow",
        "attributes": {"zone": "a", "hollow-index": "7"},
    }
    values.update(changes)
    return NodeFacts(**values)  # type: ignore[arg-type]


def from_request(request: agent_pb.RegisterRequest) -> NodeFacts:
    """As controlplane.api.agents.Register builds it."""
    return NodeFacts(
        node_id=request.node_id,
        name=request.name,
        address=request.address,
        cpu_units=request.cpu_units,
        memory_mib=request.memory_mib,
        agent_version=request.agent_version,
        attributes=dict(request.attributes),
        cluster=request.cluster,
    )


def test_what_real_agents_register_is_accepted() -> None:
    v.check_registration(facts())
    v.check_registration(facts(node_id="node-0123456789ab", address="127.0.0.1", agent_version=""))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"address": INJECTION}, "is not an IPv4 address"),
        ({"address": "192.0.2.10\n"}, "is not an IPv4 address"),
        ({"address": " 192.0.2.10"}, "is not an IPv4 address"),
        ({"address": "192.0.2.010"}, "is not an IPv4 address"),
        ({"address": "::1"}, "is not an IPv4 address"),
        ({"address": "host.example"}, "is not an IPv4 address"),
        ({"address": "1" * 1_400_000}, "(1400000 characters)"),
        ({"address": "0.0.0.0"}, "cannot reach a host"),
        ({"address": "224.0.0.1"}, "cannot reach a host"),
        ({"address": ""}, "must report an address"),
        ({"name": "web\n"}, "is not a DNS label"),
        ({"node_id": "../../leader"}, "node id"),
        ({"node_id": "n" * 64}, "node id"),
        ({"cpu_units": 0}, "cpu_units 0 is out of range"),
        ({"cpu_units": 2**32 - 1}, "cpu_units 4294967295 is out of range"),
        ({"memory_mib": 2**32 - 1}, "memory_mib 4294967295 is out of range"),
        ({"agent_version": "1.0\nlevel=error"}, "agent version"),
        ({"agent_version": "v" * 65}, "agent version"),
        ({"attributes": {f"k{i}": "v" for i in range(17)}}, "at most 16 attributes"),
        ({"attributes": {"zone": "a" * 1_300_000}}, "attribute zone value"),
        ({"attributes": {"z one": "a"}}, "attribute name"),
        ({"attributes": {"zone": "a b"}}, "attribute zone value"),
        ({"attributes": {"zone": "a\n"}}, "attribute zone value"),
        ({"cluster": "Blue"}, "cluster name 'Blue' is not a DNS label"),
        ({"cluster": "c" * 1_000_000}, "cluster name"),
    ],
)
def test_bad_registrations_are_refused_in_one_short_line(changes: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        v.check_registration(facts(**changes))
    text = str(refused.value)
    assert message in text
    assert "\n" not in text and len(text) < 300


def running_report(**changes: object) -> agent_pb.TaskStatusReport:
    observed = ObservedTask(
        TASK_ID,
        (
            ObservedContainer(
                "web",
                "f" * 64,
                ContainerPhase.RUNNING,
                True,
                30,
                bindings=(
                    pb.NetworkBinding(
                        container_name="web",
                        container_port=80,
                        host_port=32768,
                        protocol=pb.TCP,
                        bind_ip="0.0.0.0",
                    ),
                    pb.NetworkBinding(
                        container_name="web",
                        container_port=53,
                        host_port=32769,
                        protocol=pb.UDP,
                        bind_ip="::",
                    ),
                ),
            ),
        ),
    )
    message = report(TASK_ID, pb.RUNNING, observed)
    for field, value in changes.items():
        setattr(message, field, value)
    return message


def test_what_real_agents_report_is_accepted() -> None:
    v.check_status_report(running_report())
    stopped = report(TASK_ID, pb.STOPPED, None, pb.ESSENTIAL_CONTAINER_EXITED, "Essential container exited")
    stopped.has_exit_code, stopped.exit_code = True, 137
    v.check_status_report(stopped)
    v.check_metrics(
        pb.NodeMetrics(cpu_percent=12.5, memory_used_bytes=1 << 30, memory_total_bytes=8 << 30), 4096
    )


def _binding(**changes: object) -> agent_pb.TaskStatusReport:
    message = running_report()
    for field, value in changes.items():
        setattr(message.network_bindings[0], field, value)
    return message


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (_binding(host_port=70000), "host_port 70000 is out of range"),
        (_binding(host_port=0), "host_port 0 is out of range"),
        (_binding(container_port=65536), "container_port 65536 is out of range"),
        (_binding(protocol=7), "protocol 7 is invalid"),
        (_binding(bind_ip="0.0.0.0\n-A INPUT"), "bind_ip"),
        (_binding(container_name="web\n"), "container_name"),
        (running_report(task_id="x" * 32), "task id"),
        (running_report(task_id=TASK_ID + "\n"), "task id"),
        (running_report(task_id=TASK_ID.upper()), "task id"),
        (running_report(last_status=pb.TASK_STATUS_UNSPECIFIED), "last_status 0"),
        (running_report(last_status=9), "last_status 9"),
        (running_report(stop_code=99), "stop_code 99"),
        (running_report(exit_code=256), "exit_code 256"),
        (running_report(exit_code=-2), "exit_code -2"),
        (running_report(stopped_reason="r" * 4097), "stopped_reason is 4097 characters"),
    ],
)
def test_bad_reports_are_refused(message: agent_pb.TaskStatusReport, expected: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(expected)):
        v.check_status_report(message)


def test_reports_are_bounded_in_entries() -> None:
    many_containers = running_report()
    many_containers.containers.extend(pb.ContainerState(name=f"c{i}") for i in range(64))
    with pytest.raises(InvalidArgument, match="at most 64 containers"):
        v.check_status_report(many_containers)
    many_bindings = running_report()
    many_bindings.network_bindings.extend(
        pb.NetworkBinding(container_port=80, host_port=1 + i) for i in range(1024)
    )
    with pytest.raises(InvalidArgument, match="at most 1024 network bindings"):
        v.check_status_report(many_bindings)


@pytest.mark.parametrize(
    ("metrics", "cpu_units", "expected"),
    [
        (pb.NodeMetrics(cpu_percent=math.nan), 4096, "cpu_percent nan"),
        (pb.NodeMetrics(cpu_percent=math.inf), 4096, "cpu_percent inf"),
        (pb.NodeMetrics(cpu_percent=-1), 4096, "cpu_percent -1"),
        (pb.NodeMetrics(cpu_percent=401), 4096, "use 0-400"),
        (pb.NodeMetrics(memory_used_bytes=2, memory_total_bytes=1), 4096, "memory_used_bytes 2"),
        (pb.NodeMetrics(memory_total_bytes=2**64 - 1), 4096, "memory_total_bytes"),
    ],
)
def test_bad_metrics_are_refused(metrics: pb.NodeMetrics, cpu_units: int, expected: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(expected)):
        v.check_metrics(metrics, cpu_units)


def test_a_timestamp_out_of_range_is_refused() -> None:
    metrics = pb.NodeMetrics()
    metrics.sampled_at.seconds = 2**62
    with pytest.raises(InvalidArgument, match="sampled_at"):
        v.check_metrics(metrics, 1024)


# Properties. Values mix the valid, the nearly valid and the hostile, so that
# both branches (accepted, refused) are taken often.

HOSTILE_TEXT = st.one_of(
    st.text(max_size=80),
    st.text(alphabet=st.characters(codec="ascii"), max_size=80),
    st.sampled_from(["", "\n", "COMMIT", INJECTION, " ", "\x1b[31m", "-A INPUT -j ACCEPT"]),
    st.sampled_from([64, 129, 256, 4097, 1_400_000]).map(lambda n: "a" * n),
)


def mostly(valid: st.SearchStrategy[T], hostile: st.SearchStrategy[T]) -> st.SearchStrategy[T]:
    """Valid nine times in ten: a message with many fields is then often valid as a whole."""
    return st.integers(0, 9).flatmap(lambda i: hostile if i == 0 else valid)


IPV4 = st.ip_addresses(v=4).map(str)
ADDRESSES = mostly(
    IPV4,
    st.one_of(
        st.ip_addresses(v=6).map(str),
        st.tuples(IPV4, HOSTILE_TEXT).map("".join),
        st.tuples(HOSTILE_TEXT, IPV4).map("".join),
        st.lists(st.integers(0, 999).map(str), min_size=1, max_size=5).map(".".join),
        HOSTILE_TEXT,
    ),
)
LABELS = mostly(st.from_regex(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", fullmatch=True), HOSTILE_TEXT)
UINT32 = st.one_of(st.integers(0, 2**32 - 1), st.sampled_from([0, 1, 1024, 2**31, 2**32 - 1]))
INT32 = st.integers(-(2**31), 2**31 - 1)
PORTS = mostly(st.integers(1, 65535), UINT32)
EXIT_CODES = mostly(st.integers(-1, 255), INT32)
ATTRIBUTES = st.dictionaries(
    mostly(st.from_regex(r"[a-z][a-z0-9.-]{0,20}", fullmatch=True), HOSTILE_TEXT),
    mostly(st.from_regex(r"[a-z0-9]{0,20}", fullmatch=True), HOSTILE_TEXT),
    max_size=20,
)
PROPERTY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _registration_holds(n: NodeFacts) -> None:
    address = ipaddress.IPv4Address(n.address)
    assert str(address) == n.address and not address.is_unspecified
    assert re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", n.name)
    assert not n.node_id or re.fullmatch(r"[a-z0-9-]{1,63}", n.node_id)
    assert 1 <= n.cpu_units <= v.MAX_CPU_UNITS and 1 <= n.memory_mib <= v.MAX_MEMORY_MIB
    assert len(n.agent_version) <= 64 and n.agent_version.isascii() and n.agent_version.isprintable()
    assert len(n.attributes) <= 16
    for key, value in n.attributes.items():
        assert 1 <= len(key) <= 128 and len(value) <= 128
        assert (key + value).isascii() and (key + value).isprintable() and " " not in key + value


@PROPERTY
@given(
    node_id=st.one_of(st.just(""), LABELS),
    name=LABELS,
    address=ADDRESSES,
    cpu_units=mostly(st.integers(1, v.MAX_CPU_UNITS), UINT32),
    memory_mib=mostly(st.integers(1, v.MAX_MEMORY_MIB), UINT32),
    agent_version=mostly(st.just("0.1.0"), HOSTILE_TEXT),
    attributes=ATTRIBUTES,
)
def test_any_registration_is_accepted_within_bounds_or_refused_cleanly(
    node_id: str,
    name: str,
    address: str,
    cpu_units: int,
    memory_mib: int,
    agent_version: str,
    attributes: dict[str, str],
) -> None:
    request = agent_pb.RegisterRequest(
        node_id=node_id,
        name=name,
        address=address,
        cpu_units=cpu_units,
        memory_mib=memory_mib,
        agent_version=agent_version,
        attributes=attributes,
    )
    registration = from_request(request)
    try:
        v.check_registration(registration)
    except InvalidArgument as error:
        assert "\n" not in str(error) and len(str(error)) < 400
        return
    _registration_holds(registration)


@PROPERTY
@given(address=ADDRESSES)
def test_an_accepted_address_is_one_canonical_ipv4_address(address: str) -> None:
    try:
        v.check_node_address(address)
    except InvalidArgument:
        return
    assert str(ipaddress.IPv4Address(address)) == address
    assert not any(c.isspace() for c in address)


BINDINGS = st.builds(
    pb.NetworkBinding,
    container_name=mostly(st.just("web"), HOSTILE_TEXT),
    container_port=PORTS,
    host_port=PORTS,
    protocol=mostly(st.sampled_from([pb.TCP, pb.UDP]), INT32),
    bind_ip=st.one_of(st.just(""), ADDRESSES),
)
CONTAINERS = st.builds(
    pb.ContainerState,
    name=mostly(st.just("web"), HOSTILE_TEXT),
    docker_id=mostly(st.just("f" * 64), HOSTILE_TEXT),
    last_status=mostly(st.sampled_from(pb.TaskStatus.values()), INT32),
    has_exit_code=st.booleans(),
    exit_code=EXIT_CODES,
    reason=mostly(st.just("OOMKilled"), HOSTILE_TEXT),
)
REPORTS = st.builds(
    agent_pb.TaskStatusReport,
    task_id=mostly(st.from_regex(r"[0-9a-f]{32}", fullmatch=True), HOSTILE_TEXT),
    last_status=mostly(st.sampled_from([pb.PENDING, pb.RUNNING, pb.STOPPED]), INT32),
    containers=mostly(
        st.lists(CONTAINERS, max_size=3), st.integers(60, 70).map(lambda n: [pb.ContainerState()] * n)
    ),
    network_bindings=st.lists(BINDINGS, max_size=3),
    stop_code=mostly(st.sampled_from(pb.StopCode.values()), INT32),
    stopped_reason=mostly(st.just(""), HOSTILE_TEXT),
    has_exit_code=st.booleans(),
    exit_code=EXIT_CODES,
)


@PROPERTY
@given(message=st.builds(agent_pb.AgentMessage, status=REPORTS))
def test_any_status_report_is_accepted_within_bounds_or_refused_cleanly(
    message: agent_pb.AgentMessage,
) -> None:
    # Through the wire format, as the control plane receives it.
    status = agent_pb.AgentMessage.FromString(message.SerializeToString()).status
    try:
        v.check_status_report(status)
    except InvalidArgument as error:
        assert "\n" not in str(error) and len(str(error)) < 400
        return
    assert re.fullmatch(r"[0-9a-f]{32}", status.task_id)
    assert status.last_status in (pb.PENDING, pb.RUNNING, pb.STOPPED)
    assert status.stop_code in pb.StopCode.values() and -1 <= status.exit_code <= 255
    assert len(status.stopped_reason) <= 4096 and len(status.containers) <= 64
    for binding in status.network_bindings:
        assert 1 <= binding.host_port <= 65535 and 1 <= binding.container_port <= 65535
        assert binding.protocol in (pb.TCP, pb.UDP)
        assert not binding.bind_ip or ipaddress.ip_address(binding.bind_ip)
        assert re.fullmatch(r"[A-Za-z0-9_-]*", binding.container_name)
    for container in status.containers:
        assert -1 <= container.exit_code <= 255 and len(container.reason) <= 4096
        assert re.fullmatch(r"[A-Za-z0-9_-]*", container.name)


@PROPERTY
@given(data=st.binary(max_size=300))
def test_any_bytes_that_parse_as_a_message_are_accepted_or_refused_cleanly(data: bytes) -> None:
    try:
        message = agent_pb.AgentMessage.FromString(data)
    except Exception:  # not a message at all: gRPC refuses it before any servicer runs
        return
    checks: list[Callable[[], None]] = [
        lambda: v.check_status_report(message.status),
        lambda: v.check_metrics(message.heartbeat.metrics, 4096),
        lambda: v.check_node_id(message.hello.node_id),
    ]
    for check in checks:
        with contextlib.suppress(InvalidArgument):
            check()


@PROPERTY
@given(
    cpu_percent=mostly(st.floats(0, 100), st.floats(allow_nan=True, allow_infinity=True)),
    used=mostly(st.integers(0, 2**36), st.integers(0, 2**64 - 1)),
    total=mostly(st.integers(2**36, v.MAX_MEMORY_BYTES), st.integers(0, 2**64 - 1)),
    seconds=mostly(st.integers(0, 2**33), st.integers(-(2**63), 2**63 - 1)),
    nanos=mostly(st.integers(0, 999_999_999), INT32),
    cpu_units=mostly(st.integers(1, v.MAX_CPU_UNITS), UINT32),
)
def test_any_metrics_are_accepted_within_bounds_or_refused_cleanly(
    cpu_percent: float, used: int, total: int, seconds: int, nanos: int, cpu_units: int
) -> None:
    metrics = pb.NodeMetrics(cpu_percent=cpu_percent, memory_used_bytes=used, memory_total_bytes=total)
    metrics.sampled_at.seconds, metrics.sampled_at.nanos = seconds, nanos
    try:
        v.check_metrics(metrics, cpu_units)
    except InvalidArgument:
        return
    assert math.isfinite(metrics.cpu_percent) and 0 <= metrics.cpu_percent
    assert metrics.cpu_percent <= 100 * max(1, math.ceil(min(cpu_units, v.MAX_CPU_UNITS) / 1024))
    assert metrics.memory_used_bytes <= metrics.memory_total_bytes <= v.MAX_MEMORY_BYTES
    metrics.sampled_at.ToDatetime()  # what `berth top` and ListNodes would do with it
