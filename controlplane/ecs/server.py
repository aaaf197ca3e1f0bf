"""The ECS-compatible HTTP API of one control-plane replica (`--ecs-listen`).

One aiohttp server on the replica's event loop. Each request is, in order:
bounded (body size, time, requests in flight), authenticated (AWS Signature
Version 4 with an access key of a Berth user, `controlplane.ecs.sigv4`),
resolved to an ECS operation, authorised (the user's role against the
operation's), checked against ECS's model, handled by the same operations the
gRPC API calls, and audited (every call that needs more than viewer, allowed or
not, as the gRPC door audits). Anything that goes wrong is answered in ECS's
error shape; an unexpected fault is logged and answered as ServerException,
never with a traceback.

It serves HTTPS with the replica's API certificate (issued by the cluster CA,
renewed as the gRPC listener's is) unless `--ecs-insecure-http` is given: a
signature proves who sent a request, but does not hide its body (task
definitions carry environment values) nor stop a replay inside the signature's
five minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from berth.errors import BerthError
from berth.files import private_dir, write_private
from controlplane.api.access import AuditLog, allowed
from controlplane.ecs import clusters, instances, services, tags, taskdefs, tasks
from controlplane.ecs.backend import Backend, Operation, refuse_unsupported, unsupported
from controlplane.ecs.errors import translate
from controlplane.ecs.protocol import (
    CONTENT_TYPE,
    MAX_BODY,
    EcsError,
    check_input,
    operation_name,
    parse_body,
)
from controlplane.ecs.sigv4 import SignatureError, SignedRequest, verify
from controlplane.operations.access_keys import Credential
from controlplane.tls import ServerCertificate

log = logging.getLogger(__name__)

OPERATIONS: dict[str, Operation] = {
    **clusters.OPERATIONS,
    **taskdefs.OPERATIONS,
    **services.OPERATIONS,
    **tasks.OPERATIONS,
    **instances.OPERATIONS,
    **tags.OPERATIONS,
}
# Requests handled at once; more wait, and past the queue's bound get ThrottlingException
# (which the aws CLI and boto3 retry with backoff).
MAX_IN_FLIGHT = 64
MAX_WAITING = 256
# Seconds a request may take from its first byte to its answer.
REQUEST_TIMEOUT = 30.0
# Seconds between checks that the API certificate was renewed.
CERTIFICATE_CHECK = 60.0
# What an audit entry says a call acted on: names, never values.
_TARGET_KEYS = (
    "cluster",
    "clusterName",
    "serviceName",
    "service",
    "taskDefinition",
    "family",
    "task",
    "resourceArn",
    "status",
)


def _target(params: dict[str, Any]) -> str:
    parts = [f"{key}={params[key][:200]}" for key in _TARGET_KEYS if isinstance(params.get(key), str)]
    for key in ("services", "tasks", "containerInstances", "clusters", "tagKeys"):
        if isinstance(params.get(key), list):
            parts.append(f"{key}={len(params[key])}")
    return " ".join(parts)


@dataclass
class _Call:
    """What one request turned out to be, as far as it got (for the audit log)."""

    user: str = ""
    name: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    role: str = "viewer"


def _answer(status: int, body: dict[str, Any], request_id: str) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body, separators=(",", ":")).encode(),
        headers={"Content-Type": CONTENT_TYPE, "x-amzn-RequestId": request_id},
    )


class EcsApi:
    def __init__(
        self,
        backend: Backend,
        credential_of: Callable[[str], Credential | None],
        audit: AuditLog,
        certificate: ServerCertificate | None,
        tls_dir: Path,
    ) -> None:
        """certificate None: plain HTTP (--ecs-insecure-http)."""
        self._backend = backend
        self._credential_of = credential_of
        self._audit_log = audit
        self._certificate = certificate
        self._tls_dir = tls_dir
        self._runner: web.AppRunner | None = None
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._waiting = 0
        self._renewal: asyncio.Task[None] | None = None
        self._loaded = b""
        self.port = 0

    async def start(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            app, access_log=None, keepalive_timeout=30.0, max_line_size=8190, max_field_size=8190
        )
        await self._runner.setup()
        context = self._tls_context() if self._certificate is not None else None
        site = web.TCPSite(self._runner, host.strip("[]") or "0.0.0.0", int(port), ssl_context=context)
        try:
            await site.start()
        except OSError as error:
            await self._runner.cleanup()
            raise OSError(f"cannot listen on {address} (--ecs-listen): {error.strerror}") from None
        addresses = self._runner.addresses
        self.port = int(addresses[0][1]) if addresses else int(port)
        if context is not None:
            self._renewal = asyncio.create_task(self._renew(context), name="ecs-certificate")
        log.info("event=ecs_api_listening address=%s tls=%s", address, context is not None)

    async def stop(self) -> None:
        if self._renewal is not None:
            self._renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewal
        if self._runner is not None:
            await self._runner.cleanup()

    # -- TLS -------------------------------------------------------------------

    def _load(self, context: ssl.SSLContext) -> bytes:
        """Loads the current certificate into `context` (ssl reads only files: private ones)."""
        assert self._certificate is not None
        pair = self._certificate.current
        private_dir(self._tls_dir)
        write_private(self._tls_dir / "server.pem", pair.certificate)
        write_private(self._tls_dir / "server-key.pem", pair.key)
        context.load_cert_chain(self._tls_dir / "server.pem", self._tls_dir / "server-key.pem")
        return pair.certificate

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._loaded = self._load(context)
        return context

    async def _renew(self, context: ssl.SSLContext) -> None:
        # The same certificate as the gRPC listener's: renewed by whichever door notices first
        # (issuing one signs with the CA: off the event loop); new handshakes use the chain
        # loaded again into the same context. A failed pass is logged and tried again.
        assert self._certificate is not None
        while True:
            await asyncio.sleep(CERTIFICATE_CHECK)
            try:
                await asyncio.to_thread(self._certificate.renew_if_due)
                if self._certificate.current.certificate != self._loaded:
                    self._loaded = self._load(context)
                    log.info("event=ecs_api_certificate_reloaded")
            except Exception:
                log.exception("event=ecs_api_certificate_reload_failed")

    # -- requests --------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        request_id = str(uuid.uuid4())
        if self._waiting >= MAX_WAITING:
            error = EcsError("ThrottlingException", "too many requests in flight; retry with backoff")
            return _answer(400, error.body(), request_id)
        self._waiting += 1
        call = _Call()
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                status, body = await self._serve(request, call)
        except TimeoutError:
            # Not RequestTimeout: the SDKs retry that on their own, and a handler cut short may
            # have written part of what it was asked (RunTask's first tasks): look, then retry.
            error = EcsError(
                "ClientException",
                f"{call.name or 'the request'} did not finish within {REQUEST_TIMEOUT:.0f} s and may "
                "have taken effect in part: check before retrying",
            )
            self._audit(call, "timed out")
            status, body = error.status, error.body()
        finally:
            self._waiting -= 1
        return _answer(status, body, request_id)

    async def _serve(self, request: web.Request, call: _Call) -> tuple[int, dict[str, Any]]:
        """Everything up to the handler runs outside the handler slots, so clients that never
        finish sending (or cannot sign) hold no slot; only authorised, checked requests wait."""
        try:
            if request.method != "POST" or request.path != "/":
                raise EcsError(
                    "UnknownOperationException", "ECS's API is POST / with an X-Amz-Target header", 404
                )
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                raise EcsError(
                    "SerializationException", f"the body is larger than {MAX_BODY} bytes", 413
                ) from None
            credential = self._authenticate(request, body)
            call.user = credential.user
            call.name = operation_name(request.headers.get("X-Amz-Target"))
            served = OPERATIONS.get(call.name)
            if served is None:
                call.role = "admin"  # an attempt at something Berth does not serve is audited
                raise unsupported(call.name)
            call.params = parse_body(body)
            check_input(call.name, call.params)
            call.role = served.required_role(call.params)
            if not allowed(credential.role, call.role):
                raise EcsError(
                    "AccessDeniedException",
                    f"user {call.user} ({credential.role or 'no role'}) may not call {call.name}: "
                    f"it needs {call.role}",
                )
            refuse_unsupported(call.name, served, call.params)
            async with self._slots:
                answer = await served.handler(self._backend, call.params)
            self._audit(call, "ok")
            return 200, answer
        except EcsError as error:
            self._audit(call, f"refused: {error.error_type}")
            return error.status, error.body()
        except BerthError as error:
            ecs_error = translate(error)
            self._audit(call, f"refused: {ecs_error.error_type}")
            return ecs_error.status, ecs_error.body()
        except Exception:
            log.exception("event=ecs_request_failed operation=%s", call.name)
            self._audit(call, "failed: ServerException")
            return 500, EcsError(
                "ServerException",
                f"internal error in {call.name or 'the request'}; see the control plane log",
            ).body()

    def _authenticate(self, request: web.Request, body: bytes) -> Credential:
        found: dict[str, Credential] = {}

        def secret_of(key_id: str) -> str | None:
            credential = self._credential_of(key_id)
            if credential is None:
                return None
            found["credential"] = credential
            return credential.secret

        signed = SignedRequest(
            method=request.method,
            path=request.rel_url.raw_path,
            query=request.rel_url.raw_query_string,
            headers=request.headers,
            body=body,
        )
        try:
            verify(signed, secret_of, time.time())
        except SignatureError as error:
            raise EcsError(error.code, str(error), error.status) from None
        return found["credential"]

    def _audit(self, call: _Call, result: str) -> None:
        """Calls of an authenticated user that need more than viewer, whatever their outcome."""
        if call.user and call.name and call.role != "viewer":
            self._audit_log.record(call.user, f"ecs:{call.name}", _target(call.params), result)
