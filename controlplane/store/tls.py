"""TLS between the control plane and etcd: the client's files and the embedded etcd's own CA.

An external etcd is reached with the files an operator names
(`--etcd-cacert`, `--etcd-cert`, `--etcd-key`). The embedded etcd gets
certificates from an etcd CA of its own, kept in the PKI directory beside the
cluster CA (`etcd-ca.crt`, `etcd-ca.key`), so a replica's PKI copy and backup
carry it too. It is not the cluster CA: etcd lets in every client
certificate its trusted CA signed, and the cluster CA signs every agent's and
operator's certificate.

The leaf certificates (the etcd server's, for its client and peer ports, and
the control plane's client certificate) are issued again at every start into
`<data-dir>/etcd-tls/` (private): they never need renewing while a replica
runs longer than their lifetime allows between restarts.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass
from pathlib import Path

import grpc

from berth import pki
from berth.files import private_dir, tighten, write_private

log = logging.getLogger(__name__)

ETCD_CA_CERTIFICATE = "etcd-ca.crt"
ETCD_CA_KEY = "etcd-ca.key"
LEAF_LIFETIME = datetime.timedelta(days=730)
# The addresses the embedded etcd listens on, all loopback.
LOOPBACK_NAMES = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class EtcdTLS:
    """What the etcd client presents and trusts, as PEM bytes (certificate and key optional)."""

    ca: bytes | None
    certificate: bytes | None = None
    key: bytes | None = None

    @classmethod
    def from_files(cls, ca: Path | None, certificate: Path | None, key: Path | None) -> EtcdTLS:
        """Read the files an operator named; None for a file not given (the system's roots for the CA)."""
        if (certificate is None) != (key is None):
            raise ValueError("--etcd-cert and --etcd-key go together")
        return cls(
            ca=ca.read_bytes() if ca else None,
            certificate=certificate.read_bytes() if certificate else None,
            key=key.read_bytes() if key else None,
        )

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.certificate
        )


@dataclass(frozen=True)
class EmbeddedFiles:
    """Where the embedded etcd's TLS files are: etcd reads the server pair, the store the client pair."""

    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def server_certificate(self) -> Path:
        return self.directory / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.directory / "server.key"

    @property
    def client_certificate(self) -> Path:
        return self.directory / "client.crt"

    @property
    def client_key(self) -> Path:
        return self.directory / "client.key"

    def client(self) -> EtcdTLS:
        return EtcdTLS.from_files(self.ca, self.client_certificate, self.client_key)


def load_or_create_etcd_ca(pki_dir: Path) -> pki.KeyPair:
    """The etcd CA from the PKI directory, created there first if it has none."""
    private_dir(pki_dir)
    certificate, key = pki_dir / ETCD_CA_CERTIFICATE, pki_dir / ETCD_CA_KEY
    if certificate.exists() and key.exists():
        tighten(certificate)
        tighten(key)
        return pki.KeyPair(certificate.read_bytes(), key.read_bytes())
    if certificate.exists() or key.exists():
        raise RuntimeError(
            f"{pki_dir} holds half an etcd CA ({ETCD_CA_CERTIFICATE} or {ETCD_CA_KEY} is missing)"
        )
    ca = pki.create_ca("embedded", title="Berth etcd CA", join_name=None)
    write_private(key, ca.key)
    write_private(certificate, ca.certificate)
    log.info("event=etcd_ca_created directory=%s", pki_dir)
    return ca


def issue_embedded(pki_dir: Path, directory: Path) -> EmbeddedFiles:
    """Fresh server and client certificates for the embedded etcd, from the etcd CA, in `directory`."""
    ca = load_or_create_etcd_ca(pki_dir)
    files = EmbeddedFiles(private_dir(directory))
    server = pki.issue_with_key(ca, "etcd-server", "etcd", LEAF_LIFETIME, LOOPBACK_NAMES)
    client = pki.issue_with_key(ca, "etcd-client", "controlplane", LEAF_LIFETIME)
    write_private(files.ca, ca.certificate)
    write_private(files.server_key, server.key)
    write_private(files.server_certificate, server.certificate)
    write_private(files.client_key, client.key)
    write_private(files.client_certificate, client.certificate)
    return files
