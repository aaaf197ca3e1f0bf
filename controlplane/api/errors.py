"""Turns Berth's exceptions into deliberate gRPC statuses at the API boundary."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from berth.errors import BerthError

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


async def abort_for(context: Context, error: Exception, method: str) -> None:
    """A Berth error's own status and line; anything else is INTERNAL, logged, never leaked."""
    if isinstance(error, BerthError):
        await context.abort(error.grpc_code, str(error))
    log.exception("event=rpc_failed method=%s", method)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}; see the control plane log")


def grpc_errors(method: Handler) -> Handler:
    """Abort with the error's status code and one-line message; never leak a traceback."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: Context) -> Any:
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await abort_for(context, error, method.__name__)

    return wrapper  # type: ignore[return-value]


StreamHandler = TypeVar("StreamHandler", bound=Callable[..., AsyncIterator[Any]])


def grpc_stream_errors(method: StreamHandler) -> StreamHandler:
    """`grpc_errors` for a server-streaming method (an async generator)."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: Context) -> AsyncIterator[Any]:
        try:
            async for response in method(self, request, context):
                yield response
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await abort_for(context, error, method.__name__)

    return wrapper  # type: ignore[return-value]
