"""The control plane's own certificate is replaced two thirds into its life, in place."""

from __future__ import annotations

import datetime

import pytest

from berth import pki
from controlplane import tls


class _Clock:
    """Stands in for the `datetime` module inside controlplane.tls."""

    UTC = datetime.UTC
    timedelta = datetime.timedelta

    def __init__(self, now: datetime.datetime) -> None:
        self.now_value = now
        outer = self

        class _DateTime:
            @staticmethod
            def now(tz: datetime.tzinfo | None = None) -> datetime.datetime:
                return outer.now_value

        self.datetime = _DateTime


def test_the_server_certificate_is_kept_until_two_thirds_then_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ca = pki.create_ca("unit")
    certificate = tls.ServerCertificate(ca, datetime.timedelta(hours=3), ("127.0.0.1",))
    first = certificate.current
    renew_at = pki.renew_at(first.certificate)
    clock = _Clock(renew_at - datetime.timedelta(seconds=1))
    monkeypatch.setattr(tls, "datetime", clock)
    assert certificate._fetch() is None, "renewed before it was due"
    assert certificate.current == first
    clock.now_value = renew_at + datetime.timedelta(seconds=1)
    assert certificate._fetch() is not None, "not renewed when due"
    second = certificate.current
    assert second != first
    issued = pki.identity(second.certificate)
    assert issued.kind == "server" and issued.serial != pki.identity(first.certificate).serial
    # The new one (issued "now") is good for another two thirds: a handshake now keeps it.
    clock.now_value = datetime.datetime.now(datetime.UTC)
    assert certificate._fetch() is None
    assert certificate.current == second
