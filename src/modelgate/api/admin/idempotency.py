"""``Idempotency-Key`` on the admin API's POST, PUT and DELETE routes.

Two halves, because the caller must be known before the route runs and its answer kept
after it:

- :func:`idempotency_dependency`, an app-wide FastAPI dependency that runs before the
  route: for a side-effecting request with a key, it authenticates the caller (a cached
  look-up; the route's own authentication then finds it cached), validates the key and asks
  :class:`~modelgate.core.admission.idempotency.IdempotencyService` what to do (run, replay,
  refuse);
- :class:`IdempotencyMiddleware`, around the app: for a request that runs, it holds the
  answer back until it is kept (2xx) or the key released (anything else), then sends it,
  so a client that saw the answer finds it kept when it retries.

A path naming a data subject (``/admin/subjects/{id}``) is kept with the subject's pseudonym
in place of the id (:meth:`~modelgate.core.admission.idempotency.IdempotencyService.concealed`): the
record outlives the erasure it guards by a day, and must not hold the id it erased.

Status codes follow the IETF draft "The Idempotency-Key HTTP Header Field": a key reused
for another request answers 422, a key whose first request still runs answers 409 (after
waiting up to ``wait_s`` for it), a malformed key 400. A replay carries
``Idempotent-Replayed: true``.
"""

# No `from __future__ import annotations`: FastAPI reads the dependency's signature.

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelgate.core.access.identity import Principal
from modelgate.core.admission.idempotency import Decision, IdempotencyService, owner_of
from modelgate.core.admission.ports import StoredAnswer
from modelgate.errors import ErrorKind, ModelgateError

__all__ = ["IdempotencyMiddleware", "add_idempotency", "idempotency_dependency"]

log = logging.getLogger("modelgate.idempotency")

_SIDE_EFFECTS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_SLOT = "modelgate.idempotency"


class _Slot:
    """What the dependency decided for this request, for the middleware to finish."""

    __slots__ = ("run",)

    def __init__(self) -> None:
        self.run: Decision | None = None


class IdempotentReplayError(Exception):
    """Raised by the dependency to answer without running the route."""

    def __init__(self, response: Response) -> None:
        super().__init__("answered from the idempotency record")
        self.response = response


async def _answer_replay(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, IdempotentReplayError)
    return exc.response


def add_idempotency(app: FastAPI, service: IdempotencyService) -> None:
    """The middleware and the replay handler; the app must have been built with
    ``dependencies=[Depends(idempotency_dependency(...))]``."""
    app.add_exception_handler(IdempotentReplayError, _answer_replay)
    app.add_middleware(IdempotencyMiddleware, service=service)


def idempotency_dependency(
    service: IdempotencyService, principal: Callable[[Request], Awaitable[Principal]]
) -> Callable[[Request], Awaitable[None]]:
    """The dependency. It applies to every route, the docs pages included, so it asks for
    the caller (``principal``) only when it acts: a side-effecting request with a key."""

    async def idempotency(request: Request) -> None:
        slot = request.scope.get(_SLOT)
        value = request.headers.get("idempotency-key")
        if value is None or request.method not in _SIDE_EFFECTS or not isinstance(slot, _Slot):
            return
        caller = await principal(request)
        path = _stored_path(request.scope["path"], service)
        path += f"?{request.url.query}" if request.url.query else ""
        decision = await service.begin(
            owner_of(caller), value, request.method, path, _canonical(await request.body())
        )
        if decision.outcome == "run":
            slot.run = decision
            return
        raise IdempotentReplayError(_refusal(decision, service))

    return idempotency


_SUBJECTS = "/admin/subjects/"


def _stored_path(path: str, service: IdempotencyService) -> str:
    """The path as the record keeps it: a subject's id (the segment after
    ``/admin/subjects/``, as the route reads it) replaced by its pseudonym."""
    if not path.startswith(_SUBJECTS):
        return path
    subject, slash, rest = path[len(_SUBJECTS) :].partition("/")
    if not subject:
        return path
    return _SUBJECTS + service.concealed(subject) + slash + rest


