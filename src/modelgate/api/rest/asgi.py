"""ASGI plumbing of the REST app: the types, reading a bounded body, sending an answer with
the request's id, closing a connection whose body was refused unread, the lifespan protocol,
and what the transport says about the caller."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

from modelgate.api.credentials import PRINCIPAL
from modelgate.api.rest.content_encoding import BodyDecoder, body_decoder
from modelgate.core.access.identity import Principal
from modelgate.errors import ErrorKind, ModelgateError

__all__ = [
    "ARRIVED",
    "CONNECTION",
    "LOG_LINE",
    "MODEL",
    "REFUSED",
    "ASGIApp",
    "ClientGoneError",
    "Connection",
    "Message",
    "Receive",
    "RequestSender",
    "Scope",
    "Send",
    "body_owner",
    "body_too_large",
    "client_host",
    "closing_headers",
    "credential_headers",
    "declares_over",
    "lifespan",
    "read_body",
    "receive_body",
    "respond",
    "unread_body_headers",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: the ASGI scope key of the (model, version) a request named, for its log line and span
MODEL = "modelgate.model"
#: the ASGI scope key set on a request answered from the refusal memo, before its body was read
REFUSED = "modelgate.refused"
#: the ASGI scope key of a 429's log line (core/admission/refusals.py ``line``)
LOG_LINE = "modelgate.log_line"

#: the ASGI scope key of the ``time.monotonic()`` instant a request's first bytes were parsed
#: (set by api/rest/http_protocol.py; absent under another server)
ARRIVED = "modelgate.arrived"
#: the ASGI scope key of the request's :class:`Connection` (as ``ARRIVED``)
CONNECTION = "modelgate.connection"

_CLOSE = ((b"connection", b"close"),)
#: what uvicorn reads of a body before the app asks for it (its flow control's high water)
_READ_AHEAD = 64 * 1024


class Connection(Protocol):
    """A request's connection, as the handlers may ask it."""

    def client_gone(self, look: bool = False) -> bool:
        """Whether the client has disconnected: nothing sent would be read. ``look``: ask
        the socket too (a system call), not only what the loop has seen."""
        ...

    def received_at(self) -> float | None:
        """The ``time.monotonic()`` instant the kernel last received the client's data
        (None: unknown); a system call."""
        ...

    def watch(self, task: asyncio.Task[Any] | None) -> None:
        """Cancel ``task`` if the client goes, until called again with None."""
        ...

    @property
    def abandoned(self) -> bool:
        """Whether a watched task was cancelled because the client went."""
        ...


class ClientGoneError(Exception):
    """The client disconnected before its body was read."""


class RequestSender:
    """The request's ``send``: the answer goes out with the ``x-request-id`` header, and its
    status is noted for the request's log line and span.

    :func:`respond` unwraps it and adds the header itself: a call through a wrapper per
    message costs about 1 µs a request, a context variable as much."""

    __slots__ = ("header", "send", "status")

    def __init__(self, send: Send, request_id: str):
        self.send = send
        self.header = (b"x-request-id", request_id.encode())
        self.status = 499  # nginx's "client closed request": no answer was sent

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            message = {**message, "headers": [*message.get("headers", ()), self.header]}
        await self.send(message)


def client_host(scope: Scope) -> str | None:
    client = scope.get("client")
    return client[0] if client else None


def closing_headers(scope: Scope, exc: ModelgateError) -> tuple[tuple[bytes, bytes], ...]:
    """``Connection: close`` for a refusal that may leave a big body unread (too large, or
    the caller refused before it was read): the rest of it is not worth receiving. A body
    of up to 64 KiB (uvicorn's read-ahead) is mostly in already, and discarding the rest
    keeps the connection (closing with unread data resets it, and a client may then miss
    the answer). Only on the error path, so the headers are looked at again here rather
    than on every request."""
    if exc.kind is not ErrorKind.PAYLOAD_TOO_LARGE and PRINCIPAL in scope and REFUSED not in scope:
        return ()  # an authenticated caller's body was read, or there is none
    return unread_body_headers(scope)


def unread_body_headers(scope: Scope) -> tuple[tuple[bytes, bytes], ...]:
    """``Connection: close`` when the request's body, left unread, may be over 64 KiB."""
    for key, value in scope["headers"]:
        if key == b"transfer-encoding" or (
            key == b"content-length" and (not value.isdigit() or int(value) > _READ_AHEAD)
        ):
            return _CLOSE
    return ()


_CREDENTIAL_HEADERS = frozenset((b"authorization", b"x-api-key"))


def credential_headers(scope: Scope) -> tuple[str | None, str | None]:
    authorization = api_key = None
    for key, value in scope["headers"]:
        if key not in _CREDENTIAL_HEADERS:  # most headers: one set lookup, not two compares
            continue
        if key == b"authorization":
            authorization = value.decode("latin-1")
        else:
            api_key = value.decode("latin-1")
    return authorization, api_key


def declares_over(content_length: bytes, limit: int) -> bool:
    """Whether a ``Content-Length`` value announces a body over ``limit`` bytes."""
    return content_length.isdigit() and int(content_length) > limit


def body_too_large(limit: int) -> ModelgateError:
    return ModelgateError(
        ErrorKind.PAYLOAD_TOO_LARGE, f"the body is over the limit of {limit} bytes"
    )


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The body, refused unread when ``Content-Length`` announces more than ``limit`` bytes,
    and as soon as more than that arrives; inflated when ``Content-Encoding`` says so."""
    encoding = None
    for key, value in scope["headers"]:
        if key == b"content-length" and declares_over(value, limit):
            raise body_too_large(limit)
        if key == b"content-encoding":
            encoding = value
    return await receive_body(receive, limit, encoding, body_owner(scope))


def body_owner(scope: Scope) -> str:
    """Whose body a request's is, for the inflating pool's bound per owner: its tenant once
    authenticated (:data:`~modelgate.api.credentials.PRINCIPAL`), else its address."""
    principal = scope.get(PRINCIPAL)
    if isinstance(principal, Principal):
        return f"tenant:{principal.tenant_id}"
    client = scope.get("client")
    return f"address:{client[0] if client else ''}"


async def receive_body(
    receive: Receive, limit: int, encoding: bytes | None = None, owner: str | None = None
) -> bytes:
    """The body as it arrives, refused once more than ``limit`` bytes came: for a handler
    that checked ``Content-Length`` in its own pass over the headers (:func:`declares_over`).
    ``encoding``: the ``Content-Encoding`` header's value; the body is then inflated as it
    arrives, within ``limit`` both before and after (api/rest/content_encoding.py), with
    ``owner``'s share of the inflating threads (:func:`body_owner`)."""
    if encoding is not None:
        decoder = body_decoder(encoding, limit, owner)
        if decoder is not None:
            return await _receive_decoded(receive, limit, decoder)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGoneError
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise body_too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _receive_decoded(receive: Receive, limit: int, decoder: BodyDecoder) -> bytes:
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGoneError
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:  # the compressed body is held to the limit too
            raise body_too_large(limit)
        decoder.feed(chunk)
        if not message.get("more_body", False):
            return await decoder.finish() if size else b""


async def respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    if isinstance(send, RequestSender):  # what its __call__ would do, without the calls through it
        send.status = status
        headers.append(send.header)
        send = send.send
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
