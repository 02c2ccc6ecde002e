"""Refusals the HTTP protocol answers itself, from the refusal memo, before the app runs
(issue 15).

A caller that keeps sending requests after it was refused for a rate limit or a quota is
refused again from the refusal memo (core/admission/refusals.py). In the app that answer
still took the request's whole HTTP life: uvicorn's request-response cycle and task, the
app's dispatch, authentication, the ASGI messages, the log line's bookkeeping, about 100 µs
of CPU end to end against 230 µs for a served inference. Here the protocol answers it as
soon as the request's headers are parsed, in the same callback, from bytes prebuilt per
noted refusal (:func:`~modelgate.api.rest.errors.refusal_bytes`: the app's answer byte for
byte, its ``Retry-After``, ``X-RateLimit-Reset`` and ``X-Request-Id`` excepted), and
httptools skips its body.

A request is refused here only when the app would refuse it with the same answer whoever
sent it at this moment:

- ``POST /v2/models/{m}[/versions/{v}]/infer`` over HTTP/1.1 keep-alive (the app answers a
  ``GET`` only for models that cache, and ``/v1/embeddings`` names its model in its body,
  which the app validates before admission: those refusals depend on the body and stay
  the app's);
- its credential (``Authorization``, ``X-Api-Key``) and ``X-Forwarded-For`` are those of
  the connection's previous request that the app authenticated, whose caller is taken as
  this one's (a key revoked since is refused 429 rather than 401 for at most the memo's
  1 s, never served);
- the headers the app reads before the memo are valid (``Content-Type``,
  ``Inference-Header-Content-Length``, ``X-Request-Timeout-Ms``) and the request has not
  waited long enough to be shed (with shedding on);
- the abuse guard knows, without its store, that the key and the address are not blocked
  (else: one known blocked is answered its 429 here too; one not known goes to the app);
- the memo has the caller refused for this model
  (:meth:`~modelgate.core.admission.refusals.RefusalMemo.find`);
- back-pressure would not hold this refusal
  (:meth:`~modelgate.core.admission.backpressure.RefusalBackpressure.counts_unheld`): a
  refusal to be held is the app's, which holds it (one per hold, so few).

What a refusal here counts is what the app's counts: ``modelgate_http_requests_total
{api="oip",status="429"}`` (an integer added to), the memo's refusal metric and usage
record; its request-log line is the memo's, at most one per key a second, with the number
not written since (:meth:`~modelgate.core.admission.refusals.RefusalMemo.line`), and no
span is made. A blocked key's or address's refusals write no line each, but one warning
per ``SUMMARY_EVERY_S`` with their number.

A read that repeats the last one byte for byte, when that was one whole request refused
here (a client resending one request as fast as it is refused: the common flood), is not
parsed again: :meth:`EarlyRefusals.again` asks only what may have changed since (the memo,
the abuse guard, back-pressure, the wait) of what :meth:`EarlyRefusals.answer` read then
(:class:`RefusedRequest`), and the protocol writes its answer (api/rest/http_protocol.py).

Cost (docs/access-control.md, "Refused before the app runs"): 4.8 µs of CPU a repeated
refusal in the protocol (9 µs one that is parsed), 13-17 µs end to end with the kernel's read
and write against 8 µs for a server that answers canned bytes and 195-201 µs for a served
inference; a served request pays one emptiness test while nobody is refused
(:meth:`EarlyRefusals.refusing`), and about 2 µs while someone is.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Mapping
from typing import cast

import orjson

from modelgate.api.credentials import PRINCIPAL
from modelgate.api.rest.errors import refusal_bytes
from modelgate.api.rest.media_type import check_content_type
from modelgate.api.rest.routes import match
from modelgate.core.access.identity import Principal
from modelgate.core.admission.abuse import AbuseGuard
from modelgate.core.admission.backpressure import RefusalBackpressure
from modelgate.core.admission.overload import QueueDelay
from modelgate.core.admission.refusals import Refusal, RefusalMemo
from modelgate.errors import ModelgateError
from modelgate.observability.logs import RequestLog, request_id_from
from modelgate.observability.tallies import Tally
from modelgate.observability.tracing import trace_id_of

__all__ = ["SUMMARY_EVERY_S", "EarlyRefusals", "RefusedRequest", "identity_of", "infer_target"]

log = logging.getLogger("modelgate.http")

#: the blocked callers' aggregated warning: at most one per this many seconds (per process)
SUMMARY_EVERY_S = 10.0

#: the headers that say who sends a request: equal to the previous request's, the caller
#: the app found then is this one's
_IDENTITY = frozenset((b"authorization", b"x-api-key", b"x-forwarded-for", b"forwarded"))
#: the scope key under which a scope's :func:`identity_of` is kept once worked out
_IDENTITY_KEY = "modelgate.identity"
#: a body left unread is skipped on a kept connection up to this size (uvicorn's read-ahead,
#: which the app's answer assumes too: api/rest/asgi.py ``unread_body_headers``)
_SKIP_BODY_BYTES = 64 * 1024


def identity_of(headers: list[tuple[bytes, bytes]]) -> tuple[tuple[bytes, bytes], ...]:
    """The headers of a request that say who sends it, in order."""
    return tuple((n, v) for n, v in headers if n in _IDENTITY)


@functools.lru_cache(maxsize=1024)
def infer_target(path: bytes) -> tuple[str, str | None] | None:
    """The (model, version) an inference path names, as the app routes it; None for any
    other path, or one the app would decode first (``%``) or not at all (not ASCII)."""
    if not path.startswith(b"/v2/models/") or b"%" in path or not path.isascii():
        return None
    try:
        template, name, version = match("oip", path.decode("ascii"))
    except ModelgateError:
        return None
    return (name, version) if template == "/v2/models/{model}/infer" else None


class EarlyRefusals:
    """What the HTTP protocol asks to refuse a known caller itself; one per process,
    shared by its connections (built in server.py from the app's own parts)."""

    def __init__(
        self,
        memo: RefusalMemo,
        *,
        answers: Tally | None = None,
        backpressure: RefusalBackpressure | None = None,
        abuse: AbuseGuard | None = None,
        overload: QueueDelay | None = None,
        requests: RequestLog | None = None,
    ) -> None:
        self.memo = memo
        #: the count of the app's OIP 429s, added to per refusal here (None: not counted)
        self.answers = answers
        self.backpressure = backpressure
        self.abuse = abuse
        self.overload = overload
        self.requests = requests
        # the memo's entries and the abuse guard's blocks, for :meth:`refusing` (one test)
        self._noted = memo.noted
        self._blocks: Mapping[str, float] = abuse.blocked if abuse is not None else {}
        #: refusals of blocked keys and addresses since the last warning, and when that was
        self.blocked_unlogged = 0
        self._blocked_logged_at = -math.inf

    def refusing(self) -> bool:
        """Whether anyone may be refused here now: a caller noted in the memo, or a key or
        address blocked. While not, a served request's cost here is this call."""
        return bool(self._noted) or bool(self._blocks)

    def answer(
        self,
        path: bytes,
        headers: list[tuple[bytes, bytes]],
        previous: Mapping[str, object],
        arrived: float | None,
    ) -> tuple[bytes, bool, RefusedRequest] | None:
        """The whole answer to write for a ``POST`` whose headers are in, whether the
        connection is then closed (its body, left unread, may be large), and what of the
        request decided it (for :meth:`again`); None: the app answers it. Asked only while
        :meth:`refusing`. ``previous``: the scope of the connection's last request the app
        authenticated; ``arrived``: ``time.monotonic()`` when its first bytes were read."""
        caller = previous.get(PRINCIPAL)
        if not isinstance(caller, Principal):
            return None
        target = infer_target(path)
        if target is None:
            return None
        name, version = target
        found = self.memo.find(caller, name, version)
        if found is None and not self._blocks:  # 1-3 µs of a served request while others
            return None  # are refused
        request = _read(caller, path, name, version, headers, previous)
        if request is None:
            return None
        answer = self._refuse(request, found, arrived)
        return None if answer is None else (answer, request.close, request)

    def again(self, request: RefusedRequest, arrived: float) -> bytes | None:
        """The answer to a request byte for byte the same as ``request``'s (what
        :meth:`answer` returned with its answer), on the same connection with the same
        previous request, its headers parsed into the same values: only what may have
        changed since is asked again (the memo, the abuse guard, back-pressure, the wait);
        None: the app answers it. Asked only while :meth:`refusing`."""
        found = self.memo.find(request.caller, request.name, request.version)
        if found is None and not self._blocks:
            return None
        return self._refuse(request, found, arrived)

    def _refuse(
        self, request: RefusedRequest, found: Refusal | None, arrived: float | None
    ) -> bytes | None:
        """What :meth:`answer` and :meth:`again` write, from what may change by the moment:
        the wait, the abuse guard, the memo's refusal, back-pressure; None: the app's."""
        memo, abuse = self.memo, self.abuse
        overload = self.overload
        if overload is not None and arrived is not None:
            waited = overload.sojourn(arrived)  # fed to the controller, as the app does
            bound = overload.max_wait_s
            timeout = request.timeout
            if (bound is not None and waited >= bound) or (
                timeout is not None and waited >= timeout
            ):
                return None  # the app may shed it (503)
        caller, client = request.caller, request.client
        if abuse is not None:
            known = abuse.known(caller, client[0] if client else None)
            if known is False:
                return None  # the store is due to be asked: the app does
            if known is not True:
                return self._blocked(known, client, request.sent_id, request.close)
        if found is None:
            return None
        backpressure = self.backpressure
        if (
            backpressure is not None
            and client is not None
            and not backpressure.counts_unheld(client, found.retry_after_s())
        ):
            return None  # to be held: the app holds it
        name, version = request.name, request.version
        memo.count(found, caller, name, version)
        if self.answers is not None:
            self.answers.total += 1
        request_id = request_id_from(request.sent_id)
        line = memo.line(caller)
        if line is not None and line >= 0 and self.requests is not None:
            took = 0 if arrived is None else int((time.monotonic() - arrived) * 1e9)
            self.requests.write(
                "rest",
                "POST",
                request.path.decode("ascii"),
                request_id,
                trace_id_of(request.traceparent),
                caller.tenant_id,
                name,
                version,
                429,
                took,
                line,
            )
        return refusal_bytes(found, request_id.encode(), close=request.close)

    def _blocked(
        self,
        error: ModelgateError,
        client: tuple[str, int] | None,
        sent_id: bytes | None,
        close: bool,
    ) -> bytes | None:
        """The app's 429 for a key or address the abuse guard has blocked (its
        authentication's), unless back-pressure would hold it."""
        retry_after = error.retry_after or 0.0
        backpressure = self.backpressure
        if (
            backpressure is not None
            and client is not None
            and not backpressure.counts_unheld(client, retry_after)
        ):
            return None
        if self.answers is not None:
            self.answers.total += 1
        self._log_blocked()
        body = orjson.dumps({"error": error.message})
        lines = [
            b"HTTP/1.1 429 Too Many Requests",
            b"content-type: application/json",
            b"retry-after: %d" % max(1, math.ceil(retry_after)),
        ]
        if close:
            lines.append(b"connection: close")
        lines += [
            b"content-length: %d" % len(body),
            b"x-request-id: " + request_id_from(sent_id).encode(),
            b"",
            body,
        ]
        return b"\r\n".join(lines[:-1]) + b"\r\n" + body

    def _log_blocked(self) -> None:
        self.blocked_unlogged += 1
        now = time.monotonic()
        if now - self._blocked_logged_at >= SUMMARY_EVERY_S:
            log.warning(
                "%d requests of blocked keys or addresses refused 429 before they were "
                "read, since the last warning",
                self.blocked_unlogged,
            )
            self._blocked_logged_at, self.blocked_unlogged = now, 0


class RefusedRequest:
    """What of a request refused here decided its answer, read once from its path and
    headers: its caller (the previous request's), model, version, client, and the headers
    its answer and log line use; a byte-identical request on the same connection reads
    the same (:meth:`EarlyRefusals.again`)."""

    __slots__ = (
        "caller",
        "client",
        "close",
        "name",
        "path",
        "sent_id",
        "timeout",
        "traceparent",
        "version",
    )

    def __init__(
        self,
        caller: Principal,
        path: bytes,
        name: str,
        version: str | None,
        client: tuple[str, int] | None,
        *,
        sent_id: bytes | None,
        traceparent: bytes | None,
        timeout: float | None,
        close: bool,
    ) -> None:
        self.caller, self.path, self.name, self.version = caller, path, name, version
        self.client = client
        self.sent_id, self.traceparent, self.timeout, self.close = (
            sent_id,
            traceparent,
            timeout,
            close,
        )


def _read(
    caller: Principal,
    path: bytes,
    name: str,
    version: str | None,
    headers: list[tuple[bytes, bytes]],
    previous: Mapping[str, object],
) -> RefusedRequest | None:
    """The request's headers read as the app's handler reads them, in one pass; None: the
    app would answer it otherwise (a 400), or another caller sent it."""
    sent_id = traceparent = timeout = None
    close = False
    identity = []
    for key, value in headers:
        if key in _IDENTITY:
            identity.append((key, value))
        elif key == b"content-type":
            try:
                check_content_type(value)
            except ModelgateError:
                return None
        elif key == b"content-length":
            close = close or not value.isdigit() or int(value) > _SKIP_BODY_BYTES
        elif key == b"transfer-encoding":
            close = True
        elif key == b"x-request-id":
            sent_id = value
        elif key == b"traceparent":
            traceparent = value
        elif key == b"x-request-timeout-ms":
            if not value.isdigit() or len(value) > 9:
                return None  # the app's 400
            timeout = int(value) / 1000
        elif key == b"inference-header-content-length" and not _is_int(value):
            return None  # the app's 400
    then = previous.get(_IDENTITY_KEY)
    if then is None:  # worked out once per scope the app authenticated, kept in it
        headers_then = cast("list[tuple[bytes, bytes]]", previous["headers"])
        then = cast("dict[str, object]", previous)[_IDENTITY_KEY] = identity_of(headers_then)
    if tuple(identity) != then:
        return None
    client = cast("tuple[str, int] | None", previous.get("client"))
    return RefusedRequest(
        caller,
        path,
        name,
        version,
        client,
        sent_id=sent_id,
        traceparent=traceparent,
        timeout=timeout,
        close=close,
    )


def _is_int(value: bytes) -> bool:
    try:
        int(value)
    except ValueError:
        return False
    return True
