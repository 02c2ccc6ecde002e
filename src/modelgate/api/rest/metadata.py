"""What the server says about itself and its models: OIP v2 server and model metadata,
health and readiness, configuration and statistics; and ``GET /metrics`` for Prometheus."""

from __future__ import annotations

from typing import TYPE_CHECKING

from modelgate.api.credentials import credential_from
from modelgate.api.rest.asgi import Receive, Scope, Send, credential_headers, respond
from modelgate.api.rest.errors import no_route
from modelgate.core.access.authorization import require_scope
from modelgate.core.access.identity import Scope as Permission  # "Scope" here is the ASGI scope
from modelgate.observability.metrics import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from modelgate.api.rest.app import RestApp

__all__ = [
    "all_statistics",
    "metrics",
    "model_config",
    "model_metadata",
    "model_ready",
    "model_statistics",
    "no_model_action",
    "server_live",
    "server_metadata",
    "server_ready",
]


async def server_metadata(
    app: RestApp, scope: Scope, receive: Receive, send: Send, name: str, version: str | None
) -> None:
    await app.ok(send, "oip", app.service.catalog.server_metadata())


async def server_live(
    app: RestApp, scope: Scope, receive: Receive, send: Send, name: str, version: str | None
) -> None:
    await app.ok(send, "oip", {"live": True})


async def server_ready(
    app: RestApp, scope: Scope, receive: Receive, send: Send, name: str, version: str | None
) -> None:
    ready = app.service.catalog.server_ready()
    await app.ok(send, "oip", {"ready": ready}, 200 if ready else 503)


async def all_statistics(
    app: RestApp, scope: Scope, receive: Receive, send: Send, name: str, version: str | None
) -> None:
    principal = await app.principal(scope)
    await app.ok(send, "oip", await app.service.catalog.statistics(None, None, principal))


async def model_metadata(
    app: RestApp, scope: Scope, receive: Receive, send: Send, name: str, version: str | None
) -> None:
    principal = await app.principal(scope)
    await app.ok(send, "oip", await app.service.catalog.model_metadata(name, version, principal))


async def model_ready(
    app: RestApp, scope: Scope, receive: Receive, send: Send, name: str, version: str | None
) -> None:
    principal = await app.principal(scope)
    ready = await app.service.catalog.model_ready(name, version, principal)
    await app.ok(send, "oip", {"name": name, "ready": ready}, 200 if ready else 503)


async def model_config(
    app: RestApp, scope: Scope, receive: Receive, send: Send, name: str, version: str | None
) -> None:
    principal = await app.principal(scope)
    await app.ok(send, "oip", await app.service.catalog.model_config(name, version, principal))


async def model_statistics(
    app: RestApp, scope: Scope, receive: Receive, send: Send, name: str, version: str | None
) -> None:
    principal = await app.principal(scope)
    await app.ok(send, "oip", await app.service.catalog.statistics(name, version, principal))


async def no_model_action(
    app: RestApp, scope: Scope, receive: Receive, send: Send, name: str, version: str | None
) -> None:
    """``GET /v2/models/{m}/{anything else}``: 404 once the caller is known, so a client
    without a valid credential learns nothing of the routes (and is counted)."""
    await app.principal(scope)
    raise no_route(scope["path"])


async def metrics(
    app: RestApp, scope: Scope, receive: Receive, send: Send, name: str, version: str | None
) -> None:
    if app.metrics_authenticator is not None:
        credential = credential_from(*credential_headers(scope))
        principal = await app.authenticate(scope, app.metrics_authenticator, credential)
        require_scope(principal, Permission.MODELS_READ)
    content_type = [(b"content-type", CONTENT_TYPE_LATEST.encode())]
    await respond(send, 200, app.metrics.exposition(), content_type)
    app.metrics.http_answer("other", 200)
