"""The role table of the operator API, held to the service the proto declares: every RPC has a
decision written down, a viewer may call reads only, a deployer nothing of nodes, tokens,
users, clusters or access keys, and every RPC of the servicer goes through the check.

What a read is, by the RPC's verb: List, Describe, Get and Watch read; the verbs below under
MUTATING change something. An RPC whose verb is in neither needs its own line in READS (with
why it writes nothing) or a new verb in MUTATING: a new RPC cannot slip through unclassified.
"""

from __future__ import annotations

import re

import pytest

from berth.v1 import operator_pb2
from controlplane.api import access
from controlplane.api.operator import OperatorService

RPCS = [method.name for method in operator_pb2.DESCRIPTOR.services_by_name["Operator"].methods]
READ_VERBS = ("List", "Describe", "Get", "Watch")
MUTATING = (
    "Create",
    "Delete",
    "Update",
    "Put",
    "Register",
    "Deregister",
    "Run",
    "Stop",
    "Remove",
    "Revoke",
    "Expose",
    "Unexpose",
    "Exec",
)
# Reads whose verb does not say so, each with why it writes nothing.
READS = {
    "StreamLogs": "streams a container's output from its agent; writes no record",
    "RecommendResources": "computes from the usage window kept in memory; writes no record",
}
# What deployers manage none of (the issue: not nodes, tokens or users; nor clusters or keys).
ADMIN_NOUNS = ("Cluster", "Node", "JoinToken", "User", "AccessKey")
# Reads a viewer is not given: credentials, and who holds them.
CREDENTIAL_NOUNS = ("Secret", "JoinToken", "User", "AccessKey")


def _verb(rpc: str) -> str:
    matched = re.match(r"[A-Z][a-z]+", rpc)
    assert matched is not None, rpc
    return matched.group(0)


def _is_read(rpc: str) -> bool:
    return _verb(rpc) in READ_VERBS or rpc in READS


def test_the_service_is_read_from_the_proto() -> None:
    assert len(RPCS) > 40 and "ListClusters" in RPCS and "Exec" in RPCS


@pytest.mark.parametrize("rpc", RPCS)
def test_every_rpc_is_a_read_or_a_change_by_its_verb(rpc: str) -> None:
    assert _is_read(rpc) != (_verb(rpc) in MUTATING), (
        f"{rpc}: add its verb to READ_VERBS or MUTATING, or the RPC to READS with why it writes nothing"
    )


def test_every_rpc_has_exactly_one_explicit_role_decision() -> None:
    tables = {"viewer": access.VIEWER, "deployer": access.DEPLOYER, "admin": access.ADMIN}
    for role, table in tables.items():
        assert table <= set(RPCS), f"{role} names RPCs the service does not have: {table - set(RPCS)}"
    undecided = set(RPCS) - set().union(*tables.values())
    assert not undecided, f"no role decided for {sorted(undecided)}"
    for first, second in (("viewer", "deployer"), ("viewer", "admin"), ("deployer", "admin")):
        assert not tables[first] & tables[second], (
            f"in {first} and {second}: {tables[first] & tables[second]}"
        )
    for role, table in tables.items():
        for rpc in table:
            assert access.required_role(rpc) == role


def _viewer_changes() -> list[str]:
    """The RPCs a viewer may call that are not reads."""
    return sorted(
        rpc for rpc in RPCS if access.allowed("viewer", access.required_role(rpc)) and not _is_read(rpc)
    )


def test_a_viewer_may_call_reads_only() -> None:
    assert _viewer_changes() == [], f"a viewer may call RPCs that change things: {_viewer_changes()}"
    # And a viewer reads everything but credentials and who holds them.
    for rpc in RPCS:
        if _is_read(rpc) and not any(noun in rpc for noun in CREDENTIAL_NOUNS):
            assert access.required_role(rpc) == "viewer", rpc


def test_the_viewer_check_catches_a_change_given_to_viewers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(access, "VIEWER", access.VIEWER | {"StopTask"})
    assert _viewer_changes() == ["StopTask"]


def test_a_deployer_may_not_touch_nodes_tokens_users_clusters_or_keys() -> None:
    for rpc in RPCS:
        if any(noun in rpc for noun in ADMIN_NOUNS) and access.required_role(rpc) != "viewer":
            assert not access.allowed("deployer", access.required_role(rpc)), rpc
    # The commands the issue names: node drain (and activate), node remove, join-token create.
    for rpc in ("UpdateNodeStatus", "RemoveNode", "CreateJoinToken", "RevokeJoinToken", "CreateUser"):
        assert access.required_role(rpc) == "admin", rpc


def test_an_rpc_nobody_decided_needs_admin_and_an_unknown_role_gets_nothing() -> None:
    assert access.required_role("SomeFutureRpc") == "admin"
    for role in ("", "root", "Admin"):
        assert not access.allowed(role, "viewer")


def test_every_rpc_of_the_servicer_goes_through_the_role_check() -> None:
    for rpc in RPCS:
        handler = getattr(OperatorService, rpc)
        # guarded() replaces each RPC with a wrapper (functools.wraps keeps the original here).
        assert getattr(handler, "__wrapped__", None) is not None, f"{rpc} is not guarded"
        assert handler.__wrapped__ is not handler
