"""The CLI's connection to the control plane, and its error handling."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import grpc
import typer

from berth.cli.failover import FailoverStub
from berth.cli.output import say
from berth.clientconfig import ClientConfig, secure_channel
from berth.ecs.arns import Arns
from berth.errors import BerthError
from berth.servers import parse_servers
from berth.v1 import operator_pb2 as api
from berth.v1 import operator_pb2_grpc

DEFAULT_SERVER = "127.0.0.1:7400"


@dataclass
class CliContext:
    """The server and credentials, read on first use (so `--help` needs neither)."""

    server: str
    config_path: Path
    _config: ClientConfig | None = None
    _stub: operator_pb2_grpc.OperatorStub | None = None
    _arns: Arns | None = None

    @property
    def config(self) -> ClientConfig:
        if self._config is None:
            try:
                self._config = ClientConfig.load(self.config_path)
            except BerthError as error:
                raise fail(str(error)) from None
            self.server = self.server or self._config.server
        return self._config

    @property
    def stub(self) -> operator_pb2_grpc.OperatorStub:
        if self._stub is None:
            config = self.config
            try:
                servers = parse_servers(self.server or DEFAULT_SERVER)
            except BerthError as error:
                raise fail(f"--server / BERTH_SERVER / the config's server: {error}") from None
            # Several replicas: a call one cannot answer is sent once more to the next.
            self._stub = cast(
                operator_pb2_grpc.OperatorStub,
                FailoverStub(
                    servers, lambda server: operator_pb2_grpc.OperatorStub(secure_channel(server, config))
                ),
            )
        return self._stub

    def arns(self) -> Arns:
        """The ARNs this control plane names (its region and account), asked once per command,
        for `-o json|yaml` (ECS's shapes). Call it inside `api_errors`."""
        if self._arns is None:
            settings = self.stub.GetApiSettings(api.GetApiSettingsRequest())
            self._arns = Arns(settings.region, settings.account)
        return self._arns


def node_names(cli: CliContext) -> dict[str, str]:
    """Node id -> node name, for the tables that say where a task runs.
    Call it inside `api_errors`."""
    return {n.node.id: n.node.name for n in cli.stub.ListNodes(api.ListNodesRequest()).nodes}


def node_label(names: dict[str, str], node_id: str) -> str:
    """A node's name when it is known, else its id (a node deleted since), else "-"."""
    return names.get(node_id, node_id) or "-"


def fail(message: str) -> typer.Exit:
    """Print one line on stderr; the caller raises the returned Exit."""
    say(f"error: {message}", err=True)
    return typer.Exit(code=1)


@contextlib.contextmanager
def api_errors(ctx: CliContext) -> Iterator[None]:
    """Turn gRPC and Berth errors into one line and exit code 1."""
    try:
        yield
    except BerthError as error:
        raise fail(str(error)) from None
    except grpc.RpcError as error:
        code = error.code()  # type: ignore[attr-defined]
        details = error.details()  # type: ignore[attr-defined]
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) and "berth" not in (
            details or ""
        ):
            raise fail(
                f"cannot reach the control plane at {ctx.server} ({code.name.lower()}); "
                "start berth-controlplane or set --server / BERTH_SERVER"
            ) from None
        raise fail(details or code.name) from None


def read_argument_file(value: str, option: str) -> str:
    """AWS CLI convention: `file://PATH` reads a file; anything else is the text itself."""
    if not value.startswith("file://"):
        return value
    path = Path(value[len("file://") :])
    try:
        return path.read_text()
    except OSError as error:
        raise fail(f"{option}: cannot read {path}: {error.strerror}") from None
