"""Pages of a cluster's task listing: the query, the order, the page token and the page.

The order is the tasks' created time, then their id: both are fixed when a task
is created, so a page token that names the last task returned (not an offset)
continues correctly while tasks come and go between pages. A task that exists
through the whole listing is listed exactly once; a task removed meanwhile is
simply not seen again; a task created meanwhile sorts after the token and shows
up on a later page (unless the replica that created it has a clock behind the
token's task by more than the time between them).

The token is opaque to clients and stateless for the control plane: any replica
continues any listing, which matters once the CLI fails over between replicas.
It carries a digest of the query, so a token is refused by a listing with
other filters (as AIP-158 asks) instead of silently skipping tasks. Nothing in
it is secret: a forged token that passes the checks only names a position.

Every answer is a page, also for a request that names no page size (an older
CLI, a script): it gets the default page and a next_page_token it may follow.
An unbounded answer would grow with the cluster (10,000 tasks are about 2 MB
encoded, more with kept output), and it is built and encoded on the event loop
that also carries heartbeats and the leader's keep-alives: the one listing an
operator runs during an incident must not be what tips the cluster over.

Everything here is pure (no store, no event loop), pinned by tables of cases;
`controlplane.operations.tasks` feeds it from the cache a slice at a time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from berth.errors import InvalidArgument
from berth.v1 import resources_pb2 as pb

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_TOKEN = 256  # characters; a real one is under 100

# created_at seconds, nanos, task id.
Position = tuple[int, int, str]

_TOKEN_VERSION = "1"
_TOKEN_BODY = re.compile(r"1\.(\d{1,12})\.(\d{1,9})\.([A-Za-z0-9_-]{1,64})\.([0-9a-f]{16})")


@dataclass(frozen=True)
class TaskQuery:
    """Which tasks a listing shows; every field is checked by the operation first.

    `revision` None with a `family`: every revision of it. `last_status`
    unspecified: any status, STOPPED only with `include_stopped`.
    """

    cluster: str
    service: str = ""
    node_id: str = ""
    family: str = ""
    revision: int | None = None
    desired_status: pb.DesiredStatus.ValueType = pb.DESIRED_STATUS_UNSPECIFIED
    last_status: pb.TaskStatus.ValueType = pb.TASK_STATUS_UNSPECIFIED
    include_stopped: bool = False

    def matches(self, task: pb.Task) -> bool:
        if task.cluster != self.cluster:
            return False
        if self.service and task.service != self.service:
            return False
        if self.node_id and task.node_id != self.node_id:
            return False
        if self.family:
            family, _, revision = task.task_definition.partition(":")
            if family != self.family or (self.revision is not None and revision != str(self.revision)):
                return False
        if self.desired_status and task.desired_status != self.desired_status:
            return False
        if self.last_status:
            return task.last_status == self.last_status
        return self.include_stopped or task.last_status != pb.STOPPED

    def digest(self) -> str:
        """16 hex digits that change with any field: binds a page token to its listing."""
        fields = (
            self.cluster,
            self.service,
            self.node_id,
            self.family,
            "" if self.revision is None else str(self.revision),
            str(int(self.desired_status)),
            str(int(self.last_status)),
            "1" if self.include_stopped else "0",
        )
        return hashlib.sha256("\0".join(fields).encode()).hexdigest()[:16]


def position(task: pb.Task) -> Position:
    return (task.created_at.seconds, task.created_at.nanos, task.id)


def page_size(requested: int) -> int:
    """0 is the default; anything above the maximum is served as the maximum (AIP-158)."""
    if requested <= 0:
        return DEFAULT_PAGE_SIZE
    return min(requested, MAX_PAGE_SIZE)


def encode_token(query: TaskQuery, after: Position) -> str:
    seconds, nanos, task_id = after
    body = f"{_TOKEN_VERSION}.{seconds}.{nanos}.{task_id}.{query.digest()}"
    return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")


def decode_token(query: TaskQuery, token: str) -> Position | None:
    """The position a token names (None for no token); InvalidArgument for anything
    this API did not hand out for this very listing."""
    if not token:
        return None
    if len(token) > MAX_TOKEN:
        raise InvalidArgument(f"page_token is longer than {MAX_TOKEN} characters: not a token of this API")
    try:
        padded = token + "=" * (-len(token) % 4)
        body = base64.b64decode(padded.encode("ascii"), altchars=b"-_", validate=True).decode("ascii")
    except (UnicodeError, ValueError, binascii.Error):
        raise InvalidArgument("page_token is not a token this API returned") from None
    parsed = _TOKEN_BODY.fullmatch(body)
    if parsed is None:
        raise InvalidArgument("page_token is not a token this API returned")
    seconds, nanos, task_id, digest = parsed.groups()
    if digest != query.digest():
        raise InvalidArgument(
            "page_token belongs to another listing: keep the cluster and filters of the first page"
        )
    return (int(seconds), int(nanos), task_id)


@dataclass
class TaskPage:
    tasks: list[pb.Task]
    next_token: str
    total: int


@dataclass
class PageBuilder:
    """Collects a page from tasks given a slice at a time (so the caller can yield between
    slices): the `size` first matching tasks after `after`, and how many match in all.

    Only the tasks themselves are kept, never a tuple per task: positions are made and
    dropped on the spot, so a listing of 10,000 tasks leaves nothing behind for the
    garbage collector to walk (its full collections pause the whole event loop).
    """

    query: TaskQuery
    after: Position | None
    size: int
    total: int = 0
    _later: list[pb.Task] = field(default_factory=list)

    def add(self, tasks: Iterable[pb.Task]) -> None:
        query, after, later = self.query, self.after, self._later
        for task in tasks:
            if not query.matches(task):
                continue
            self.total += 1
            if after is None or position(task) > after:
                later.append(task)
        if len(later) > 4 * self.size:  # memory bounded by the page, not by the cluster
            self._later = heapq.nsmallest(self.size + 1, later, key=position)

    def page(self) -> TaskPage:
        first = heapq.nsmallest(self.size + 1, self._later, key=position)
        shown = first[: self.size]
        more = len(first) > self.size
        next_token = encode_token(self.query, position(shown[-1])) if more else ""
        return TaskPage(shown, next_token, self.total)
