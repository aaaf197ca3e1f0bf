"""`berth access-key ...`: the credentials the `aws` CLI and boto3 sign ECS API calls with.

`-o json` and `-o yaml` print what AWS IAM's CreateAccessKey and
ListAccessKeys return (`AccessKey`, `AccessKeyMetadata`), so scripts written
for `aws iam create-access-key` read Berth's answer unchanged.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import typer
import yaml
from google.protobuf.timestamp_pb2 import Timestamp

from berth.cli.client import CliContext, api_errors
from berth.cli.options import command_group
from berth.cli.output import FORMATS, OutputOption, age, emit, say
from berth.v1 import operator_pb2 as api
from berth.v1 import resources_pb2 as pb

app = command_group("Access keys: how the aws CLI and boto3 sign calls to Berth's ECS API, as a user.")


def _date(stamp: Timestamp) -> str:
    moment = datetime.datetime.fromtimestamp(stamp.seconds, datetime.UTC)
    return moment.isoformat().replace("+00:00", "Z")


def _metadata(key: pb.AccessKey) -> dict[str, Any]:
    return {
        "UserName": key.user,
        "AccessKeyId": key.id,
        "Status": "Active",
        "CreateDate": _date(key.created_at),
    }


def _print(output: str, data: dict[str, Any]) -> None:
    if output == "yaml":
        print(yaml.safe_dump(data, sort_keys=False), end="")
    else:
        print(json.dumps(data, indent=2))


@app.command("create")
def create(
    ctx: typer.Context,
    user: str = typer.Option(..., "--user", metavar="NAME", help="the user the key signs as (its role)"),
    output: str = OutputOption,
) -> None:
    """Create a key for a user (at most two each, for rotation). The secret is shown once."""
    cli: CliContext = ctx.obj
    with api_errors(cli):
        created = cli.stub.CreateAccessKey(api.CreateAccessKeyRequest(user=user))
    if output in FORMATS[1:]:
        _print(
            output, {"AccessKey": {**_metadata(created.key), "SecretAccessKey": created.secret_access_key}}
        )
        return
    print(f"AccessKeyId:     {created.key.id}")
    print(f"SecretAccessKey: {created.secret_access_key}")
    say(
        "the secret is shown only now; use it with `aws configure --profile NAME`, or set "
        "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, and give aws --endpoint-url",
        err=True,
    )


@app.command("list")
def list_(
    ctx: typer.Context,
    user: str = typer.Option("", "--user", metavar="NAME", help="only this user's keys"),
    output: str = OutputOption,
) -> None:
    """List access keys (never their secrets)."""
    cli: CliContext = ctx.obj
    with api_errors(cli):
        found = cli.stub.ListAccessKeys(api.ListAccessKeysRequest(user=user)).keys
    if output in FORMATS[1:]:
        _print(output, {"AccessKeyMetadata": [_metadata(k) for k in found]})
        return
    emit(
        output,
        found,
        [
            ("ID", lambda k: k.id),
            ("USER", lambda k: k.user),
            ("AGE", lambda k: age(k.created_at)),
            ("BY", lambda k: k.created_by),
        ],
        "keys",
    )


@app.command("delete")
def delete(ctx: typer.Context, key_id: str = typer.Argument(..., metavar="ID")) -> None:
    """Delete a key: requests signed with it are refused from now on."""
    cli: CliContext = ctx.obj
    with api_errors(cli):
        cli.stub.DeleteAccessKey(api.DeleteAccessKeyRequest(id=key_id))
    say(f"access key {key_id} deleted")
