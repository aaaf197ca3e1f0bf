"""Certificates for Berth's mutual TLS: the cluster CA and the identities it signs.

Every identity is a certificate signed by the cluster CA (EC P-256, with
`cryptography`):

    kind        subject CN      subject OU    used by
    ─────────   ────────────    ──────────    ──────────────────────────────
    server      berth           controlplane  the control plane's gRPC port
    node        the node id     node          an agent (issued at join)
    user        the user name   user          an operator (the CLI)

The embedded etcd has a CA of its own (`create_ca(..., join_name=None)`),
kept beside the cluster CA, which signs only two more kinds:

    etcd-server etcd            etcd          the embedded etcd (client and peer ports)
    etcd-client the replica     etcd-client   the control plane's etcd client

A separate CA because etcd with client-certificate authentication lets in
every certificate its trusted CA signed: trusting the cluster CA would let
any agent's node certificate or operator's user certificate read etcd.

Clients check the server against the CA and the fixed name SERVER_NAME
(gRPC's target name override), so a control plane is reachable by any
address without a certificate per address. The CA's hash, which a joining
agent pins, is the SHA-256 of the CA certificate's SubjectPublicKeyInfo, as
kubeadm's discovery hash is. Everything here is pure: callers read and
write the files.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from berth.errors import InvalidArgument

SERVER_NAME = "berth-controlplane"
# The join listener presents the CA certificate itself, under this name.
JOIN_NAME = "berth-join"
KINDS = ("server", "node", "user", "etcd-server", "etcd-client")
CA_LIFETIME = datetime.timedelta(days=3650)
MAX_CSR_BYTES = 4096
HASH_PREFIX = "sha256:"
# Certificates start a little in the past, for clocks a little behind the CA's.
CLOCK_SKEW = datetime.timedelta(minutes=5)


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, both PEM."""

    certificate: bytes
    key: bytes


@dataclass(frozen=True)
class Identity:
    """Who a verified certificate names."""

    kind: str
    name: str
    serial: int
    not_after: datetime.datetime


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def backdate(lifetime: datetime.timedelta) -> datetime.timedelta:
    """How far before its issue a certificate starts: the clock skew allowed, but at most a tenth
    of its life, so a short-lived certificate is not due for renewal (renew_at) the moment it is
    issued. (A negative lifetime, an already expired certificate for tests, keeps the full skew.)"""
    return min(CLOCK_SKEW, lifetime / 10) if lifetime > datetime.timedelta(0) else CLOCK_SKEW


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def create_ca(cluster_id: str, title: str = "Berth cluster CA", join_name: str | None = JOIN_NAME) -> KeyPair:
    """A new self-signed CA. The cluster CA also serves the join listener's TLS, so it
    carries digitalSignature and the JOIN_NAME DNS name; the etcd CA (join_name None) does not."""
    key = new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{title} {cluster_id}")])
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if join_name is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(join_name)]), critical=False
        )
    certificate = builder.sign(key, hashes.SHA256())
    return KeyPair(certificate.public_bytes(serialization.Encoding.PEM), key_pem(key))


def ca_hash(ca_certificate: bytes) -> str:
    """`sha256:HEX` of the CA's SubjectPublicKeyInfo: what `--ca-hash` pins."""
    certificate = x509.load_pem_x509_certificate(ca_certificate)
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return HASH_PREFIX + hashlib.sha256(spki).hexdigest()


def matches_hash(ca_certificate: bytes, pinned: str) -> bool:
    return hmac.compare_digest(ca_hash(ca_certificate), pinned.strip().lower())


def check_hash(pinned: str) -> str:
    """A `sha256:` followed by 64 hex digits; InvalidArgument otherwise."""
    text = pinned.strip().lower()
    digits = text.removeprefix(HASH_PREFIX)
    if (
        not text.startswith(HASH_PREFIX)
        or len(digits) != 64
        or any(c not in "0123456789abcdef" for c in digits)
    ):
        raise InvalidArgument(
            "the CA hash must be sha256: and 64 hex digits, as `berth join-token create` prints it"
        )
    return text


