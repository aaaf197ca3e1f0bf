"""`berth user ...`: operators, their roles and their credentials."""

from __future__ import annotations

from pathlib import Path

import typer

from berth import pki
from berth.cli.client import CliContext, api_errors, fail
from berth.cli.options import command_group
from berth.cli.output import OutputOption, age, emit, say
from berth.clientconfig import ClientConfig
from berth.v1 import operator_pb2 as api

app = command_group("Operators: viewer reads, deployer ships services, admin runs the cluster.")


@app.command("create")
def create(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="NAME", help="a DNS label"),
    role: str = typer.Option(..., "--role", metavar="ROLE", help="admin, deployer or viewer"),
    out: Path = typer.Option(
        None, "--out", metavar="PATH", help="where to write the user's config (default ./NAME.berth-config)"
    ),
) -> None:
    """Issue credentials for a user: a config file (0600) to give them, used with --config or BERTH_CONFIG.

    Running it again for an existing user issues another certificate with the same role.
    """
    cli: CliContext = ctx.obj
    path = out or Path(f"{name}.berth-config")
    if path.exists():
        raise fail(f"{path} exists; choose another --out")
    key = pki.new_key()  # made here: the private key never travels
    with api_errors(cli):
        created = cli.stub.CreateUser(api.CreateUserRequest(name=name, role=role, csr=pki.csr_pem(key)))
    ClientConfig(
        server=cli.server,
        user=created.user.name,
        ca=created.ca_certificate.decode(),
        certificate=created.certificate.decode(),
        key=pki.key_pem(key).decode(),
    ).save(path)
    say(f"user {created.user.name} ({created.user.role}): credentials written to {path}")


@app.command("list")
def list_(ctx: typer.Context, output: str = OutputOption) -> None:
    """List users and their roles."""
    cli: CliContext = ctx.obj
    with api_errors(cli):
        users = cli.stub.ListUsers(api.ListUsersRequest()).users
    emit(
        output,
        users,
        [
            ("NAME", lambda u: u.name),
            ("ROLE", lambda u: u.role),
            ("CERTIFICATES", lambda u: str(len(u.serials))),
            ("AGE", lambda u: age(u.created_at)),
            ("BY", lambda u: u.created_by),
        ],
        "users",
    )


@app.command("delete")
def delete(ctx: typer.Context, name: str = typer.Argument(..., metavar="NAME")) -> None:
    """Delete a user: every certificate issued to them is refused from now on."""
    cli: CliContext = ctx.obj
    with api_errors(cli):
        cli.stub.DeleteUser(api.DeleteUserRequest(name=name))
    say(f"user {name} deleted")
