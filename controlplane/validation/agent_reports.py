"""What an agent may send: its registration, hellos, status reports, heartbeats.

Every field an agent reports is checked here before it reaches etcd, a
snapshot or an iptables rule: names and ids full-matched against a charset,
numbers bounded, addresses parsed, strings and lists bounded in size. A
node's address ends up in every host's `--to-destination`, and a bound port
in every host's rule batch, so one bad value would otherwise break (or
program) every host at once.

Each check returns nothing or raises `InvalidArgument` naming the field and
the rule; the value is quoted shortened, so a megabyte of garbage makes a
one-line error.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from google.protobuf import timestamp_pb2

from berth import execlimits, loglines
from berth.errors import InvalidArgument
from berth.names import check_dns_label
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb

if TYPE_CHECKING:
    from controlplane.operations.nodes import NodeFacts

# Registration. Attributes follow ECS's custom attributes (names up to 128
# characters, values up to 128), with the charset narrowed to what a
# placement expression (`attribute:NAME == VALUE`) can hold unquoted.
MAX_ATTRIBUTES = 16
MAX_ATTRIBUTE_NAME = 128
MAX_ATTRIBUTE_VALUE = 128
_ATTRIBUTE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_./-]*")
_ATTRIBUTE_VALUE = re.compile(r"[A-Za-z0-9_.@/:-]*")
MAX_AGENT_VERSION = 64
_AGENT_VERSION = re.compile(r"[A-Za-z0-9.+_~-]*")
# Node ids are given by the control plane ("node-" and 12 hex digits); an
# agent echoes its own, so any DNS label is accepted back.
_NODE_ID = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
MAX_CPU_UNITS = 4096 * 1024  # 4,096 cores
MAX_MEMORY_MIB = 64 * 1024 * 1024  # 64 TiB

# Status reports.
_TASK_ID = re.compile(r"[0-9a-f]{32}")  # controlplane.lifecycle: uuid4().hex
# Container names as task definitions allow them (berth.taskdef), or empty.
_CONTAINER_NAME = re.compile(r"[A-Za-z0-9_-]{0,255}")
# Docker's 64 hex digits, or a test driver's own ids.
_RUNTIME_ID = re.compile(r"[A-Za-z0-9_.-]{0,128}")
MAX_CONTAINERS = 64
MAX_BINDINGS = 1024
MAX_REASON = 4096
# A process's exit status is 0-255 (128 + N after signal N); Docker says -1
# when it could not learn it.
MIN_EXIT_CODE, MAX_EXIT_CODE = -1, 255
_REPORTED_STATUSES = frozenset({pb.PENDING, pb.RUNNING, pb.STOPPED})
_CONTAINER_STATUSES = frozenset(pb.TaskStatus.values())
_STOP_CODES = frozenset(pb.StopCode.values())
_PROTOCOLS = frozenset({pb.TCP, pb.UDP})
_HEALTH_STATUSES = frozenset(pb.HealthStatus.values())

# Heartbeat metrics: a host's memory is at most MAX_MEMORY_MIB.
MAX_MEMORY_BYTES = MAX_MEMORY_MIB * 1024 * 1024
# google.protobuf.Timestamp's own range: 0001-01-01 to 9999-12-31.
_MIN_SECONDS, _MAX_SECONDS = -62_135_596_800, 253_402_300_799

_SHOWN = 40


def shown(value: object) -> str:
    """The value quoted for an error message, cut short: never a megabyte in a log line."""
    text = repr(value)
    return text if len(text) <= _SHOWN else f"{text[:_SHOWN]}...' ({len(str(value))} characters)"


def _check_text(field: str, value: str, pattern: re.Pattern[str], limit: int, rule: str) -> None:
    if len(value) > limit or not pattern.fullmatch(value):
        raise InvalidArgument(f"{field} {shown(value)} is invalid: use {rule}, at most {limit} characters")


def _check_range(field: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise InvalidArgument(f"{field} {value} is out of range: use {low}-{high}")


def check_node_address(address: str) -> str:
    """The address other hosts reach this node at: one IPv4 address, written as such."""
    if not address:
        raise InvalidArgument("the agent must report an address (--address)")
    try:
        parsed = ipaddress.IPv4Address(address) if address.isascii() else None
    except ValueError:
        parsed = None
    if parsed is None or str(parsed) != address:
        raise InvalidArgument(
            f"node address {shown(address)} is not an IPv4 address: give --address as four "
            "decimal numbers, such as 192.0.2.10"
        )
    if parsed.is_unspecified or parsed.is_multicast or parsed == ipaddress.IPv4Address("255.255.255.255"):
        raise InvalidArgument(
            f"node address {address} cannot reach a host: give --address as the host's own unicast address"
        )
    return address


def check_node_id(node_id: str) -> None:
    if not _NODE_ID.fullmatch(node_id):
        raise InvalidArgument(
            f"node id {shown(node_id)} is invalid: use the id the control plane gave (a DNS label)"
        )


def check_attributes(attributes: Mapping[str, str]) -> None:
    if len(attributes) > MAX_ATTRIBUTES:
        raise InvalidArgument(f"a node has at most {MAX_ATTRIBUTES} attributes, not {len(attributes)}")
    for name, value in attributes.items():
        _check_text(
            "attribute name",
            name,
            _ATTRIBUTE_NAME,
            MAX_ATTRIBUTE_NAME,
            "letters, digits, '_', '.', '/' or '-', starting with a letter or digit",
        )
        _check_text(
            f"attribute {name} value",
            value,
            _ATTRIBUTE_VALUE,
            MAX_ATTRIBUTE_VALUE,
            "letters, digits, '_', '.', '@', '/', ':' or '-'",
        )


def check_registration(facts: NodeFacts) -> None:
    """A RegisterRequest, as `Nodes.register` receives it."""
    if facts.node_id:
        check_node_id(facts.node_id)
    if len(facts.name) > 63:
        raise InvalidArgument(f"node name {shown(facts.name)} is too long: a DNS label has 1-63 characters")
    check_dns_label("node", facts.name)
    if facts.cluster:
        check_dns_label("cluster", facts.cluster)
    check_node_address(facts.address)
    _check_range("cpu_units", facts.cpu_units, 1, MAX_CPU_UNITS)
    _check_range("memory_mib", facts.memory_mib, 1, MAX_MEMORY_MIB)
    _check_text(
        "agent version",
        facts.agent_version,
        _AGENT_VERSION,
        MAX_AGENT_VERSION,
        "letters, digits, '.', '+', '_', '~' or '-'",
    )
    check_attributes(facts.attributes)


def _check_binding(where: str, binding: pb.NetworkBinding) -> None:
    _check_text(
        f"{where}.container_name", binding.container_name, _CONTAINER_NAME, 255, "letters, digits, '_' or '-'"
    )
    _check_range(f"{where}.container_port", binding.container_port, 1, 65535)
    _check_range(f"{where}.host_port", binding.host_port, 1, 65535)
    if binding.protocol not in _PROTOCOLS:
        raise InvalidArgument(f"{where}.protocol {binding.protocol} is invalid: use TCP (0) or UDP (1)")
    if binding.bind_ip:
        try:
            ipaddress.ip_address(binding.bind_ip if binding.bind_ip.isascii() else "")
        except ValueError:
            raise InvalidArgument(f"{where}.bind_ip {shown(binding.bind_ip)} is not an IP address") from None


def _check_exit_code(where: str, exit_code: int) -> None:
    _check_range(f"{where}.exit_code", exit_code, MIN_EXIT_CODE, MAX_EXIT_CODE)


def _check_reason(field: str, reason: str) -> None:
    if len(reason) > MAX_REASON:
        raise InvalidArgument(f"{field} is {len(reason)} characters long: at most {MAX_REASON}")


def _check_health(field: str, health: int) -> None:
    if health not in _HEALTH_STATUSES:
        raise InvalidArgument(
            f"{field} {health} is invalid: use HEALTH_UNKNOWN (0), HEALTHY (1) or UNHEALTHY (2)"
        )


def check_status_report(report: agent_pb.TaskStatusReport) -> None:
    """One task's status as its agent reports it."""
    if not _TASK_ID.fullmatch(report.task_id):
        raise InvalidArgument(f"task id {shown(report.task_id)} is invalid: a task id is 32 hex digits")
    if report.last_status not in _REPORTED_STATUSES:
        raise InvalidArgument(f"last_status {report.last_status} is invalid: use PENDING, RUNNING or STOPPED")
    if report.stop_code not in _STOP_CODES:
        raise InvalidArgument(f"stop_code {report.stop_code} is not a stop code")
    _check_reason("stopped_reason", report.stopped_reason)
    _check_exit_code("task", report.exit_code)
    _check_health("health_status", report.health_status)
    if len(report.containers) > MAX_CONTAINERS:
        raise InvalidArgument(
            f"a report lists at most {MAX_CONTAINERS} containers, not {len(report.containers)}"
        )
    for index, container in enumerate(report.containers):
        where = f"containers[{index}]"
        _check_text(f"{where}.name", container.name, _CONTAINER_NAME, 255, "letters, digits, '_' or '-'")
        _check_text(
            f"{where}.docker_id", container.docker_id, _RUNTIME_ID, 128, "letters, digits, '_', '.' or '-'"
        )
        if container.last_status not in _CONTAINER_STATUSES:
            raise InvalidArgument(f"{where}.last_status {container.last_status} is not a task status")
        _check_exit_code(where, container.exit_code)
        _check_reason(f"{where}.reason", container.reason)
        _check_health(f"{where}.health_status", container.health_status)
        _check_reason(f"{where}.health_output", container.health_output)
    if len(report.network_bindings) > MAX_BINDINGS:
        raise InvalidArgument(
            f"a report lists at most {MAX_BINDINGS} network bindings, not {len(report.network_bindings)}"
        )
    for index, binding in enumerate(report.network_bindings):
        _check_binding(f"network_bindings[{index}]", binding)
    if report.HasField("kept_output"):
        check_kept_output(report.kept_output)


