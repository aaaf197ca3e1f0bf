"""Who may call what on the operator API, and the audit log of every change.

Every operator call needs a user certificate of this cluster whose serial is
one the user's record lists (so `berth user delete` revokes at once). Each
RPC needs a role at least as strong as the table below says (VIEWER, DEPLOYER,
ADMIN); an RPC missing from the table needs admin (a new RPC is closed until
someone decides, and a unit test fails until the decision is written down).
A viewer's calls are reads only, which a unit test holds VIEWER to.

    viewer    reads: lists, describes, endpoints, events, logs
    deployer  + task definitions, services, tasks, secrets, exec
    admin     + clusters, nodes, join tokens, users, access keys (even listing them)

Every call that needs more than viewer is written to the audit log, allowed
or not (a successful PutMetric excepted: QUIET_WHEN_OK), with who, what,
when and the result: one JSON object a line, in a private file of the
replica that served it (`<data-dir>/audit.log`). A streaming call is
written when it starts and again when it ends; for one with a request
stream (Exec), what it acts on is its first message, so an exec's entries
name the task, container and command, and the last one the command's exit
code.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import shlex
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import Message

from berth import pki
from berth.errors import BerthError, PermissionDenied
from berth.files import open_private_append
from berth.safetext import escape_controls
from controlplane.api import peers
from controlplane.api.errors import Context, abort_for
from controlplane.cache import ClusterCache

log = logging.getLogger(__name__)

ROLES = ("viewer", "deployer", "admin")
_RANK = {role: rank for rank, role in enumerate(ROLES)}

VIEWER = {
    "ListClusters",
    "ListTaskDefinitions",
    "DescribeTaskDefinition",
    "ListServices",
    "DescribeService",
    "ListEndpoints",
    "ListTasks",
    "DescribeTask",
    "ListNodes",
    "ListServiceEvents",
    "StreamLogs",
    "ListMetrics",
    "GetUsage",
    "RecommendResources",
    "GetApiSettings",
}
DEPLOYER = {
    "RegisterTaskDefinition",
    "DeregisterTaskDefinition",
    "CreateService",
    "UpdateService",
    "DeleteService",
    "ExposeService",
    "UnexposeService",
    "RunTask",
    "StopTask",
    "PutSecret",
    "DeleteSecret",
    "ListSecrets",
    "Exec",
    "PutScalingPolicy",
    "DeleteScalingPolicy",
    "PutMetric",
}
# Admin's own calls, listed so that every RPC has its decision written down
# (tests/unit/test_access_roles.py holds the three sets to the service's RPCs); an RPC in none
# of them still needs admin.
ADMIN = {
    "CreateCluster",
    "DeleteCluster",
    "UpdateNodeStatus",
    "RemoveNode",
    "CreateJoinToken",
    "ListJoinTokens",
    "RevokeJoinToken",
    "CreateUser",
    "ListUsers",
    "DeleteUser",
    "CreateAccessKey",
    "ListAccessKeys",
    "DeleteAccessKey",
}
# Calls too frequent to audit when they succeed (an application pushes a metric every few
# seconds) and that change nothing durable; refused ones are still written.
QUIET_WHEN_OK = {"PutMetric"}


def allowed(role: str, required: str) -> bool:
    """A role at least as strong as `required` (an unknown role is allowed nothing)."""
    return role in _RANK and _RANK[role] >= _RANK[required]


def required_role(method: str) -> str:
    if method in VIEWER:
        return "viewer"
    if method in DEPLOYER:
        return "deployer"
    return "admin"


class AuditLog:
    """Append-only JSON lines; a failure to write is logged, never hidden."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._lock = threading.Lock()

    def write(self, user: str, method: str, request: Message | None, result: str) -> None:
        self.record(user, method, _target(request), result)

    def record(self, user: str, call: str, target: str, result: str) -> None:
        """One entry: `target` names what the call acted on, never a value."""
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "user": user,
            "call": call,
            "target": target,
            "result": result,
        }
        line = json.dumps(entry, sort_keys=True) + "\n"
        log.info(
            "event=audit user=%s call=%s result=%s target=%s",
            user,
            call,
            result,
            escape_controls(entry["target"]),
        )
        if self._path is None:
            return
        try:
            with self._lock, open_private_append(self._path) as handle:
                handle.write(line.encode())
        except OSError as error:
            log.error("event=audit_write_failed path=%s error=%r", self._path, str(error))


# Fields that say what a call acted on; never values (a secret's value is never logged).
_TARGET_FIELDS = (
    "cluster",
    "name",
    "family",
    "task_definition",
    "id",
    "node",
    "service",
    "task_id",
    "role",
    "task",
    "container",
    "user",
)
# An exec's command is recorded, up to this many characters (quoted as a shell would).
_COMMAND_SHOWN = 1000


def _target(request: Message | None) -> str:
    if request is None:
        return ""
    parts = []
    for field in _TARGET_FIELDS:
        if field in request.DESCRIPTOR.fields_by_name:
            value = getattr(request, field)
            if isinstance(value, str) and value:
                parts.append(f"{field}={value[:100]}")
    if "command" in request.DESCRIPTOR.fields_by_name:
        command: list[str] = list(getattr(request, "command"))  # noqa: B009
        parts.append(f"command={shlex.join(command)[:_COMMAND_SHOWN]}")
    return " ".join(parts)


