"""Who is calling: the identity in the client certificate the TLS handshake verified.

The API port lets only certificates of the cluster CA through the handshake,
so a certificate found here is genuine; what it may do is decided by its kind
(`berth/pki.py`) and, for nodes, by `operations.membership`. Certificates
are parsed once each (a small cache keyed by the PEM).
"""

from __future__ import annotations

import functools

from berth import pki
from berth.errors import PermissionDenied, Unauthenticated
from controlplane.api.errors import Context


@functools.lru_cache(maxsize=4096)
def _parse(pem: bytes) -> pki.Identity:
    return pki.identity(pem)


def identity(context: Context) -> pki.Identity:
    """The caller's verified identity; Unauthenticated when there is none."""
    pem = next(iter(context.auth_context().get("x509_pem_cert", ())), None)
    if not pem:
        raise Unauthenticated("a client certificate of this cluster is required")
    return _parse(bytes(pem))


def user(context: Context) -> pki.Identity:
    """The operator calling; nodes may not use the operator API."""
    caller = identity(context)
    if caller.kind != "user":
        raise PermissionDenied(f"a {caller.kind or 'unknown'} certificate cannot use the operator API")
    return caller
