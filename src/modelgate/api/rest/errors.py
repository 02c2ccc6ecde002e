"""Error kinds -> HTTP status for the OIP routes (Triton's mapping, with 413 and Retry-After),
the two errors of the REST transport itself: no route (404) and no such method (405), and
the 429 of a caller found in the refusal memo (sent by the app, or written whole by the HTTP
protocol: :func:`refusal_bytes`), and holding a 429 while its connection keeps being
refused."""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping
from typing import Any

import orjson

from modelgate.api.rest.asgi import Send, respond, unread_body_headers
from modelgate.core.admission.backpressure import RefusalBackpressure
from modelgate.core.admission.refusals import Refusal
from modelgate.errors import ErrorKind, ModelgateError

__all__ = [
    "MethodNotAllowedError",
    "hold_refusal",
    "http_status",
    "no_route",
    "rate_limit_headers",
    "refusal_bytes",
    "retry_after_header",
    "send_refusal",
]

_STATUS = {
    ErrorKind.INVALID_ARGUMENT: 400,
    ErrorKind.UNAUTHENTICATED: 401,
    ErrorKind.PERMISSION_DENIED: 403,
    ErrorKind.RATE_LIMITED: 429,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.PAYLOAD_TOO_LARGE: 413,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.OVERLOADED: 503,
    ErrorKind.DEADLINE_EXCEEDED: 504,
    ErrorKind.UNSUPPORTED: 501,
    ErrorKind.FAILED_PRECONDITION: 409,
    ErrorKind.INTERNAL: 500,
}


def http_status(exc: ModelgateError) -> int:
    """The kind's status, or the one the REST adapter itself set (415, api/rest/
    content_encoding.py)."""
    status: int = exc.details.get("http_status") or _STATUS[exc.kind]
    return status


def retry_after_header(exc: ModelgateError) -> list[tuple[bytes, bytes]]:
    if exc.retry_after is None:
        return []
    return [(b"retry-after", str(max(1, math.ceil(exc.retry_after))).encode())]


def rate_limit_headers(details: Mapping[str, Any]) -> list[tuple[bytes, bytes]]:
    """``X-RateLimit-Limit`` / ``-Remaining`` / ``-Reset`` (seconds until the bucket is full)."""
    if "limit" not in details:
        return []
    return [  # b"%d" writes int(x) for an int or a float, as str(int(x)).encode() did
        (b"x-ratelimit-limit", b"%d" % details["limit"]),
        (b"x-ratelimit-remaining", b"%d" % details["remaining"]),
        (b"x-ratelimit-reset", b"%d" % math.ceil(details["reset"])),
    ]


class MethodNotAllowedError(Exception):
    """A transport concern, so it never reaches the core's error kinds: answered 405."""

    def __init__(self, method: str, allowed: str):
        super().__init__(f"method {method} is not allowed here; use {allowed}")
        self.allowed = allowed


def no_route(path: str | None = None) -> ModelgateError:
    """The 404 of a path that names no route (not a missing model: OpenAI's routes answer
    it without ``model_not_found``)."""
    message = "no such route" if path is None else f"no route {path}"
    return ModelgateError(ErrorKind.NOT_FOUND, message, details={"resource": "route"})


async def send_refusal(
    send: Send, scope: MutableMapping[str, Any], refusal: Refusal, *, close: bool = False
) -> None:
    """The OIP 429 of a caller found in the refusal memo: what the full path's error path
    sends for the same error, header for header (``tests/api/test_refusal_memo.py``), from
    the body and headers precomputed at its first refusal, with ``Retry-After`` and
    ``X-RateLimit-Reset`` counted down; ``Connection: close`` when a large body is left
    unread, or when ``close`` (back-pressure could hold no more)."""
    answer = refusal.answer
    if not isinstance(answer, _RefusalAnswer):
        answer = refusal.answer = _RefusalAnswer(refusal.error)
    retry = max(1, math.ceil(refusal.retry_after_s()))
    headers = [_JSON_TYPE, (b"retry-after", b"%d" % retry), *answer.limits]
    if answer.limits:
        headers.append((b"x-ratelimit-reset", b"%d" % math.ceil(refusal.reset_s())))
    closing = unread_body_headers(scope)
    headers.extend(closing)
    if close and not closing:
        headers.append(_CLOSE)
    await respond(send, 429, answer.body, headers)


def refusal_bytes(refusal: Refusal, request_id: bytes, *, close: bool = False) -> bytes:
    """:func:`send_refusal`'s answer as uvicorn writes it (an HTTP/1.1 keep-alive request,
    ``x-request-id`` last, as the app's sender adds it), for the HTTP protocol to write
    itself (api/rest/early_refusals.py); ``close``: the body is left unread and may be
    large (``Connection: close``). ``request_id``: sane (``request_id_from``). One
    formatting of bytes built once per noted refusal."""
    answer = refusal.answer
    if not isinstance(answer, _RefusalAnswer):
        answer = refusal.answer = _RefusalAnswer(refusal.error)
    head = answer.closing_head if close else answer.head
    retry = max(1, math.ceil(refusal.retry_after_s()))
    if answer.limits:
        head %= (retry, math.ceil(refusal.reset_s()), request_id)
    else:
        head %= (retry, request_id)
    return head + answer.body


async def hold_refusal(
    backpressure: RefusalBackpressure, scope: MutableMapping[str, Any], retry_after_s: float
) -> float | None:
    """Hold a refusal (429) while its connection keeps being refused (core/admission/
    backpressure.py): the seconds held (0.0: not held), or None: answer with ``Connection:
    close`` (no hold was free, or a shutdown released it). HTTP/1.1 answers a connection's
    requests in order, so while this waits the connection's next request waits too (uvicorn
    stops reading a pipelined one). A connection is the client's address and port (behind
    a trusted proxy: the address it names, port 0)."""
    connection = scope.get("client")
    if connection is None:  # a Unix socket: connections cannot be told apart
        return 0.0
    hold = backpressure.refused(connection, retry_after_s)
    if hold:
        await backpressure.hold(hold)
        if backpressure.released:  # a shutdown: the server is going away
            return None
    return hold


_JSON_TYPE = (b"content-type", b"application/json")
_CLOSE = (b"connection", b"close")


class _RefusalAnswer:
    """The parts of a refusal's answer that do not change while it is noted, and for the
    HTTP protocol its head with ``%d`` for ``Retry-After`` (and ``X-RateLimit-Reset``)
    and ``%s`` for the request id (:func:`refusal_bytes`)."""

    __slots__ = ("body", "closing_head", "head", "limits")

    def __init__(self, error: ModelgateError):
        self.body = orjson.dumps({"error": error.message})
        #: X-RateLimit-Limit and -Remaining (a refused bucket has none left until it admits)
        self.limits = rate_limit_headers(error.details)[:2]
        lines = [_STATUS_LINE_429, b"content-type: application/json", b"retry-after: %d"]
        lines += [name + b": " + value.replace(b"%", b"%%") for name, value in self.limits]
        if self.limits:
            lines.append(b"x-ratelimit-reset: %d")
        tail = [b"content-length: %d" % len(self.body), b"x-request-id: %s", b"", b""]
        self.head = b"\r\n".join([*lines, *tail])
        self.closing_head = b"\r\n".join([*lines, b"connection: close", *tail])


#: uvicorn's status line of a 429 (``STATUS_LINE``: the phrase of ``http.HTTPStatus``)
_STATUS_LINE_429 = b"HTTP/1.1 429 Too Many Requests"
