"""`berth task list`: the request it sends for its flags, the next-page hint on stderr (so
`-o json` stays one document), `--all` following pages, and `--node` by name; against a
scripted stub, no server."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from berth.cli.client import CliContext
from berth.cli.main import app
from berth.v1 import operator_pb2 as api
from berth.v1 import resources_pb2 as pb


def _task(number: int) -> pb.Task:
    task = pb.Task(id=f"{number:032x}", cluster="default", task_definition="web:1", last_status=pb.RUNNING)
    task.created_at.seconds = 1_700_000_000 + number
    return task


class _Stub:
    """Five tasks, `page_size` (default 2) a page, the token being the next index."""

    def __init__(self) -> None:
        self.tasks = [_task(n) for n in range(1, 6)]
        self.requests: list[api.ListTasksRequest] = []

    def ListTasks(self, request: api.ListTasksRequest, timeout: float | None = None) -> api.ListTasksResponse:
        self.requests.append(request)
        start = int(request.page_token or "0")
        end = start + (request.page_size or 2)
        token = str(end) if end < len(self.tasks) else ""
        return api.ListTasksResponse(
            tasks=self.tasks[start:end], next_page_token=token, total=len(self.tasks)
        )

    def ListNodes(self, request: api.ListNodesRequest, timeout: float | None = None) -> api.ListNodesResponse:
        nodes = [
            pb.Node(id="n-1", name="alpha"),
            pb.Node(id="n-2", name="beta"),
            pb.Node(id="n-3", name="beta"),
        ]
        return api.ListNodesResponse(nodes=[api.NodeSummary(node=n) for n in nodes])

    def GetApiSettings(self, request: Any, timeout: float | None = None) -> api.ApiSettings:
        return api.ApiSettings(region="local", account="000000000000")


@pytest.fixture()
def stub(monkeypatch: pytest.MonkeyPatch) -> _Stub:
    fake = _Stub()
    monkeypatch.setattr(CliContext, "stub", property(lambda self: fake))
    return fake


def _berth(*args: str) -> Any:
    return CliRunner().invoke(app, ["--server", "127.0.0.1:1", *args], catch_exceptions=False)


def test_the_first_page_is_shown_with_a_hint_for_the_next_on_stderr(stub: _Stub) -> None:
    result = _berth("task", "list", "-o", "json")
    assert result.exit_code == 0, result.stderr
    shown = json.loads(result.stdout)["tasks"]  # stdout is one JSON document
    assert len(shown) == 2
    assert "2 of 5 tasks shown; next page: --page-token 2" in result.stderr
    assert "--all" in result.stderr


def test_a_page_token_continues_and_the_last_page_has_no_hint(stub: _Stub) -> None:
    result = _berth("task", "list", "--page-token", "4", "--page-size", "2")
    assert result.exit_code == 0, result.stderr
    assert stub.requests[-1].page_token == "4" and stub.requests[-1].page_size == 2
    assert "next page" not in result.stderr
    assert f"{5:032x}"[:12] in result.stdout


def test_all_follows_every_page_at_the_largest_size_unless_told(stub: _Stub) -> None:
    result = _berth("task", "list", "--all", "-o", "yaml")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.count("taskArn:") == 5 and not result.stderr
    assert [r.page_size for r in stub.requests] == [1000]
    stub.requests.clear()
    assert _berth("task", "list", "--all", "--page-size", "2", "-o", "json").exit_code == 0
    assert [(r.page_token, r.page_size) for r in stub.requests] == [("", 2), ("2", 2), ("4", 2)]


def test_filters_become_the_requests_fields_and_a_node_name_its_id(stub: _Stub) -> None:
    args = ["--service", "web", "--family", "web:3", "--status", "running", "--desired", "STOPPED"]
    result = _berth("task", "list", *args, "--node", "alpha", "--cluster", "prod")
    assert result.exit_code == 0, result.stderr
    sent = stub.requests[-1]
    assert (sent.cluster, sent.service, sent.family, sent.node) == ("prod", "web", "web:3", "n-1")
    assert (sent.last_status, sent.desired_status) == (pb.RUNNING, pb.DESIRED_STOPPED)
    assert sent.include_stopped and sent.page_size == 0 and sent.page_token == ""
    assert _berth("task", "list", "--node", "n-2").exit_code == 0
    assert stub.requests[-1].node == "n-2"
    assert _berth("task", "list", "--node", "gone-node").exit_code == 0
    assert stub.requests[-1].node == "gone-node", "an unknown node goes as an id, for the server to judge"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--node", "beta"], "node name 'beta' is ambiguous: give the node id (n-2, n-3)"),
        (["--status", "LOST"], "use PENDING, RUNNING or STOPPED"),
        (["--desired", "PENDING"], "use RUNNING or STOPPED"),
        (["--page-size", "1001"], "'--page-size'"),
        (["--page-size", "-1"], "'--page-size'"),
    ],
)
def test_bad_flags_are_refused_before_listing(stub: _Stub, args: list[str], message: str) -> None:
    result = _berth("task", "list", *args)
    assert result.exit_code != 0
    assert message in result.stderr
    assert not stub.requests