def csr_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """A certificate request for the key; the CA decides the name, so the request names nothing."""
    request = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, hashes.SHA256())
    return request.public_bytes(serialization.Encoding.PEM)


def public_key_of_csr(csr: bytes) -> ec.EllipticCurvePublicKey:
    """The key of a request from the wire: size bounded, signature checked, P-256 only."""
    if not csr or len(csr) > MAX_CSR_BYTES:
        raise InvalidArgument(f"the certificate request must be 1-{MAX_CSR_BYTES} bytes of PEM")
    try:
        request = x509.load_pem_x509_csr(csr)
    except ValueError as error:
        raise InvalidArgument("the certificate request is not a PEM CSR") from error
    if not request.is_signature_valid:
        raise InvalidArgument("the certificate request's signature does not verify")
    key = request.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise InvalidArgument("the certificate request must be for an EC P-256 key")
    return key


_UNITS = {"server": "controlplane", "etcd-server": "etcd"}
_COMMON_NAMES = {"server": "berth", "etcd-server": "etcd"}


def subject_alternative_name(address: str) -> x509.GeneralName:
    """An IP address SAN for an address (TLS checks those against IP targets), a DNS name otherwise."""
    try:
        return x509.IPAddress(ipaddress.ip_address(address.strip("[]")))
    except ValueError:
        return x509.DNSName(address)


def issue(
    ca: KeyPair,
    kind: str,
    name: str,
    public_key: ec.EllipticCurvePublicKey,
    lifetime: datetime.timedelta,
    addresses: tuple[str, ...] = (),
) -> tuple[bytes, int]:
    """A certificate for `kind`/`name` on `public_key`, signed by the CA; (PEM, serial)."""
    if kind not in KINDS:
        raise ValueError(f"unknown certificate kind {kind!r}")
    ca_certificate = x509.load_pem_x509_certificate(ca.certificate)
    ca_key = serialization.load_pem_private_key(ca.key, None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    now = _now()
    serial = x509.random_serial_number()
    usages = {
        "server": [ExtendedKeyUsageOID.SERVER_AUTH],
        # etcd's peers are each other's clients too.
        "etcd-server": [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
    }.get(kind, [ExtendedKeyUsageOID.CLIENT_AUTH])
    names: list[x509.GeneralName] = []
    if kind == "server":
        names.append(x509.DNSName(SERVER_NAME))
    if kind in ("server", "etcd-server"):
        names.extend(subject_alternative_name(a) for a in addresses)
    builder = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, _UNITS.get(kind, kind)),
                    x509.NameAttribute(NameOID.COMMON_NAME, _COMMON_NAMES.get(kind, name)),
                ]
            )
        )
        .issuer_name(ca_certificate.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(now - backdate(lifetime))
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    certificate = builder.sign(ca_key, hashes.SHA256())
    return certificate.public_bytes(serialization.Encoding.PEM), serial


def issue_with_key(
    ca: KeyPair, kind: str, name: str, lifetime: datetime.timedelta, addresses: tuple[str, ...] = ()
) -> KeyPair:
    """A new key and its certificate (for the control plane's own and for operators)."""
    key = new_key()
    certificate, _ = issue(ca, kind, name, key.public_key(), lifetime, addresses)
    return KeyPair(certificate, key_pem(key))


def identity(certificate_pem: bytes) -> Identity:
    """Who a certificate (already verified by TLS against the CA) names."""
    certificate = x509.load_pem_x509_certificate(certificate_pem)
    units = certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    unit = str(units[0].value) if units else ""
    kind = {unit_: kind_ for kind_, unit_ in _UNITS.items()}.get(unit, unit)
    return Identity(
        kind=kind,
        name=str(names[0].value) if names else "",
        serial=certificate.serial_number,
        not_after=certificate.not_valid_after_utc,
    )


def renew_at(certificate_pem: bytes) -> datetime.datetime:
    """When to renew: two thirds into the certificate's life."""
    certificate = x509.load_pem_x509_certificate(certificate_pem)
    start = certificate.not_valid_before_utc
    return start + (certificate.not_valid_after_utc - start) * 2 / 3
