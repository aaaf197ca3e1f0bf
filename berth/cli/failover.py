"""The CLI's operator stub over several control-plane replicas.

`--server A,B,C` (or `BERTH_SERVER`, or the config file's `server`) names
every replica. A unary call that fails with UNAVAILABLE (the replica is down,
or cannot reach etcd right now) is sent once more, to the next address; only
when that fails too does the operator see an error. The next commands of the
same process start at the address that answered. Streaming calls (logs
--follow, exec, rollout watch) are not retried: a broken stream is reported
and the operator runs the command again.

A retried write is as safe as the store's own retries (see
`controlplane.store.failover`): a create that the first replica had applied
reports that the object exists.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from berth.servers import next_server

RETRIED_CODES = (grpc.StatusCode.UNAVAILABLE,)


class FailoverStub:
    """Looks like the stub `make_stub` builds; unary calls move to the next address on UNAVAILABLE."""

    def __init__(self, servers: list[str], make_stub: Callable[[str], Any]) -> None:
        if not servers:
            raise ValueError("at least one control-plane address is needed")
        self._servers = servers
        self._make_stub = make_stub
        self._stubs: dict[int, Any] = {}
        self.current = 0

    @property
    def server(self) -> str:
        """The address the next call goes to first."""
        return self._servers[self.current]

    def _stub(self, index: int) -> Any:
        if index not in self._stubs:
            self._stubs[index] = self._make_stub(self._servers[index])
        return self._stubs[index]

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._stub(self.current), name)
        if len(self._servers) == 1 or not isinstance(method, grpc.UnaryUnaryMultiCallable):
            return method
        return _Retrying(self, name)

    def _call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], with_call: bool = False) -> Any:
        def send(index: int) -> Any:
            method = getattr(self._stub(index), name)
            return (method.with_call if with_call else method)(*args, **kwargs)

        first = self.current
        try:
            return send(first)
        except grpc.RpcError as error:
            if error.code() not in RETRIED_CODES:  # type: ignore[attr-defined]
                raise
        self.current = next_server(self._servers, first)
        return send(self.current)


class _Retrying:
    """One unary method of a FailoverStub."""

    def __init__(self, stub: FailoverStub, name: str) -> None:
        self._stub = stub
        self._name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._stub._call(self._name, args, kwargs)

    def with_call(self, *args: Any, **kwargs: Any) -> Any:
        """The (response, call) form, for callers that read trailing metadata (warnings)."""
        return self._stub._call(self._name, args, kwargs, with_call=True)
