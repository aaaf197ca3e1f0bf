"""Access keys without etcd: their shape, the two-per-user limit, sealing, lookups, deletion."""

from __future__ import annotations

import asyncio
import datetime
import logging
import re

import pytest

from berth import pki
from berth.errors import FailedPrecondition, InvalidArgument, NotFound
from berth.v1 import resources_pb2 as pb
from controlplane.cache import ClusterCache
from controlplane.operations.access_keys import MAX_KEYS_PER_USER, AccessKeys, Credential
from controlplane.operations.membership import Users
from controlplane.sealing import MasterKey, SealError, seal_bytes, unseal_bytes
from controlplane.store import Delete, keys
from controlplane.store.memory import MemoryStore
from tests.unit.conftest import caught_up, put

ID = re.compile(r"AKIA[A-Z2-7]{16}")
SECRET = re.compile(r"[A-Za-z0-9/+]{40}")


async def user(store: MemoryStore, name: str, role: str = "deployer") -> None:
    await put(store, keys.user(name), pb.User(name=name, role=role))


@pytest.fixture()
def master() -> MasterKey:
    return MasterKey.generate()


@pytest.fixture()
def access_keys(store: MemoryStore, cache: ClusterCache, master: MasterKey) -> AccessKeys:
    return AccessKeys(store, cache, master)


# -- sealing bytes ----------------------------------------------------------------------


def test_sealed_bytes_open_only_with_their_label_and_master_key() -> None:
    master = MasterKey.generate()
    sealed = seal_bytes(master, b"the-secret", "access-key/A/alice")
    assert b"the-secret" not in sealed
    assert unseal_bytes(master, sealed, "access-key/A/alice", master.key_id) == b"the-secret"
    assert seal_bytes(master, b"the-secret", "access-key/A/alice") != sealed  # a fresh nonce each time
    for label in ("access-key/A/bob", "access-key/B/alice", ""):
        with pytest.raises(SealError):
            unseal_bytes(master, sealed, label)
    with pytest.raises(SealError):
        unseal_bytes(MasterKey.generate(), sealed, "access-key/A/alice")
    with pytest.raises(SealError, match="another master key"):
        unseal_bytes(master, sealed, "access-key/A/alice", "0123456789abcdef")
    flipped = bytearray(sealed)
    flipped[-1] ^= 1
    for tampered in (bytes(flipped), sealed[:20], b""):
        with pytest.raises(SealError):
            unseal_bytes(master, tampered, "access-key/A/alice")


# -- creating ---------------------------------------------------------------------------


async def test_a_key_has_aws_shapes_its_secret_is_shown_once_and_stored_only_sealed(
    store: MemoryStore, access_keys: AccessKeys, caplog: pytest.LogCaptureFixture
) -> None:
    await user(store, "alice")
    with caplog.at_level(logging.DEBUG):
        record, secret = await access_keys.create("alice", "admin")
        credential = access_keys.lookup(record.id)
    assert ID.fullmatch(record.id) and SECRET.fullmatch(secret)
    assert record.user == "alice" and record.created_by == "admin" and record.created_at.seconds
    assert not record.sealed_secret, "the answer carries the sealed secret"
    stored = await store.get(keys.access_key(record.id), pb.AccessKey)
    assert stored is not None and stored.value.sealed_secret
    everything = b"".join(entry.value or b"" for entry in (await store.scan_raw(""))[0])
    assert secret.encode() not in everything, "the secret is in the store in clear"
    assert credential == Credential(record.id, "alice", "deployer", secret)
    assert secret not in repr(credential)
    assert secret not in caplog.text, "the secret was logged"
    other, other_secret = await access_keys.create("alice", "admin")
    assert other.id != record.id and other_secret != secret


async def test_a_key_needs_an_existing_user_with_a_valid_name(
    store: MemoryStore, access_keys: AccessKeys
) -> None:
    before = store.revision
    with pytest.raises(NotFound, match="user nobody does not exist"):
        await access_keys.create("nobody", "admin")
    with pytest.raises(InvalidArgument):
        await access_keys.create("Not A Label\n", "admin")
    assert store.revision == before, "a refused creation wrote"


async def test_a_user_has_at_most_two_keys_so_rotation_is_create_switch_delete(
    store: MemoryStore, access_keys: AccessKeys
) -> None:
    await user(store, "alice")
    first, _ = await access_keys.create("alice", "admin")
    second, _ = await access_keys.create("alice", "admin")
    before = store.revision
    with pytest.raises(FailedPrecondition, match="already has 2 access keys"):
        await access_keys.create("alice", "admin")
    assert store.revision == before
    await access_keys.delete(first.id)
    third, _ = await access_keys.create("alice", "admin")
    assert {k.id for k in await access_keys.all("alice")} == {second.id, third.id}


async def test_racing_creations_never_pass_the_limit(master: MasterKey) -> None:
    store = MemoryStore(interleave=True)
    cache = ClusterCache(store, relist_pause=0)
    await cache.start()
    try:
        await user(store, "alice")
        access_keys = AccessKeys(store, cache, master)
        results = await asyncio.gather(
            *(access_keys.create("alice", "admin") for _ in range(6)), return_exceptions=True
        )
        created = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, BaseException)]
        assert len(created) == MAX_KEYS_PER_USER
        assert all(isinstance(r, FailedPrecondition) for r in refused), refused
        assert len(await access_keys.all("alice")) == MAX_KEYS_PER_USER
    finally:
        await cache.stop()


