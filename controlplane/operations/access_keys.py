"""Access keys: the credentials the ECS-compatible API's SigV4 signatures are made with.

A key belongs to an operator (`users/NAME`) and acts with that user's role.
It is an id in AWS's shape ("AKIA" + 16 of [A-Z2-7]) and a 40-character
secret ([A-Za-z0-9/+]). SigV4 needs the secret itself to recompute a
signature, so it cannot be stored hashed like a join token: etcd holds it
sealed under the control plane's master key (controlplane/sealing.py), bound
to the key id and the user, and it is shown in clear once, in the answer to
its creation. Nothing here ever logs it.

A user has at most two keys, AWS IAM's rule, which is what rotation needs:
create a second key, switch clients to it, delete the first. Creating a key
re-writes its user's record in the same transaction (compared on the
record's revision), so two racing creations cannot both pass the limit, and
deleting the user (membership.Users.delete, which deletes the user's keys in
its own transaction) cannot miss a key created meanwhile.

`lookup` is what the signature check calls on every request: it reads the
replica's cache only, and answers None for a key whose user no longer
exists, so a deleted user's keys stop working at once on every replica.
"""

from __future__ import annotations

import logging
import re
import secrets
import string
from dataclasses import dataclass, field

from berth.clock import now
from berth.errors import FailedPrecondition, InvalidArgument, NotFound
from berth.names import check_dns_label
from berth.v1 import resources_pb2 as pb
from controlplane.cache import ClusterCache
from controlplane.sealing import MasterKey, SealError, seal_bytes, unseal_bytes
from controlplane.store import Condition, Delete, Put, StoreAPI, Versioned, keys
from controlplane.store.retry import RETRY, Retry, optimistic

log = logging.getLogger(__name__)

KEY_ID = re.compile(r"AKIA[A-Z2-7]{16}")
MAX_KEYS_PER_USER = 2
_ID_ALPHABET = string.ascii_uppercase + "234567"
_SECRET_ALPHABET = string.ascii_letters + string.digits + "/+"
SECRET_LENGTH = 40


@dataclass(frozen=True)
class Credential:
    """What a valid key id stands for: who signs with it, with which role, and its secret."""

    key_id: str
    user: str
    role: str
    secret: str = field(repr=False)


def new_key_id() -> str:
    return "AKIA" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(16))


def new_secret() -> str:
    return "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(SECRET_LENGTH))


def _label(key_id: str, user: str) -> str:
    # The sealed secret opens only as this key of this user: a record whose id or
    # user was changed (or a ciphertext copied to another record) does not open.
    return f"access-key/{key_id}/{user}"


def public(record: pb.AccessKey) -> pb.AccessKey:
    """A key as the API shows it: without the sealed secret."""
    shown = pb.AccessKey()
    shown.CopyFrom(record)
    shown.ClearField("sealed_secret")
    return shown


def check_key_id(key_id: str) -> str:
    if not KEY_ID.fullmatch(key_id):
        raise InvalidArgument("an access key id is AKIA and 16 more capital letters or digits 2-7")
    return key_id


async def keys_of(store: StoreAPI, user: str) -> list[Versioned[pb.AccessKey]]:
    """The user's keys as etcd holds them (sealed), with their revisions."""
    found, _ = await store.scan(keys.ACCESS_KEYS, pb.AccessKey)
    return [f for f in found if f.value.user == user]