def _canonical(body: bytes) -> bytes:
    """A JSON body with its keys sorted (a client may re-serialize it differently when it
    retries); any other body as sent."""
    if not body.strip():
        return b""
    try:
        return orjson.dumps(orjson.loads(body), option=orjson.OPT_SORT_KEYS)
    except orjson.JSONDecodeError:
        return body


def _refusal(decision: Decision, service: IdempotencyService) -> Response:
    record = decision.record
    if decision.outcome == "replay":
        answer = decision.answer
        assert answer is not None
        return Response(
            answer.body,
            status_code=answer.status,
            media_type=answer.content_type,
            headers={"idempotent-replayed": "true"},
        )
    if decision.outcome == "withheld":
        answer = decision.answer
        assert answer is not None
        return JSONResponse(
            {
                "error": "the request with this Idempotency-Key was completed, and its answer "
                "held a secret that is shown once only: it cannot be shown again. "
                "Revoke that key and create another (a new Idempotency-Key)",
                "completed": orjson.loads(answer.body) if answer.body else None,
            },
            status_code=409,
            headers={"idempotent-replayed": "true"},
        )
    if decision.outcome == "mismatch":
        return JSONResponse(
            {
                "error": "this Idempotency-Key was used for another request (method, path or "
                f"body differ; it was {record.method} {record.path}): use a new key"
            },
            status_code=422,
        )
    wait = service.wait_s
    return JSONResponse(
        {
            "error": f"a request with this Idempotency-Key is still running (waited {wait:g} s); "
            "retry later with the same key"
        },
        status_code=409,
        headers={"retry-after": "1"},
    )


class IdempotencyMiddleware:
    """Keeps the answer of each request that ran under a new key before it is sent."""

    def __init__(self, app: ASGIApp, service: IdempotencyService) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _SIDE_EFFECTS:
            await self.app(scope, receive, send)
            return
        slot = _Slot()
        scope[_SLOT] = slot
        held: list[Message] = []
        status = 0

        async def hold(message: Message) -> None:
            nonlocal status
            if slot.run is None:
                await send(message)
                return
            if message["type"] == "http.response.start":
                status = int(message["status"])
            held.append(message)

        try:
            await self.app(scope, receive, hold)
        except BaseException:
            if slot.run is not None:
                await self._release(slot.run)
            raise
        if slot.run is None:
            return
        await self._finish(slot.run, status, held)
        for message in held:
            await send(message)

    async def _finish(self, run: Decision, status: int, held: list[Message]) -> None:
        if not 200 <= status < 300:  # nothing was done: the key is free for a fixed request
            await self._release(run)
            return
        start = held[0] if held else {}
        body = b"".join(m.get("body", b"") for m in held if m["type"] == "http.response.body")
        content_type = "application/json"
        for name, value in start.get("headers", []):
            if name.lower() == b"content-type":
                content_type = value.decode("latin-1")
        try:
            await self.service.complete(
                run,
                StoredAnswer(status, body, content_type),
                without_secret=_without_secret(body),
            )
        except ModelgateError as exc:
            # The side effect happened: answer it. A retry waits for the record, then after
            # the stale time (60 s) runs again; the log says so.
            log.warning(
                "the answer to %s %s (Idempotency-Key %r) was not kept: %s",
                run.record.method,
                run.record.path,
                run.record.key,
                exc.message,
            )

    async def _release(self, run: Decision) -> None:
        try:
            await self.service.release(run)
        except ModelgateError as exc:
            if exc.kind is not ErrorKind.UNAVAILABLE:
                raise
            log.warning("Idempotency-Key %r not released: %s", run.record.key, exc.message)


def _without_secret(body: bytes) -> bytes | None:
    """The body less its ``secret`` (a new API key) when it has one; None otherwise."""
    try:
        document: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(document, dict) or "secret" not in document:
        return None
    document.pop("secret")
    return orjson.dumps(document)