def _check_lines(field: str, lines: list[str], max_lines: int, max_line: int) -> None:
    if len(lines) > max_lines:
        raise InvalidArgument(f"{field} has {len(lines)} lines: at most {max_lines}")
    for index, line in enumerate(lines):
        if len(line) > max_line:
            raise InvalidArgument(f"{field}[{index}] is {len(line)} characters long: at most {max_line}")
        if "\n" in line:
            raise InvalidArgument(f"{field}[{index}] holds a line break: send one line per entry")


def check_kept_output(kept: pb.KeptOutput) -> None:
    """A stopped task's last lines: few and short, since they stay in etcd with the task."""
    _check_text("kept_output.container", kept.container, _CONTAINER_NAME, 255, "letters, digits, '_' or '-'")
    lines = list(kept.lines)
    _check_lines("kept_output.lines", lines, loglines.KEPT_LINES, loglines.KEPT_BYTES)
    size = loglines.utf8_size(lines)
    if size > loglines.KEPT_BYTES:
        raise InvalidArgument(f"kept_output is {size} bytes: at most {loglines.KEPT_BYTES}")


_REQUEST_ID = re.compile(r"[0-9a-f]{32}")


def check_log_chunk(chunk: pb.LogChunk) -> None:
    """A piece of live container output answering a LogRequest (routed by request_id)."""
    if not _REQUEST_ID.fullmatch(chunk.request_id):
        raise InvalidArgument(
            f"request id {shown(chunk.request_id)} is invalid: a request id is 32 hex digits"
        )
    if chunk.task_id and not _TASK_ID.fullmatch(chunk.task_id):
        raise InvalidArgument(f"task id {shown(chunk.task_id)} is invalid: a task id is 32 hex digits")
    _check_text("container", chunk.container, _CONTAINER_NAME, 255, "letters, digits, '_' or '-'")
    lines = list(chunk.lines)
    _check_lines("lines", lines, loglines.MAX_CHUNK_LINES, loglines.MAX_LINE_CHARS)
    total = sum(len(line) for line in lines)
    if total > loglines.MAX_CHUNK_CHARS:
        raise InvalidArgument(f"a log chunk holds {total} characters: at most {loglines.MAX_CHUNK_CHARS}")
    _check_reason("error", chunk.error)


