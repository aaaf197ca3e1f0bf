"""Who is a member: join tokens, and the certificates nodes hold.

A join token is "ID.SECRET" (8 and 32 hex digits). etcd keeps only the
secret's SHA-256, the expiry, the number of joins allowed and made, and
whether it was revoked; the whole token is shown once, at creation. A join
uses up one of the token's joins in the same transaction that records the new
node's identity, so a single-use token admits exactly one node even when two
agents race with it.

A node's identity is the certificate the CA issued it at join (common name =
node id). The `identities/NODE_ID` record names the serial of the one
certificate the node may use now: a renewal replaces it, `berth node remove`
revokes it, and every agent call is checked against it.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import logging
import re
import secrets
import uuid

from berth import pki
from berth.clock import now
from berth.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from berth.names import check_dns_label
from berth.v1 import resources_pb2 as pb
from controlplane.cache import ClusterCache
from controlplane.operations.access_keys import keys_of
from controlplane.store import Condition, Delete, Put, StoreAPI, Write, keys

log = logging.getLogger(__name__)

TOKEN = re.compile(r"([0-9a-f]{8})\.([0-9a-f]{32})")
TOKEN_ID = re.compile(r"[0-9a-f]{8}")
DEFAULT_TTL = 3600
MAX_TTL = 365 * 86400
MAX_USES = 100_000
MAX_DESCRIPTION = 200
# Seconds the certificate a node renewed away stays valid: if the answer to its
# renewal was lost, it can renew again with the old one instead of rejoining.
RENEWAL_GRACE = 300
# The same words for every refused token: a caller learns nothing about which tokens exist.
REFUSED = "the join token is not valid (unknown, expired, used up or revoked): create a new one"


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def _seconds(stamp: pb.JoinToken) -> float:
    return stamp.expires_at.seconds + stamp.expires_at.nanos / 1e9


class Membership:
    def __init__(
        self,
        store: StoreAPI,
        cache: ClusterCache,
        ca: pki.KeyPair,
        node_certificate_lifetime: datetime.timedelta,
        user_certificate_lifetime: datetime.timedelta = datetime.timedelta(days=365),
    ) -> None:
        self._store = store
        self._cache = cache
        self._ca = ca
        self._lifetime = node_certificate_lifetime
        self._user_lifetime = user_certificate_lifetime

    @property
    def ca_certificate(self) -> bytes:
        return self._ca.certificate

    # -- join tokens -------------------------------------------------------

    async def create_token(
        self, ttl: int, uses: int, description: str, created_by: str
    ) -> tuple[str, pb.JoinToken]:
        """A new token ("ID.SECRET") and its record; only the secret's hash is stored."""
        ttl = ttl or DEFAULT_TTL
        if not 1 <= ttl <= MAX_TTL:
            raise InvalidArgument(f"a token's lifetime must be 1 s to {MAX_TTL // 86400} days, not {ttl} s")
        if uses > MAX_USES:
            raise InvalidArgument(f"a token allows at most {MAX_USES} joins (0: any number until it expires)")
        if len(description) > MAX_DESCRIPTION or not description.isprintable():
            raise InvalidArgument(
                f"the description must be printable and at most {MAX_DESCRIPTION} characters"
            )
        token_id, secret = secrets.token_hex(4), secrets.token_hex(16)
        created = now()
        record = pb.JoinToken(
            id=token_id,
            secret_sha256=_digest(secret),
            created_at=created,
            uses=uses,
            created_by=created_by,
            description=description,
        )
        record.expires_at.FromSeconds(created.seconds + ttl)
        key = keys.join_token(token_id)
        if await self._store.commit([Put(key, record)], [Condition(key, 0)]) is None:
            raise FailedPrecondition("a token with the same id appeared meanwhile; try again")
        log.info("event=join_token_created id=%s ttl=%d uses=%d by=%s", token_id, ttl, uses, created_by)
        return f"{token_id}.{secret}", record

    async def tokens(self) -> list[pb.JoinToken]:
        found, _ = await self._store.scan(keys.JOIN_TOKENS, pb.JoinToken)
        return [public(f.value) for f in found]

    async def revoke_token(self, token_id: str) -> pb.JoinToken:
        if not TOKEN_ID.fullmatch(token_id):
            raise InvalidArgument("a token id is 8 hex digits (the part before the dot)")

        def revoke(record: pb.JoinToken) -> pb.JoinToken | None:
            if record.revoked:
                return None
            record.revoked = True
            return record

        updated = await self._store.update(keys.join_token(token_id), pb.JoinToken, revoke)
        if updated is None:
            found = await self._store.get(keys.join_token(token_id), pb.JoinToken)
            if found is None:
                raise NotFound(f"join token {token_id} does not exist")
            updated = found.value
        log.info("event=join_token_revoked id=%s", token_id)
        return public(updated)

    # -- joining and renewing ------------------------------------------------

    async def join(self, token: str, csr: bytes, name: str) -> tuple[str, bytes]:
        """Admit a new node: (its id, its certificate). Uses up one of the token's joins."""
        matched = TOKEN.fullmatch(token.strip())
        if matched is None:
            raise PermissionDenied(REFUSED)
        key = pki.public_key_of_csr(csr)
        name = check_dns_label("node name", name) if name else ""
        token_key = keys.join_token(matched.group(1))
        found = await self._store.get(token_key, pb.JoinToken)
        record = found.value if found else None
        if (
            found is None
            or record is None
            or not hmac.compare_digest(record.secret_sha256, _digest(matched.group(2)))
            or record.revoked
            or _seconds(record) <= now().seconds
            or (record.uses and record.used >= record.uses)
        ):
            log.warning("event=join_refused token_id=%s", matched.group(1))
            raise PermissionDenied(REFUSED)
        node_id = f"node-{uuid.uuid4().hex[:12]}"
        certificate, serial = pki.issue(self._ca, "node", node_id, key, self._lifetime)
        record.used += 1
        identity = self._identity(node_id, certificate, serial, name)
        written = await self._store.commit(
            [Put(token_key, record), Put(keys.identity(node_id), identity)],
            [Condition(token_key, found.mod_revision), Condition(keys.identity(node_id), 0)],
        )
        if written is None:
            # Another join used the token meanwhile: look again (it may be used up now).
            return await self.join(token, csr, name)
        log.info("event=node_joined node=%s name=%s token_id=%s", node_id, name, record.id)
        return node_id, certificate

    def _identity(self, node_id: str, certificate: bytes, serial: int, name: str) -> pb.NodeIdentity:
        identity = pb.NodeIdentity(node_id=node_id, serial=f"{serial:x}", name=name, joined_at=now())
        identity.not_after.FromDatetime(pki.identity(certificate).not_after)
        return identity

    async def renew(self, node_id: str, csr: bytes) -> bytes:
        """A new certificate for a node that proved it holds its current one."""
        key = pki.public_key_of_csr(csr)
        certificate, serial = pki.issue(self._ca, "node", node_id, key, self._lifetime)

        def replace(identity: pb.NodeIdentity) -> pb.NodeIdentity | None:
            if identity.revoked:
                raise PermissionDenied(f"node {node_id} was removed; its certificate is revoked")
            identity.previous_serial = identity.serial
            identity.renewed_at.CopyFrom(now())
            identity.serial = f"{serial:x}"
            identity.not_after.FromDatetime(pki.identity(certificate).not_after)
            return identity

        if await self._store.update(keys.identity(node_id), pb.NodeIdentity, replace) is None:
            raise PermissionDenied(f"node {node_id} has no identity; join it again with a token")
        log.info("event=node_certificate_renewed node=%s", node_id)
        return certificate

    def check_node(self, peer: pki.Identity) -> str:
        """The node id a verified node certificate may act as; PermissionDenied if it may not."""
        if peer.kind != "node":
            raise PermissionDenied(f"a {peer.kind or 'unknown'} certificate cannot act as a node")
        current = self._cache.node_identity(peer.name)
        if current is None or current.value.revoked:
            raise PermissionDenied(f"node {peer.name} is not a member (removed, or never joined)")
        serial = f"{peer.serial:x}"
        if serial != current.value.serial and not (
            serial == current.value.previous_serial
            and now().seconds < current.value.renewed_at.seconds + RENEWAL_GRACE
        ):
            raise PermissionDenied(f"node {peer.name} presented a certificate that was replaced or revoked")
        return peer.name


