"""The key layout under the store's prefix; the only module that spells keys.

clusters/NAME                   Cluster
taskdefs/FAMILY/REVISION        TaskDefinition (revision zero-padded so keys sort)
services/CLUSTER/NAME           Service
events/CLUSTER/SERVICE          ServiceEvents
tasks/TASK_ID                   Task
nodes/NODE_ID                   Node
alive/NODE_ID                   empty value (raw bytes), attached to the node's lease
placements/NODE_ID              counter bumped by every placement batch on the node (raw bytes)
vips/ADDRESS                    "CLUSTER/SERVICE" holding the virtual IP (raw bytes)
leader                          id of the replica running the controllers (raw bytes, leased)
jointokens/ID                   JoinToken (the secret only hashed)
identities/NODE_ID              NodeIdentity (the certificate the node holds now)
users/NAME                      User (role, certificate serials)
secrets/NAME                    Secret (the value only encrypted; NAME may hold '/')
accesskeys/ID                   AccessKey (the secret only sealed)
liveness/mass-failure           text: the suspected mass failure under way (absent: none)

Values are the protobuf messages named (berth/v1/resources.proto); alive/,
placements/, vips/, liveness/ and leader hold raw bytes.
"""

from __future__ import annotations

CLUSTERS = "clusters/"
TASKDEFS = "taskdefs/"
SERVICES = "services/"
EVENTS = "events/"
TASKS = "tasks/"
NODES = "nodes/"
ALIVE = "alive/"
PLACEMENTS = "placements/"
VIPS = "vips/"
LEADER = "leader"
JOIN_TOKENS = "jointokens/"
IDENTITIES = "identities/"
USERS = "users/"
SECRETS = "secrets/"
ACCESS_KEYS = "accesskeys/"


def cluster(name: str) -> str:
    return f"{CLUSTERS}{name}"


def taskdef_family(family: str) -> str:
    return f"{TASKDEFS}{family}/"


def taskdef_families(prefix: str) -> str:
    """Every revision of every family whose name starts with `prefix`."""
    return f"{TASKDEFS}{prefix}"


def taskdef(family: str, revision: int) -> str:
    return f"{TASKDEFS}{family}/{revision:08d}"


def services_of(cluster_name: str) -> str:
    return f"{SERVICES}{cluster_name}/"


def service(cluster_name: str, name: str) -> str:
    return f"{SERVICES}{cluster_name}/{name}"


def events(cluster_name: str, service_name: str) -> str:
    return f"{EVENTS}{cluster_name}/{service_name}"


def task(task_id: str) -> str:
    return f"{TASKS}{task_id}"


def node(node_id: str) -> str:
    return f"{NODES}{node_id}"


def alive(node_id: str) -> str:
    return f"{ALIVE}{node_id}"


def placements(node_id: str) -> str:
    return f"{PLACEMENTS}{node_id}"


def vip(address: str) -> str:
    return f"{VIPS}{address}"


def join_token(token_id: str) -> str:
    return f"{JOIN_TOKENS}{token_id}"


def identity(node_id: str) -> str:
    return f"{IDENTITIES}{node_id}"


def user(name: str) -> str:
    return f"{USERS}{name}"


def secret(name: str) -> str:
    return f"{SECRETS}{name}"


def access_key(key_id: str) -> str:
    return f"{ACCESS_KEYS}{key_id}"


def mass_failure() -> str:
    """Present while the leader's node monitor suspects a mass failure (controllers/nodes.py)."""
    return "liveness/mass-failure"
