"""Several control-plane addresses: parsing (berth.servers) and the CLI's failover stub."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from agent.credentials import default_join_addresses
from berth.cli.failover import FailoverStub
from berth.errors import InvalidArgument
from berth.servers import next_server, parse_servers


@pytest.mark.parametrize(
    ("text", "servers"),
    [
        ("10.0.0.1:7400", ["10.0.0.1:7400"]),
        ("a:1,b:2,c:3", ["a:1", "b:2", "c:3"]),
        (" a:1 , b:2 ", ["a:1", "b:2"]),
        ("a:1,a:1,b:2", ["a:1", "b:2"]),
        ("[::1]:7400,127.0.0.1:7400", ["[::1]:7400", "127.0.0.1:7400"]),
    ],
)
def test_addresses_are_parsed_in_order(text: str, servers: list[str]) -> None:
    assert parse_servers(text) == servers


@pytest.mark.parametrize(
    "text", ["", ",", "a:1,", "a:1,,b:2", "a", "a:0", "a:65536", "a:x", ":7400", "a:1,b", "a:1;b:2"]
)
def test_a_bad_address_is_refused_with_its_name(text: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_servers(text)


def test_too_many_addresses_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="at most"):
        parse_servers(",".join(f"h{i}:1" for i in range(17)))


def test_next_server_goes_round() -> None:
    servers = ["a:1", "b:2", "c:3"]
    assert [next_server(servers, i) for i in range(3)] == [1, 2, 0]


def test_each_replica_has_its_join_listener_on_the_next_port() -> None:
    assert default_join_addresses("a:7400,b:7500") == ["a:7401", "b:7501"]


class _Error(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._code.name


class _Method(grpc.UnaryUnaryMultiCallable):  # type: ignore[misc,type-arg]
    def __init__(self, replica: _Replica) -> None:
        self.replica = replica

    def __call__(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        self.replica.calls += 1
        if self.replica.fails is not None:
            raise _Error(self.replica.fails)
        return f"{self.replica.name}:{request}"

    def with_call(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        return self(request), f"call on {self.replica.name}"

    def future(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


class _Replica:
    def __init__(self, name: str, fails: grpc.StatusCode | None = None) -> None:
        self.name = name
        self.fails = fails
        self.calls = 0

    @property
    def Get(self) -> _Method:
        return _Method(self)


def _stub(*replicas: _Replica) -> FailoverStub:
    by_address = {f"{r.name}:1": r for r in replicas}
    return FailoverStub(list(by_address), lambda address: by_address[address])


def test_an_unavailable_replica_costs_one_retry_on_the_next() -> None:
    a, b = _Replica("a", grpc.StatusCode.UNAVAILABLE), _Replica("b")
    stub = _stub(a, b)
    assert stub.Get("x") == "b:x"
    # The next call starts at the replica that answered.
    assert stub.Get("y") == "b:y"
    assert (a.calls, b.calls) == (1, 2)


def test_a_call_is_retried_once_only() -> None:
    a, b, c = (_Replica(n, grpc.StatusCode.UNAVAILABLE) for n in "abc")
    stub = _stub(a, b, c)
    with pytest.raises(grpc.RpcError):
        stub.Get("x")
    assert (a.calls, b.calls, c.calls) == (1, 1, 0)


@pytest.mark.parametrize("code", [grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT])
def test_an_answer_from_the_replica_is_not_retried(code: grpc.StatusCode) -> None:
    a, b = _Replica("a", code), _Replica("b")
    stub = _stub(a, b)
    with pytest.raises(grpc.RpcError):
        stub.Get("x")
    assert b.calls == 0


def test_the_with_call_form_fails_over_too() -> None:
    # `berth node list` reads trailing metadata (the mass-failure warning) through with_call.
    a, b = _Replica("a", grpc.StatusCode.UNAVAILABLE), _Replica("b")
    stub = _stub(a, b)
    assert stub.Get.with_call("x") == ("b:x", "call on b")
    assert (a.calls, b.calls) == (1, 1)
