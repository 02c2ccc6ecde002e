"""``JsonBodyRoute``: the admin API reads a JSON body whatever its ``Content-Type`` says, as
the inference routes do (api/rest/media_type.py).

FastAPI decodes a body as JSON only when its type is ``application/json`` or ``*/*+json``;
any other type hands the model the raw bytes, and the answer is a 422 that says the body is
not an object. ``curl -d '{...}'`` sends ``application/x-www-form-urlencoded``, and scripts
send ``text/plain`` or nothing, so this route class decides by the body instead: a body
under another type that parses as JSON is handed on as ``application/json``; one that does
not parse is 415, saying what to send. ``multipart/*`` (``curl -F``, an HTML upload) is 415
at once: its parts are never unpacked. The OpenAPI document still names
``application/json`` only: the other types are a courtesy to hand-written requests, not a
second contract.

FastAPI refuses to read JSON under other types (``strict_content_type``) against
cross-site request forgery: a browser sends a form or ``text/plain`` across origins without
asking first, with the site's cookies. That does not reach this API: its credential is
always an ``Authorization`` or ``x-api-key`` header, which no page of another origin can set
without the CORS preflight modelgate never answers, and never a cookie or a client
certificate.
"""

# No `from __future__ import annotations`: FastAPI reads route signatures at run time.

import json
from collections.abc import Callable, Coroutine
from email.message import Message
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from modelgate.errors import ErrorKind, ModelgateError

__all__ = ["JsonBodyRoute"]

_JSON_TYPE = (b"content-type", b"application/json")


class JsonBodyRoute(APIRoute):
    """An :class:`APIRoute` whose body, when it has one, is JSON under any declared type but
    ``multipart/*``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:  # no body to read: nothing to do
            return handler

        async def route(request: Request) -> Response:
            declared = request.headers.get("content-type")
            if declared is not None and _is_json(declared):
                return await handler(request)
            if declared is not None and declared.lstrip().lower().startswith("multipart/"):
                raise _unsupported(declared, ", whose parts are not unpacked")
            body = await request.body()
            if body:
                try:  # as FastAPI will parse it (Request.json), so both agree
                    json.loads(body)
                except ValueError:  # JSONDecodeError, or bytes that are not UTF-8/16/32
                    raise _unsupported(declared, " and is not JSON") from None
                except RecursionError:  # JSON nested past the parser's depth
                    raise _too_deep() from None
            scope = dict(request.scope)
            scope["headers"] = [
                *(item for item in request.scope["headers"] if item[0] != b"content-type"),
                _JSON_TYPE,
            ]
            relabelled = Request(scope, request.receive)
            relabelled._body = body  # read already: handed on, not read again
            return await handler(relabelled)

        return route


def _is_json(declared: str) -> bool:
    """What FastAPI itself decodes as JSON: ``application/json`` and ``application/*+json``."""
    message = Message()
    message["content-type"] = declared
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def _too_deep() -> ModelgateError:
    """What FastAPI answers the same body under ``application/json`` (a 400), in the admin
    API's shape."""
    return ModelgateError(
        ErrorKind.INVALID_ARGUMENT, "the JSON body is nested too deeply to be read"
    )


def _unsupported(declared: str | None, why: str) -> ModelgateError:
    sent = "without a type" if declared is None else f"as '{declared[:100]}'"
    return ModelgateError(
        ErrorKind.UNSUPPORTED,
        f"the admin API reads JSON bodies; this one is sent {sent}{why}: "
        "send the JSON itself (curl -d or --data-binary, with or without "
        "-H 'Content-Type: application/json')",
        details={"http_status": 415},
    )
