"""OIP v2 repository control: ``POST /v2/repository/index`` and
``POST /v2/repository/models/{m}/load | unload``. Every route under ``/v2/repository``
authenticates, then reads its body within ``admin_max_body_bytes``, before it says 404."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from modelgate.api.load_request import load_config
from modelgate.api.rest.asgi import Receive, Scope, Send, client_host, read_body
from modelgate.api.rest.errors import no_route
from modelgate.core.access.identity import Principal
from modelgate.errors import invalid

if TYPE_CHECKING:
    from modelgate.api.rest.app import RestApp

__all__ = ["load_model", "no_repository_route", "repository_index", "unload_model"]


async def repository_index(
    app: RestApp, scope: Scope, receive: Receive, send: Send, name: str, version: str | None
) -> None:
    principal, doc = await _request(app, scope, receive)
    await app.ok(
        send, "oip", await app.service.catalog.repository_index(bool(doc.get("ready")), principal)
    )


async def load_model(
    app: RestApp, scope: Scope, receive: Receive, send: Send, name: str, version: str | None
) -> None:
    principal, doc = await _request(app, scope, receive)
    await app.service.catalog.load(name, _load_config(doc), principal, client_host(scope))
    await app.ok(send, "oip", {})


async def unload_model(
    app: RestApp, scope: Scope, receive: Receive, send: Send, name: str, version: str | None
) -> None:
    principal, _ = await _request(app, scope, receive)
    await app.service.catalog.unload(name, principal, client_host(scope))
    await app.ok(send, "oip", {})


async def no_repository_route(
    app: RestApp, scope: Scope, receive: Receive, send: Send, name: str, version: str | None
) -> None:
    await _request(app, scope, receive)
    raise no_route(scope["path"])


async def _request(
    app: RestApp, scope: Scope, receive: Receive
) -> tuple[Principal | None, dict[str, Any]]:
    """The caller, then the body's JSON object (an empty body is an empty object)."""
    principal = await app.principal(scope)
    body = await read_body(scope, receive, app.limits.admin_max_body_bytes)
    return principal, _json_object(body) if body.strip() else {}


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise invalid(f"malformed JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise invalid("the request body must be a JSON object")
    return doc


def _load_config(doc: dict[str, Any]) -> dict[str, Any] | None:
    """``parameters.config`` (api/load_request.py)."""
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise invalid("'parameters' must be an object")
    return load_config(params)
