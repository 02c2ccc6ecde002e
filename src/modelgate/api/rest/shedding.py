"""The cheap answers of an inference request that waited too long or whose client is gone,
asked before its body is read (issue 15).

A shed request is answered 503 with ``Retry-After`` from bytes built once per
``Retry-After`` value: under overload most answers are these, so they take no error
object, no JSON encoding and no failure accounting (a shed is the server's state, not the
caller's fault). A request whose client disconnected while it waited gets no answer and
no work at all, only a count (``modelgate_abandoned_requests_total``): under overload
these are the requests whose clients timed out, and serving them is what kept a saturated
server busy long after the load stopped.
"""

from __future__ import annotations

import asyncio
import functools

import orjson

from modelgate.api.rest.asgi import (
    ClientGoneError,
    Connection,
    Scope,
    Send,
    respond,
    unread_body_headers,
)
from modelgate.api.rest.errors import retry_after_header
from modelgate.core.admission.overload import QueueDelay
from modelgate.observability.metrics import PrometheusMetrics

__all__ = ["abandon", "drop_if_gone", "send_shed", "shed_answer"]


def drop_if_gone(
    connection: Connection | None, metrics: PrometheusMetrics, api: str, look: bool = False
) -> None:
    """Raise :class:`ClientGoneError` (the app then answers nothing) if the request's client
    has disconnected; counted. A call when it has not, and a system call with ``look``
    (:meth:`Connection.client_gone`). ``connection``: the scope's (None under a server
    other than ours: nothing is known)."""
    if connection is not None and connection.client_gone(look):
        metrics.abandoned(api)
        raise ClientGoneError


def abandon(connection: Connection, metrics: PrometheusMetrics, api: str) -> ClientGoneError | None:
    """For a handler cancelled while it waited for its model: the error to raise instead,
    if the cancellation came from its client going (:meth:`Connection.watch`; counted),
    else None (a real cancellation, to propagate)."""
    task = asyncio.current_task()
    if not connection.abandoned or task is None:
        return None
    task.uncancel()
    metrics.abandoned(api)
    return ClientGoneError()


@functools.cache
def _answer(retry_after_s: float) -> tuple[bytes, tuple[tuple[bytes, bytes], ...]]:
    error = QueueDelay.error_for(retry_after_s)
    headers = ((b"content-type", b"application/json"), *retry_after_header(error))
    return orjson.dumps({"error": error.message}), headers


async def send_shed(send: Send, scope: Scope, overload: QueueDelay) -> None:
    """Answer a shed request: 503 with ``Retry-After``, closing the connection when an
    unread body may be large."""
    body, headers = _answer(overload.retry_after_s)
    await respond(send, 503, body, [*headers, *unread_body_headers(scope)])


@functools.cache
def shed_answer(retry_after_s: float, *, close: bool = False) -> bytes:
    """:func:`send_shed`'s answer as the whole HTTP/1.1 response, for the protocol to write
    before the app runs (api/rest/http_protocol.py); ``close``: with ``Connection: close``."""
    body, headers = _answer(retry_after_s)
    lines = [b"HTTP/1.1 503 Service Unavailable"]
    lines += [name + b": " + value for name, value in headers]
    lines.append(b"content-length: " + str(len(body)).encode())
    if close:
        lines.append(b"connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