def check_exec_output(output: pb.ExecOutput) -> None:
    """A piece of a command's output, or its exit, answering an ExecInput (routed by request_id)."""
    if not _REQUEST_ID.fullmatch(output.request_id):
        raise InvalidArgument(
            f"request id {shown(output.request_id)} is invalid: a request id is 32 hex digits"
        )
    body = output.WhichOneof("body")
    if body is None:
        raise InvalidArgument("an exec output must carry started, stdout, stderr or exit")
    if body == "started":
        _check_text("started", output.started, _CONTAINER_NAME, 255, "letters, digits, '_' or '-'")
    elif body in ("stdout", "stderr"):
        size = len(getattr(output, body))
        if size > execlimits.MAX_CHUNK:
            raise InvalidArgument(f"an exec output holds {size} bytes: at most {execlimits.MAX_CHUNK}")
    else:
        _check_reason("exit.error", output.exit.error)


def _check_timestamp(field: str, stamp: timestamp_pb2.Timestamp) -> None:
    if not (_MIN_SECONDS <= stamp.seconds <= _MAX_SECONDS and 0 <= stamp.nanos <= 999_999_999):
        raise InvalidArgument(f"{field} is not a valid time")


def check_metrics(metrics: pb.NodeMetrics, cpu_units: int) -> None:
    """A heartbeat's host metrics; cpu_units is the node's registered capacity."""
    cores = max(1, math.ceil(min(cpu_units, MAX_CPU_UNITS) / 1024))
    if not (math.isfinite(metrics.cpu_percent) and 0.0 <= metrics.cpu_percent <= 100.0 * cores):
        raise InvalidArgument(f"cpu_percent {metrics.cpu_percent!r} is out of range: use 0-{100 * cores}")
    _check_range("memory_total_bytes", metrics.memory_total_bytes, 0, MAX_MEMORY_BYTES)
    _check_range("memory_used_bytes", metrics.memory_used_bytes, 0, metrics.memory_total_bytes)
    _check_timestamp("sampled_at", metrics.sampled_at)
