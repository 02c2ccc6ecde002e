"""Triton's extension routes that modelgate does not serve: shared memory (system and CUDA),
trace and log settings. Each answers 501 with the message gRPC gives for the same RPC
(api/extensions.py), not 404 "no route": a client learns the feature is not there, not
that it mistyped a path. Nothing is authenticated or read first, as on gRPC: the answer
says nothing about the server that server metadata does not."""

from __future__ import annotations

from typing import TYPE_CHECKING

from modelgate.api.extensions import (
    CUDA_SHARED_MEMORY,
    LOGGING,
    SYSTEM_SHARED_MEMORY,
    TRACE,
    unsupported_extension,
)
from modelgate.api.rest.asgi import Receive, Scope, Send

if TYPE_CHECKING:
    from modelgate.api.rest.app import RestApp

__all__ = ["cuda_shared_memory", "log_settings", "system_shared_memory", "trace_settings"]


async def system_shared_memory(
    app: RestApp, scope: Scope, receive: Receive, send: Send, name: str, version: str | None
) -> None:
    raise unsupported_extension(SYSTEM_SHARED_MEMORY)


async def cuda_shared_memory(
    app: RestApp, scope: Scope, receive: Receive, send: Send, name: str, version: str | None
) -> None:
    raise unsupported_extension(CUDA_SHARED_MEMORY)


async def trace_settings(
    app: RestApp, scope: Scope, receive: Receive, send: Send, name: str, version: str | None
) -> None:
    raise unsupported_extension(TRACE)


async def log_settings(
    app: RestApp, scope: Scope, receive: Receive, send: Send, name: str, version: str | None
) -> None:
    raise unsupported_extension(LOGGING)
