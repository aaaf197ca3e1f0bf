"""`berth secret ...`: secrets for the ECS `secrets` field; values go in, never come out.

A value is read from standard input or from a file, never from an argument,
so it stays out of shell history and process listings. NAME may be written
as in ECS (an SSM parameter name or ARN, or a Secrets Manager ARN): the
control plane maps it to a Berth name (berth/secretnames.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from berth.cli.client import CliContext, api_errors, fail
from berth.cli.options import command_group
from berth.cli.output import OutputOption, age, emit, say
from berth.v1 import operator_pb2 as api

app = command_group("Secrets: encrypted at rest, delivered only to the nodes running their tasks.")

MAX_VALUE_BYTES = 65_536
NAME_HELP = "a Berth name (db-password, /app/DB_PASSWORD), or an SSM / Secrets Manager ARN"


def _read_value(from_file: Path | None) -> bytes:
    if from_file is not None:
        try:
            with from_file.open("rb") as handle:
                value = handle.read(MAX_VALUE_BYTES + 1)
        except OSError as error:
            raise fail(f"cannot read {from_file}: {error.strerror}") from None
    else:
        if sys.stdin.isatty():
            say("type the value, then Ctrl-D (or pipe it in, or use --from-file):", err=True)
        value = sys.stdin.buffer.read(MAX_VALUE_BYTES + 1)
    if len(value) > MAX_VALUE_BYTES:
        raise fail(f"the value is larger than {MAX_VALUE_BYTES} bytes (64 KiB), the limit")
    return value


@app.command("put")
def put(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="NAME", help=NAME_HELP),
    from_file: Path = typer.Option(
        None, "--from-file", metavar="PATH", help="read the value from PATH (default: standard input)"
    ),
) -> None:
    """Create a secret, or store a new version of it; the value comes from stdin or --from-file.

    A value read from stdin loses one trailing newline (as `echo ... |` adds one); --from-file keeps
    the file's bytes exactly.
    """
    cli: CliContext = ctx.obj
    value = _read_value(from_file)
    if from_file is None and value.endswith(b"\n"):
        value = value[:-2] if value.endswith(b"\r\n") else value[:-1]
    with api_errors(cli):
        stored = cli.stub.PutSecret(api.PutSecretRequest(name=name, value=value))
    say(f"secret {stored.name} version {stored.version} stored ({stored.size} bytes)")


@app.command("list")
def list_(ctx: typer.Context, output: str = OutputOption) -> None:
    """List secrets: names, sizes, versions and dates (never values)."""
    cli: CliContext = ctx.obj
    with api_errors(cli):
        found = cli.stub.ListSecrets(api.ListSecretsRequest()).secrets
    emit(
        output,
        found,
        [
            ("NAME", lambda s: s.name),
            ("VERSION", lambda s: str(s.version)),
            ("SIZE", lambda s: str(s.size)),
            ("UPDATED", lambda s: age(s.updated_at)),
            ("BY", lambda s: s.updated_by),
            ("CREATED", lambda s: age(s.created_at)),
        ],
        "secrets",
    )


@app.command("delete")
def delete(ctx: typer.Context, name: str = typer.Argument(..., metavar="NAME", help=NAME_HELP)) -> None:
    """Delete a secret; tasks started later that name it fail to start (running ones keep their value)."""
    cli: CliContext = ctx.obj
    with api_errors(cli):
        deleted = cli.stub.DeleteSecret(api.DeleteSecretRequest(name=name))
    say(f"secret {deleted.name} deleted")