def public(record: pb.JoinToken) -> pb.JoinToken:
    """A token record as the API shows it: without the secret's hash."""
    shown = pb.JoinToken()
    shown.CopyFrom(record)
    shown.ClearField("secret_sha256")
    return shown


ROLES = ("viewer", "deployer", "admin")
MAX_SERIALS = 20


class Users:
    """Operators: a role each, and the serials of the certificates issued to them."""

    def __init__(self, store: StoreAPI, ca: pki.KeyPair, lifetime: datetime.timedelta) -> None:
        self._store = store
        self._ca = ca
        self._lifetime = lifetime

    async def issue(self, name: str, role: str, csr: bytes, created_by: str) -> tuple[pb.User, bytes]:
        """A certificate for the user (created with `role`, or the existing user re-issued
        with the same role: a lost key is replaced, the old certificate stays valid until deleted)."""
        name = check_dns_label("user name", name)
        if role not in ROLES:
            raise InvalidArgument(f"role {role!r} is unknown: use one of {', '.join(ROLES)}")
        key = pki.public_key_of_csr(csr)
        certificate, serial = pki.issue(self._ca, "user", name, key, self._lifetime)
        user_key = keys.user(name)
        found = await self._store.get(user_key, pb.User)
        if found is not None and found.value.role != role:
            raise FailedPrecondition(
                f"user {name} exists with role {found.value.role}; delete it first to change the role"
            )
        record = (
            found.value if found else pb.User(name=name, role=role, created_at=now(), created_by=created_by)
        )
        record.serials.append(f"{serial:x}")
        del record.serials[:-MAX_SERIALS]
        if (
            await self._store.commit(
                [Put(user_key, record)], [Condition(user_key, found.mod_revision if found else 0)]
            )
            is None
        ):
            raise FailedPrecondition(f"user {name} changed meanwhile; try again")
        log.info("event=user_certificate_issued user=%s role=%s by=%s", name, role, created_by)
        return record, certificate

    async def issue_with_key(self, name: str, role: str, created_by: str) -> pki.KeyPair:
        """For the control plane's own admin config: the key is made here."""
        key = pki.new_key()
        _, certificate = await self.issue(name, role, pki.csr_pem(key), created_by)
        return pki.KeyPair(certificate, pki.key_pem(key))

    async def all(self) -> list[pb.User]:
        found, _ = await self._store.scan(keys.USERS, pb.User)
        return [f.value for f in found]

    async def delete(self, name: str, caller: str) -> pb.User:
        name = check_dns_label("user name", name)
        if name == caller:
            raise FailedPrecondition("you cannot delete yourself; ask another admin")
        found = await self._store.get(keys.user(name), pb.User)
        if found is None:
            raise NotFound(f"user {name} does not exist")
        # The user's access keys go in the same transaction. Creating a key re-writes
        # the user's record, so the compare on it also fails if one was created meanwhile.
        owned = await keys_of(self._store, name)
        writes: list[Write] = [Delete(keys.user(name)), *(Delete(k.key) for k in owned)]
        conditions = [
            Condition(keys.user(name), found.mod_revision),
            *(Condition(k.key, k.mod_revision) for k in owned),
        ]
        if await self._store.commit(writes, conditions) is None:
            raise FailedPrecondition(f"user {name} changed meanwhile; try again")
        log.info("event=user_deleted user=%s by=%s access_keys_deleted=%d", name, caller, len(owned))
        return found.value
