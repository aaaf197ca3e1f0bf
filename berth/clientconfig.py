"""An operator's credentials: the control plane's address, the cluster CA, a client certificate.

One JSON file, private (0600), written by the control plane at first start for
the administrator (so the quick start needs no extra step) and by `berth user
create` for everyone else. The CLI finds it by itself: `--config`, then
`BERTH_CONFIG`, then `~/.config/berth/config`. Anything read from it is
checked before use: a broken file gets a one-line error naming it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc

from berth import pki
from berth.errors import FailedPrecondition
from berth.files import private_dir, write_private
from berth.grpc_options import CLIENT_OPTIONS

ENVIRONMENT = "BERTH_CONFIG"
MAX_BYTES = 64 * 1024


def default_path() -> Path:
    return Path(os.environ.get("HOME", "/root")) / ".config" / "berth" / "config"


def find(explicit: Path | None) -> Path:
    """Where the CLI reads its credentials from."""
    if explicit is not None:
        return explicit
    if os.environ.get(ENVIRONMENT):
        return Path(os.environ[ENVIRONMENT])
    return default_path()


@dataclass(frozen=True)
class ClientConfig:
    server: str
    user: str
    ca: str
    certificate: str
    key: str

    def save(self, path: Path) -> None:
        private_dir(path.parent)
        write_private(path, json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> ClientConfig:
        try:
            with path.open("rb") as handle:
                raw = handle.read(MAX_BYTES + 1)
        except FileNotFoundError:
            raise FailedPrecondition(
                f"no Berth credentials at {path}: the control plane writes them at first start; "
                "give --config, set BERTH_CONFIG, or ask an admin for `berth user create`"
            ) from None
        except OSError as error:
            raise FailedPrecondition(f"cannot read the Berth config {path}: {error.strerror}") from None
        try:
            if len(raw) > MAX_BYTES:
                raise ValueError("too large")
            data = json.loads(raw)
            config = cls(**{name: str(data[name]) for name in ("server", "user", "ca", "certificate", "key")})
            pki.identity(config.certificate.encode())
        except (ValueError, KeyError, TypeError) as error:
            raise FailedPrecondition(
                f"the Berth config {path} is not valid ({error}); write it anew"
            ) from None
        return config

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            self.ca.encode(), private_key=self.key.encode(), certificate_chain=self.certificate.encode()
        )


def channel_options() -> list[tuple[str, object]]:
    """Clients check the control plane's certificate for its fixed name, whatever address they dial."""
    return [("grpc.ssl_target_name_override", pki.SERVER_NAME), *CLIENT_OPTIONS]


def secure_channel(server: str, config: ClientConfig) -> grpc.Channel:
    return grpc.secure_channel(server, config.credentials(), options=channel_options())