class Access:
    def __init__(self, cache: ClusterCache, audit: AuditLog) -> None:
        self._cache = cache
        self.audit = audit

    def caller(self, context: Context) -> pki.Identity:
        """The user calling, checked against the user's record."""
        caller = peers.user(context)
        record = self._cache.user(caller.name)
        if record is None or f"{caller.serial:x}" not in record.value.serials:
            raise PermissionDenied(f"user {caller.name}'s certificate was revoked (or the user deleted)")
        return caller

    def role(self, name: str) -> str:
        record = self._cache.user(name)
        return record.value.role if record is not None else ""

    def check(self, context: Context, method: str) -> pki.Identity:
        caller = self.caller(context)
        needed = required_role(method)
        role = self.role(caller.name)
        if not allowed(role, needed):
            raise PermissionDenied(
                f"user {caller.name} ({role or 'no role'}) may not {method}: it needs {needed}"
            )
        return caller


Handler = Callable[..., Any]


def guarded(access_of: Callable[[Any], Access]) -> Callable[[type], type]:
    """Class decorator: every RPC of the servicer checks the caller's role first, and writes
    the audit log for calls above viewer. The RPCs are the methods the generated base class
    declares; `access_of(self)` gives the servicer's Access."""

    def decorate(cls: type) -> type:
        base = cls.__mro__[1]
        for name in [n for n in vars(base) if n[0].isupper()]:
            method = getattr(cls, name)
            if inspect.isasyncgenfunction(method):
                setattr(cls, name, _guard_stream(method, name, access_of))
            else:
                setattr(cls, name, _guard_unary(method, name, access_of))
        return cls

    return decorate


def _guard_unary(method: Handler, name: str, access_of: Callable[[Any], Access]) -> Handler:
    @functools.wraps(method)
    async def wrapper(self: Any, request: Message, context: Context) -> Any:
        access = access_of(self)
        audited = required_role(name) != "viewer"
        user = "?"
        try:
            user = access.check(context, name).name
        except BerthError as error:
            if audited:
                access.audit.write(_who(context), name, request, f"denied: {error}")
            await abort_for(context, error, name)
        try:
            response = await method(self, request, context)
        except BaseException as error:
            if audited:
                access.audit.write(user, name, request, _outcome(context, error))
            raise
        if audited and name not in QUIET_WHEN_OK:
            access.audit.write(user, name, request, "ok")
        return response

    return wrapper


def _guard_stream(method: Handler, name: str, access_of: Callable[[Any], Access]) -> Handler:
    """A streaming RPC: checked like a unary one. With a request stream (Exec), its first
    message says what the call does: it is what the audit log records, at the start and
    again with the result (the last response's `exit`, when it has one)."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: Context) -> AsyncIterator[Any]:
        access = access_of(self)
        audited = required_role(name) != "viewer"
        subject: Message | None = request if isinstance(request, Message) else None
        if subject is None:
            first = await anext(aiter(request), None)
            subject = _opening(first)
            request = _replay(first, request)
        user = "?"
        try:
            user = access.check(context, name).name
        except BerthError as error:
            if audited:
                access.audit.write(_who(context), name, subject, f"denied: {error}")
            await abort_for(context, error, name)
        if audited:
            access.audit.write(user, name, subject, "started")
        last = None
        try:
            async for item in method(self, request, context):
                last = item
                yield item
        except BaseException as error:
            if audited:
                access.audit.write(user, name, subject, _outcome(context, error))
            raise
        if audited:
            access.audit.write(user, name, subject, "ok" + _result(last))

    return wrapper


def _opening(first: Message | None) -> Message | None:
    """What a request stream's first message asks for: the message set in its oneof, if any."""
    if first is None:
        return None
    for oneof in first.DESCRIPTOR.oneofs:
        chosen = first.WhichOneof(oneof.name)
        if chosen is not None and isinstance(getattr(first, chosen), Message):
            opening: Message = getattr(first, chosen)
            return opening
    return first


async def _replay(first: Any, rest: AsyncIterator[Any]) -> AsyncIterator[Any]:
    if first is None:
        return
    yield first
    async for item in rest:
        yield item


def _result(last: Any) -> str:
    """The outcome a stream's last response carries (an exec's exit), for the audit log."""
    if not isinstance(last, Message) or "exit" not in last.DESCRIPTOR.fields_by_name:
        return ""
    if not last.HasField("exit"):
        return ""
    exit_: Any = getattr(last, "exit")  # noqa: B009
    if exit_.error:
        return f": {exit_.error}"[:300]
    return f": exit code {exit_.code}"


def _who(context: Context) -> str:
    try:
        return peers.identity(context).name
    except BerthError:
        return "?"


def _outcome(context: Context, error: BaseException) -> str:
    code = context.code()
    if isinstance(code, grpc.StatusCode) and code != grpc.StatusCode.OK:
        return f"error: {code.name}: {context.details() or ''}"[:300]
    return f"error: {type(error).__name__}"
