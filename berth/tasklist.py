"""Following the pages of the operator API's task listing, from the client side.

ListTasks answers one bounded page at a time (`controlplane.task_pages`); the
CLI's `--all`, the benchmarks and the tests that want every task follow
`next_page_token` here, in one place.
"""

from __future__ import annotations

from collections.abc import Iterator

from berth.errors import BerthError
from berth.v1 import operator_pb2 as api
from berth.v1 import operator_pb2_grpc
from berth.v1 import resources_pb2 as pb


def pages(
    stub: operator_pb2_grpc.OperatorStub, request: api.ListTasksRequest, timeout: float | None = None
) -> Iterator[api.ListTasksResponse]:
    """Every page of the listing, from `request.page_token` on; each call has `timeout`."""
    token = request.page_token
    seen = {token}
    while True:
        asked = api.ListTasksRequest()
        asked.CopyFrom(request)  # the caller's request is left as it was
        asked.page_token = token
        page: api.ListTasksResponse = stub.ListTasks(asked, timeout=timeout)
        yield page
        token = page.next_page_token
        if not token:
            return
        if token in seen:
            # The server moves forward with every page; a token twice would loop forever.
            raise BerthError("the control plane returned the same page token twice; listing stopped")
        seen.add(token)


def all_tasks(
    stub: operator_pb2_grpc.OperatorStub, request: api.ListTasksRequest, timeout: float | None = None
) -> list[pb.Task]:
    """The tasks of every page (each request bounded by `timeout`)."""
    return [task for page in pages(stub, request, timeout) for task in page.tasks]