# -- listing and deleting ---------------------------------------------------------------------


async def test_listing_shows_no_secret_and_filters_by_user(
    store: MemoryStore, access_keys: AccessKeys
) -> None:
    await user(store, "alice")
    await user(store, "bob")
    a, _ = await access_keys.create("alice", "admin")
    b, _ = await access_keys.create("bob", "admin")
    everyone = await access_keys.all()
    assert [k.id for k in everyone] == [a.id, b.id]
    assert all(not k.sealed_secret for k in everyone)
    assert [k.id for k in await access_keys.all("bob")] == [b.id]
    assert await access_keys.all("carol") == []
    with pytest.raises(InvalidArgument):
        await access_keys.all("../x")


async def test_a_deleted_key_is_refused_at_once(store: MemoryStore, access_keys: AccessKeys) -> None:
    await user(store, "alice")
    record, _ = await access_keys.create("alice", "admin")
    deleted = await access_keys.delete(record.id)
    assert deleted.id == record.id and not deleted.sealed_secret
    assert access_keys.lookup(record.id) is None
    with pytest.raises(NotFound, match=f"access key {record.id} does not exist"):
        await access_keys.delete(record.id)
    before = store.revision
    for hostile in (
        "",
        "AKIA",
        "akiaaaaaaaaaaaaaaaaa",
        "AKIA0000000000000000",
        "../users/alice",
        "A" * 10_000,
    ):
        with pytest.raises(InvalidArgument):
            await access_keys.delete(hostile)
    assert store.revision == before


# -- lookups (the signature check's) ------------------------------------------------------------


@pytest.mark.parametrize(
    "hostile",
    [
        "",
        "AKIA",
        "AKIAAAAAAAAAAAAAAAAAA",
        "akiaaaaaaaaaaaaaaaaa",
        "AKIA1111111111111111",
        "AKIAAAAAAAAAAAAAAAA\n",
        "AKIA/AAAAAAAAAAAAAAA",
        "x" * 100_000,
        "AKIAÀAAAAAAAAAAAAAAA",
    ],
)
async def test_a_hostile_key_id_never_reaches_the_cache(hostile: str, master: MasterKey) -> None:
    class NoCache:
        def __getattr__(self, name: str) -> object:
            raise AssertionError(f"the cache was asked ({name}) for {hostile[:30]!r}")

    access_keys = AccessKeys(MemoryStore(), NoCache(), master)  # type: ignore[arg-type]
    assert access_keys.lookup(hostile) is None


async def test_a_key_of_a_deleted_user_or_a_tampered_record_is_refused(
    store: MemoryStore, cache: ClusterCache, access_keys: AccessKeys, caplog: pytest.LogCaptureFixture
) -> None:
    await user(store, "alice", role="viewer")
    await user(store, "bob", role="admin")
    record, secret = await access_keys.create("alice", "admin")
    stored = await store.get(keys.access_key(record.id), pb.AccessKey)
    assert stored is not None
    assert access_keys.lookup(record.id) == Credential(record.id, "alice", "viewer", secret)
    # The record given to another (stronger) user: the sealed secret is bound to alice.
    moved = pb.AccessKey()
    moved.CopyFrom(stored.value)
    moved.user = "bob"
    await put(store, keys.access_key(record.id), moved)
    await caught_up(cache, store)
    assert access_keys.lookup(record.id) is None
    # Another replica's master key (its PKI directory was not copied): refused, logged once.
    elsewhere = AccessKeys(store, cache, MasterKey.generate())
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert elsewhere.lookup(record.id) is None and elsewhere.lookup(record.id) is None
    assert caplog.text.count("event=access_key_unusable") == 1
    await put(store, keys.access_key(record.id), stored.value)
    await caught_up(cache, store)
    assert access_keys.lookup(record.id) is not None
    await store.commit([Delete(keys.user("alice"))])
    await caught_up(cache, store)
    assert access_keys.lookup(record.id) is None, "a deleted user's key still signs"


async def test_deleting_a_user_deletes_its_keys_in_the_same_transaction(
    store: MemoryStore, cache: ClusterCache, access_keys: AccessKeys
) -> None:
    users = Users(store, pki.create_ca("test"), datetime.timedelta(days=1))
    await user(store, "alice")
    await user(store, "bob")
    mine = [(await access_keys.create("alice", "admin"))[0] for _ in range(2)]
    theirs, _ = await access_keys.create("bob", "admin")
    before = store.revision
    await users.delete("alice", "admin")
    assert store.revision == before + 1, "the user and its keys went in more than one transaction"
    assert [k.id for k in await access_keys.all()] == [theirs.id]
    await caught_up(cache, store)
    assert all(access_keys.lookup(k.id) is None for k in mine)
    assert access_keys.lookup(theirs.id) is not None


async def test_a_key_created_after_the_user_was_read_makes_its_deletion_retry(
    store: MemoryStore, access_keys: AccessKeys
) -> None:
    """Creating a key re-writes its user's record, so a deletion that read the user
    before cannot commit and leave the new key behind."""
    await user(store, "alice")
    found = await store.get(keys.user("alice"), pb.User)
    assert found is not None
    await access_keys.create("alice", "admin")
    after = await store.get(keys.user("alice"), pb.User)
    assert after is not None and after.mod_revision > found.mod_revision
    assert after.value == found.value, "creating a key changed the user's record"