class AccessKeys:
    def __init__(self, store: StoreAPI, cache: ClusterCache, master: MasterKey) -> None:
        self._store = store
        self._cache = cache
        self._master = master
        # Keys whose secret did not open, logged once each (every request with one would).
        self._unusable: set[str] = set()

    async def create(self, user: str, created_by: str) -> tuple[pb.AccessKey, str]:
        """A new key for an existing user: its record (without the sealed secret) and the
        secret in clear, which is returned here only and never stored or logged so."""
        user = check_dns_label("user", user)
        user_key = keys.user(user)

        async def attempt() -> tuple[pb.AccessKey, str, int] | Retry:
            owner = await self._store.get(user_key, pb.User)
            if owner is None:
                raise NotFound(f"user {user} does not exist: create it first (berth user create)")
            if len(await keys_of(self._store, user)) >= MAX_KEYS_PER_USER:
                raise FailedPrecondition(
                    f"user {user} already has {MAX_KEYS_PER_USER} access keys, the most a user may have: "
                    "delete one first (berth access-key delete ID)"
                )
            key_id, secret = new_key_id(), new_secret()
            record = pb.AccessKey(
                id=key_id,
                user=user,
                sealed_secret=seal_bytes(self._master, secret.encode(), _label(key_id, user)),
                master_key_id=self._master.key_id,
                created_at=now(),
                created_by=created_by,
            )
            revision = await self._store.commit(
                # The user's record is written back unchanged: that bumps its revision,
                # which serializes key creations (the limit) against each other and
                # against the user's deletion.
                [Put(user_key, owner.value), Put(keys.access_key(key_id), record)],
                [Condition(user_key, owner.mod_revision), Condition(keys.access_key(key_id), 0)],
            )
            return RETRY if revision is None else (record, secret, revision)

        record, secret, revision = await optimistic(attempt, what=f"user {user}'s access keys")
        # Read your own writes: the key signs requests to this replica at once.
        await self._cache.wait_for_revision(revision)
        log.info("event=access_key_created id=%s user=%s by=%s", record.id, user, created_by)
        return public(record), secret

    async def all(self, user: str = "") -> list[pb.AccessKey]:
        """Every key (of `user` when given), sorted by user and age; never a secret."""
        if user:
            check_dns_label("user", user)
        found, _ = await self._store.scan(keys.ACCESS_KEYS, pb.AccessKey)
        chosen = [public(f.value) for f in found if not user or f.value.user == user]
        return sorted(chosen, key=lambda k: (k.user, k.created_at.seconds, k.created_at.nanos, k.id))

    async def delete(self, key_id: str) -> pb.AccessKey:
        """Delete a key: signatures made with it are refused from now on."""
        check_key_id(key_id)
        key = keys.access_key(key_id)

        async def attempt() -> tuple[pb.AccessKey, int] | Retry:
            found = await self._store.get(key, pb.AccessKey)
            if found is None:
                raise NotFound(f"access key {key_id} does not exist")
            revision = await self._store.commit([Delete(key)], [Condition(key, found.mod_revision)])
            return RETRY if revision is None else (found.value, revision)

        record, revision = await optimistic(attempt, what=f"access key {key_id}")
        await self._cache.wait_for_revision(revision)
        log.info("event=access_key_deleted id=%s user=%s", key_id, record.user)
        return public(record)

    def lookup(self, key_id: str) -> Credential | None:
        """The credential a signature names, from the cache: None unless the key exists,
        its user still exists, and its secret opens under this replica's master key."""
        if not KEY_ID.fullmatch(key_id):
            return None  # a hostile id never reaches a lookup
        found = self._cache.access_key(key_id)
        if found is None:
            return None
        record = found.value
        owner = self._cache.user(record.user)
        if owner is None:
            return None
        try:
            secret = unseal_bytes(
                self._master, record.sealed_secret, _label(key_id, record.user), record.master_key_id
            ).decode("ascii")
        except (SealError, UnicodeDecodeError) as error:
            # A replica without the first one's master key, or a record tampered with.
            if key_id not in self._unusable:
                self._unusable.add(key_id)
                log.error(
                    "event=access_key_unusable id=%s user=%s error=%r hint=%s",
                    key_id,
                    record.user,
                    str(error),
                    "copy_secrets.key_from_the_first_replicas_pki_dir",
                )
            return None
        return Credential(key_id=key_id, user=owner.value.name, role=owner.value.role, secret=secret)
