"""Secrets at rest: envelope encryption under the control plane's master key.

Every version of a secret gets a fresh 256-bit data key; AES-256-GCM
encrypts the value under the data key and the data key under the master key.
etcd holds only the two ciphertexts (`pb.Secret`). Both are bound to the
secret's name and version as associated data, so a ciphertext copied to
another name (or version) fails to open instead of delivering the wrong
value.

The master key is 32 random bytes in `<pki-dir>/secrets.key` (private),
made at the first start like the CA and shared by replicas the same way
(copy the PKI directory); it is never written to etcd, so a copy of etcd's
data alone reveals no secret.

Small values that are not secrets of tasks (an access key's secret) are
sealed directly under the master key with `seal_bytes`, bound to a label
that names what they belong to (e.g. the access key's id).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from berth.files import private_dir, write_private
from berth.v1 import resources_pb2 as pb

log = logging.getLogger(__name__)

MASTER_KEY_FILE = "secrets.key"
KEY_BYTES = 32
NONCE_BYTES = 12
_CONTEXT = b"berth/secret/v1"
_BYTES_CONTEXT = b"berth/sealed-bytes/v1"


class SealError(Exception):
    """A sealed secret does not open: tampered with, moved, or sealed under another master key."""


@dataclass(frozen=True)
class MasterKey:
    key: bytes

    @property
    def key_id(self) -> str:
        """A fingerprint that names the key without revealing it."""
        return hashlib.sha256(b"berth-master-key-id\0" + self.key).hexdigest()[:16]

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(AESGCM.generate_key(bit_length=256))


def load_or_create_master_key(directory: Path) -> MasterKey:
    """The master key in `directory`, created there (private) at the first start."""
    private_dir(directory)
    path = directory / MASTER_KEY_FILE
    if path.exists():
        key = path.read_bytes()
        if len(key) != KEY_BYTES:
            raise RuntimeError(
                f"{path} is not a Berth master key ({KEY_BYTES} bytes); restore it from backup"
            )
        return MasterKey(key)
    master = MasterKey.generate()
    write_private(path, master.key)
    log.info("event=secrets_master_key_created path=%s key_id=%s", path, master.key_id)
    return master


def _associated_data(part: bytes, name: str, version: int) -> bytes:
    return b"\0".join((_CONTEXT, part, name.encode(), str(version).encode()))


def _encrypt(key: bytes, plaintext: bytes, associated: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated)


def _decrypt(key: bytes, sealed: bytes, associated: bytes) -> bytes:
    if len(sealed) < NONCE_BYTES + 16:
        raise SealError("the ciphertext is truncated")
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated)
    except InvalidTag:
        raise SealError("the ciphertext does not authenticate") from None


def seal(master: MasterKey, record: pb.Secret, value: bytes) -> pb.Secret:
    """Fill `record` (name and version set) with the value, encrypted under a fresh data key."""
    data_key = AESGCM.generate_key(bit_length=256)
    record.encrypted_key = _encrypt(
        master.key, data_key, _associated_data(b"key", record.name, record.version)
    )
    record.ciphertext = _encrypt(data_key, value, _associated_data(b"value", record.name, record.version))
    record.key_id = master.key_id
    record.size = len(value)
    return record


def unseal(master: MasterKey, name: str, record: pb.Secret) -> bytes:
    """The value of the record stored under `name`; SealError unless it was sealed as that
    name (and the record's version): a record copied to another key does not open."""
    if record.key_id and record.key_id != master.key_id:
        raise SealError(f"sealed under another master key ({record.key_id})")
    data_key = _decrypt(master.key, record.encrypted_key, _associated_data(b"key", name, record.version))
    return _decrypt(data_key, record.ciphertext, _associated_data(b"value", name, record.version))


def _label_data(label: str) -> bytes:
    return b"\0".join((_BYTES_CONTEXT, label.encode()))


def seal_bytes(master: MasterKey, value: bytes, label: str) -> bytes:
    """`value` encrypted under the master key, bound to `label` (what it belongs to)."""
    return _encrypt(master.key, value, _label_data(label))


def unseal_bytes(master: MasterKey, sealed: bytes, label: str, key_id: str = "") -> bytes:
    """What `seal_bytes` sealed with the same label; SealError when it was sealed for another
    label, under another master key (`key_id`, when the record names one) or tampered with."""
    if key_id and key_id != master.key_id:
        raise SealError(f"sealed under another master key ({key_id})")
    return _decrypt(master.key, sealed, _label_data(label))
