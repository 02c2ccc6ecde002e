"""The ``/v1`` routes: OpenAI's model list and embeddings (api/openai/embeddings.py holds the
OpenAI shapes), and modelgate's own feedback and asynchronous jobs (api/rest/jobs.py). Each
answers ``200`` with the JSON body its handler returns; errors take OpenAI's shape
(api/rest/app.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from modelgate.api.rest.asgi import Receive, Scope, Send, read_body, respond
from modelgate.api.rest.errors import MethodNotAllowedError
from modelgate.api.rest.feedback import submit_feedback
from modelgate.api.rest.media_type import check_content_type
from modelgate.core.gateway.regions import valid_region

if TYPE_CHECKING:
    from modelgate.api.rest.app import RestApp

__all__ = ["embeddings", "feedback", "jobs", "model", "models"]

_JSON = [(b"content-type", b"application/json")]


async def models(
    app: RestApp, scope: Scope, receive: Receive, send: Send, name: str, version: str | None
) -> None:
    await _ok(app, send, await app.openai.models(await app.principal(scope)))


async def model(
    app: RestApp, scope: Scope, receive: Receive, send: Send, name: str, version: str | None
) -> None:
    await _ok(app, send, await app.openai.model(name, await app.principal(scope)))


async def embeddings(
    app: RestApp, scope: Scope, receive: Receive, send: Send, name: str, version: str | None
) -> None:
    principal = await app.principal(scope)
    overload = app.overload
    if overload is not None and overload.shedding and overload.refuses(principal):
        raise overload.error()  # the queue is too long: at once, before the body is read
    _check_content_type(scope)
    data = await read_body(scope, receive, app.limits.max_body_bytes)
    payload, region = await app.openai.embedding_answer(data, principal)
    if region is None or not valid_region(region):  # only a region the gateway validated
        await _ok(app, send, payload)
        return
    # which region's node answered (a gateway with regions; docs/scale-out.md)
    await respond(send, 200, payload, [*_JSON, (b"x-modelgate-region", region.encode())])
    app.metrics.http_answer("openai", 200)


async def feedback(
    app: RestApp, scope: Scope, receive: Receive, send: Send, name: str, version: str | None
) -> None:
    assert app.feedback is not None  # the route is in the table only when it is served
    principal = await app.principal(scope)
    _check_content_type(scope)
    data = await read_body(scope, receive, app.limits.max_body_bytes)
    await _ok(app, send, await submit_feedback(app.feedback, data, principal))


async def jobs(
    app: RestApp, scope: Scope, receive: Receive, send: Send, name: str, version: str | None
) -> None:
    """``/v1/jobs/{name}``: ``name`` is the rest of the path, which api/rest/jobs.py routes
    (its 404 comes before a 405, and both before authentication)."""
    assert app.jobs is not None  # the route is in the table only when it is served
    handlers = app.jobs.route(name.split("/"))
    method = scope["method"]
    handler = handlers.get(method)
    if handler is None:
        raise MethodNotAllowedError(method, ", ".join(handlers))
    await _ok(app, send, await handler(scope, receive, await app.principal(scope)))


def _check_content_type(scope: Scope) -> None:
    for key, value in scope["headers"]:
        if key == b"content-type":
            check_content_type(value)


async def _ok(app: RestApp, send: Send, body: bytes) -> None:
    await respond(send, 200, body, _JSON)
    app.metrics.http_answer("openai", 200)
