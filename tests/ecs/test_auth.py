"""Only signed requests of Berth users get in: unsigned, wrongly signed, expired and
unknown-key requests are refused with ECS's (AWS's) error types and write nothing; an
access key carries its user's role; deleting the user or the key shuts the door at once."""

from __future__ import annotations

import datetime
import json

import pytest
from botocore.exceptions import ClientError

from berth.testing.cli import Berth
from berth.testing.daemons import ControlPlaneProcess
from berth.testing.ecs import EcsClients


def _key(berth: Berth, user: str) -> tuple[str, str]:
    created = berth.ok("access-key", "create", "--user", user, "-o", "json").json()
    return created["AccessKey"]["AccessKeyId"], created["AccessKey"]["SecretAccessKey"]


def test_unsigned_wrong_and_expired_requests_are_refused_and_write_nothing(
    clients: EcsClients, ecs_plane: ControlPlaneProcess
) -> None:
    before = ecs_plane.operator_records()
    key_id, secret = clients.key
    body = {"clusterName": "intruder"}

    code, answer = clients.raw("CreateCluster", body, sign=False)
    assert (code, answer["__type"]) == (403, "MissingAuthenticationTokenException")

    code, answer = clients.raw("CreateCluster", body, key=(key_id, "x" * 40))
    assert (code, answer["__type"]) == (403, "InvalidSignatureException")

    code, answer = clients.raw("CreateCluster", body, key=("AKIAAAAAAAAAAAAAAAAA", secret))
    assert (code, answer["__type"]) == (403, "UnrecognizedClientException")

    late = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=10)
    code, answer = clients.raw("CreateCluster", body, when=late)
    assert (code, answer["__type"]) == (403, "InvalidSignatureException")
    assert "expired" in answer["message"].lower()

    # Signed, then changed on the way: the body no longer matches its signature.
    code, answer = clients.raw("CreateCluster", body, headers={"X-Amz-Content-Sha256": "0" * 64})
    assert code in (400, 403) and answer["__type"] in (
        "InvalidSignatureException",
        "IncompleteSignatureException",
    )

    # boto3 with a wrong secret gets the same error class name.
    with pytest.raises(ClientError) as refused:
        clients.boto3(key=(key_id, "y" * 40)).create_cluster(clusterName="intruder")
    assert refused.value.response["Error"]["Code"] == "InvalidSignatureException"

    assert ecs_plane.operator_records() == before
    listed = clients.boto3().list_clusters()["clusterArns"]
    assert not any(arn.endswith("/intruder") for arn in listed)


def test_an_access_key_carries_its_users_role(
    clients: EcsClients, berth: Berth, ecs_plane: ControlPlaneProcess
) -> None:
    berth.ok(
        "user", "create", "vera", "--role", "viewer", "--out", str(ecs_plane.data_dir.parent / "vera.conf")
    )
    viewer = clients.boto3(key=_key(berth, "vera"))
    assert viewer.list_clusters()["clusterArns"]
    with pytest.raises(viewer.exceptions.AccessDeniedException):
        viewer.create_cluster(clusterName="vera-was-here")
    # The refusal is audited, with the user and the call.
    audit = [json.loads(line) for line in (ecs_plane.data_dir / "audit.log").read_text().splitlines()]
    assert any(
        e["user"] == "vera" and e["call"] == "ecs:CreateCluster" and e["result"].startswith("refused")
        for e in audit
    )
    # Deleting the user shuts the key out at once.
    berth.ok("user", "delete", "vera")
    with pytest.raises(ClientError) as gone:
        viewer.list_clusters()
    assert gone.value.response["Error"]["Code"] == "UnrecognizedClientException"
