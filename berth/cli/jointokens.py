"""`berth join-token ...`: tokens new agents join the cluster with."""

from __future__ import annotations

import time

import typer

from berth.cli.client import CliContext, api_errors, fail
from berth.cli.options import command_group
from berth.cli.output import OutputOption, age, emit, emit_one, say
from berth.v1 import operator_pb2 as api
from berth.v1 import resources_pb2 as pb

app = command_group("Join tokens: how a new host's agent becomes a node of the cluster.")

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str) -> int:
    """30m, 1h, 7d or plain seconds."""
    number, unit = (text[:-1], text[-1]) if text[-1:] in _UNITS else (text, "s")
    if not (number.isascii() and number.isdigit()) or not 0 < len(number) <= 9:
        raise fail(f"--ttl {text!r} is not a duration: write e.g. 30m, 1h, 7d or seconds")
    return int(number) * _UNITS[unit]


@app.command("create")
def create(
    ctx: typer.Context,
    ttl: str = typer.Option("1h", "--ttl", metavar="DURATION", help="how long it is valid: 30m, 1h, 7d"),
    uses: int = typer.Option(
        1, "--uses", min=0, max=100_000, help="joins it allows; 0: any until it expires"
    ),
    description: str = typer.Option("", "--description", metavar="TEXT", help="what it is for"),
    output: str = OutputOption,
) -> None:
    """Create a token; it is shown once, with the CA hash and the agent's command line."""
    cli: CliContext = ctx.obj
    request = api.CreateJoinTokenRequest(ttl_seconds=_duration(ttl), uses=uses, description=description)
    with api_errors(cli):
        created = cli.stub.CreateJoinToken(request)
    if output != "table":
        emit_one(output, created, lambda: None)
        return
    print(f"token:    {created.token}")
    print(f"ca hash:  {created.ca_hash}")
    server = cli.server
    join = created.join_address
    print("join a host with:")
    print(
        f"  berth-agent --server {server} --join-token {created.token} --ca-hash {created.ca_hash}"
        + (f" --join-server {join}" if join and not _next_port(server, join) else "")
    )


def _next_port(server: str, join: str) -> bool:
    """The agent's default: the join listener is on the server's port + 1."""
    host, _, port = server.rpartition(":")
    return port.isdigit() and join == f"{host}:{int(port) + 1}"


def _state(token: pb.JoinToken) -> str:
    if token.revoked:
        return "revoked"
    if token.expires_at.seconds <= time.time():
        return "expired"
    if token.uses and token.used >= token.uses:
        return "used up"
    return "valid"


@app.command("list")
def list_(ctx: typer.Context, output: str = OutputOption) -> None:
    """List tokens (never their secrets)."""
    cli: CliContext = ctx.obj
    with api_errors(cli):
        tokens = cli.stub.ListJoinTokens(api.ListJoinTokensRequest()).tokens
    emit(
        output,
        tokens,
        [
            ("ID", lambda t: t.id),
            ("STATE", _state),
            ("USED", lambda t: f"{t.used}/{t.uses or 'any'}"),
            ("AGE", lambda t: age(t.created_at)),
            ("BY", lambda t: t.created_by),
            ("DESCRIPTION", lambda t: t.description),
        ],
        "tokens",
    )


@app.command("revoke")
def revoke(
    ctx: typer.Context, token_id: str = typer.Argument(..., metavar="ID", help="the part before the dot")
) -> None:
    """Revoke a token: no agent can join with it any more."""
    cli: CliContext = ctx.obj
    with api_errors(cli):
        cli.stub.RevokeJoinToken(api.RevokeJoinTokenRequest(id=token_id))
    say(f"join token {token_id} revoked")
