"""Certificates for etcd and the control plane's etcd flags."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from berth import pki
from controlplane.main import parse_args


def _certificate(pair: pki.KeyPair) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pair.certificate)


def test_addresses_become_ip_sans_and_names_dns_sans() -> None:
    ca = pki.create_ca("t")
    server = _certificate(
        pki.issue_with_key(
            ca, "server", "berth", datetime.timedelta(hours=1), ("10.0.0.5", "cp.example", "::1")
        )
    )
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.0.0.5"),
        ipaddress.ip_address("::1"),
    ]
    assert names.get_values_for_type(x509.DNSName) == [pki.SERVER_NAME, "cp.example"]


def test_the_etcd_ca_is_not_a_join_ca_and_its_server_certificate_serves_peers_too() -> None:
    etcd_ca = pki.create_ca("e", title="Berth etcd CA", join_name=None)
    with pytest.raises(x509.ExtensionNotFound):
        _certificate(etcd_ca).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    server = pki.issue_with_key(etcd_ca, "etcd-server", "etcd", datetime.timedelta(hours=1), ("127.0.0.1",))
    usages = _certificate(server).extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert pki.identity(server.certificate).kind == "etcd-server"


@pytest.mark.parametrize(
    ("flags", "complaint"),
    [
        (["--etcd-cacert", "{file}"], "give --etcd too"),
        (["--etcd", "https://e:2379", "--etcd-cert", "{file}"], "go together"),
        (["--etcd", "https://e:2379", "--etcd-cacert", "/nonexistent/ca.crt"], "not a readable file"),
    ],
)
def test_bad_etcd_tls_flags_are_refused(
    flags: list[str], complaint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "f.pem"
    file.write_text("x")
    with pytest.raises(SystemExit):
        parse_args(["--data-dir", str(tmp_path), *(f.format(file=file) for f in flags)])
    assert complaint in capsys.readouterr().err


def test_etcd_tls_flags_reach_the_settings(tmp_path: Path) -> None:
    for name in ("ca.crt", "client.crt", "client.key"):
        (tmp_path / name).write_text(name)
    settings = parse_args(
        [
            "--data-dir",
            str(tmp_path),
            "--etcd",
            "https://10.0.0.21:2379",
            "--etcd-cacert",
            str(tmp_path / "ca.crt"),
            "--etcd-cert",
            str(tmp_path / "client.crt"),
            "--etcd-key",
            str(tmp_path / "client.key"),
        ]
    )
    tls = settings.etcd_tls
    assert tls is not None
    assert (tls.ca, tls.certificate, tls.key) == (b"ca.crt", b"client.crt", b"client.key")
