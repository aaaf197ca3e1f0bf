"""One replica's TLS material: the cluster CA on disk, its own server certificate, credentials.

The cluster CA lives in the replica's PKI directory (`<data-dir>/pki` by
default: `ca.crt` and `ca.key`, private). The first replica creates it; more
replicas get a copy of the directory (`--pki-dir`), so all of them sign for
the same cluster. The CA's key never leaves the control plane: agents get
only the CA certificate, operators a bundle of their own.

The API port asks every client for a certificate signed by the CA (mutual
TLS); its own certificate is short-lived and replaced before it expires
without a restart (gRPC asks for the current one on every new connection).
The join listener presents the CA certificate itself and asks for no client
certificate: a joining agent has only a token and the CA's pinned hash.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import grpc

from berth import pki
from berth.clientconfig import ClientConfig
from berth.files import private_dir, write_private

log = logging.getLogger(__name__)

CA_CERTIFICATE = "ca.crt"
CA_KEY = "ca.key"


def load_or_create_ca(directory: Path, cluster_id: str) -> tuple[pki.KeyPair, bool]:
    """The cluster CA from `directory`, created there first if it has none; (CA, created)."""
    private_dir(directory)
    certificate, key = directory / CA_CERTIFICATE, directory / CA_KEY
    if certificate.exists() and key.exists():
        return pki.KeyPair(certificate.read_bytes(), key.read_bytes()), False
    if certificate.exists() or key.exists():
        raise RuntimeError(f"{directory} holds half a CA ({CA_CERTIFICATE} or {CA_KEY} is missing)")
    ca = pki.create_ca(cluster_id)
    write_private(key, ca.key)
    write_private(certificate, ca.certificate)
    log.info("event=ca_created directory=%s hash=%s", directory, pki.ca_hash(ca.certificate))
    return ca, True


def listen_names(listen: str) -> tuple[str, ...]:
    """Extra names for the server certificate: the host it listens on and this machine's name."""
    host = listen.rpartition(":")[0].strip("[]")
    names = {socket.gethostname()}
    if host and host not in ("0.0.0.0", "::"):
        names.add(host)
    return tuple(sorted(names))


class ServerCertificate:
    """The replica's API certificate, replaced by a new one two thirds into its life."""

    def __init__(self, ca: pki.KeyPair, lifetime: datetime.timedelta, names: tuple[str, ...]) -> None:
        self._ca = ca
        self._lifetime = lifetime
        self._names = names
        self._lock = threading.Lock()
        self._current = self._issue()

    def _issue(self) -> pki.KeyPair:
        pair = pki.issue_with_key(self._ca, "server", "berth", self._lifetime, self._names)
        log.info("event=server_certificate_issued renew_at=%s", pki.renew_at(pair.certificate).isoformat())
        return pair

    @property
    def current(self) -> pki.KeyPair:
        return self._current

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(self._current.key, self._current.certificate)], root_certificates=self._ca.certificate
        )

    def renew_if_due(self) -> bool:
        """Replace the certificate when two thirds of its life are over; True when it was."""
        with self._lock:
            if datetime.datetime.now(datetime.UTC) < pki.renew_at(self._current.certificate):
                return False
            self._current = self._issue()
            return True

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        # Called by gRPC (on its own threads) before each new handshake: None keeps the current one.
        return self._configuration() if self.renew_if_due() else None

    def credentials(self) -> grpc.ServerCredentials:
        """Mutual TLS: a client without a certificate from this CA does not get past the handshake."""
        # The stubs say the fetcher must return a configuration; gRPC documents None as "unchanged".
        fetch: Callable[[], grpc.ServerCertificateConfiguration] = self._fetch  # type: ignore[assignment]
        return grpc.dynamic_ssl_server_credentials(
            self._configuration(), fetch, require_client_authentication=True
        )


def join_credentials(ca: pki.KeyPair) -> grpc.ServerCredentials:
    """TLS with the CA's own certificate, so a joining agent can check it against its pinned hash."""
    return grpc.ssl_server_credentials([(ca.key, ca.certificate)])


def write_client_config(path: Path, server: str, ca: pki.KeyPair, user: str, bundle: pki.KeyPair) -> None:
    """An operator's CLI config (berth/clientconfig.py): private, written whole."""
    ClientConfig(
        server=server,
        user=user,
        ca=ca.certificate.decode(),
        certificate=bundle.certificate.decode(),
        key=bundle.key.decode(),
    ).save(path)
    log.info("event=client_config_written path=%s user=%s", path, user)


def home_config() -> Path | None:
    """`~/.config/berth/config` of the user running the control plane (None without a home)."""
    home = os.environ.get("HOME")
    return Path(home) / ".config" / "berth" / "config" if home else None
