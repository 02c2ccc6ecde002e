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

Cost (docs/access-control.md, "Refused before the app runs"): 8-11 µs of CPU a refusal here,
median 39 µs end to end with the kernel's read and write (74 µs when the app answered it);
a served request pays one emptiness test while nobody is refused (:meth:`EarlyRefusals.
refusing`), and about 2 µs while someone is.
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
from modelgate.core.admission.refusals import RefusalMemo
from modelgate.errors import ModelgateError
from modelgate.observability.logs import RequestLog, request_id_from
from modelgate.observability.tallies import Tally
from modelgate.observability.tracing import trace_id_of

__all__ = ["SUMMARY_EVERY_S", "EarlyRefusals", "identity_of", "infer_target"]

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
    ) -> tuple[bytes, bool] | None:
        """The whole answer to write for a ``POST`` whose headers are in, and whether the
        connection is then closed (its body, left unread, may be large); None: the app
        answers it. Asked only while :meth:`refusing`. ``previous``: the scope of the
        connection's last request the app authenticated; ``arrived``: ``time.monotonic()``
        when its first bytes were read."""
        memo, abuse = self.memo, self.abuse
        blocking = bool(self._blocks)
        caller = previous.get(PRINCIPAL)
        if not isinstance(caller, Principal):
            return None
        target = infer_target(path)
        if target is None:
            return None
        name, version = target
        found = memo.find(caller, name, version)
        if found is None and not blocking:  # 1-3 µs of a served request while others are
            return None  # refused
        sent_id = traceparent = timeout = None
        close = False
        identity = []
        for key, value in headers:  # one pass, as the app's handler reads them
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
        overload = self.overload
        if overload is not None and arrived is not None:
            waited = overload.sojourn(arrived)  # fed to the controller, as the app does
            bound = overload.max_wait_s
            if (bound is not None and waited >= bound) or (
                timeout is not None and waited >= timeout
            ):
                return None  # the app may shed it (503)
        client = cast("tuple[str, int] | None", previous.get("client"))
        if abuse is not None:
            known = abuse.known(caller, client[0] if client else None)
            if known is False:
                return None  # the store is due to be asked: the app does
            if known is not True:
                return self._blocked(known, client, sent_id, close)
        if found is None:
            return None
        backpressure = self.backpressure
        if (
            backpressure is not None
            and client is not None
            and not backpressure.counts_unheld(client, found.retry_after_s())
        ):
            return None  # to be held: the app holds it
        memo.count(found, caller, name, version)
        if self.answers is not None:
            self.answers.total += 1
        request_id = request_id_from(sent_id)
        line = memo.line(caller)
        if line is not None and line >= 0 and self.requests is not None:
            took = 0 if arrived is None else int((time.monotonic() - arrived) * 1e9)
            self.requests.write(
                "rest",
                "POST",
                path.decode("ascii"),
                request_id,
                trace_id_of(traceparent),
                caller.tenant_id,
                name,
                version,
                429,
                took,
                line,
            )
        return refusal_bytes(found, request_id.encode(), close=close), close

    def _blocked(
        self,
        error: ModelgateError,
        client: tuple[str, int] | None,
        sent_id: bytes | None,
        close: bool,
    ) -> tuple[bytes, bool] | None:
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
        return b"\r\n".join(lines[:-1]) + b"\r\n" + body, close

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


def _is_int(value: bytes) -> bool:
    try:
        int(value)
    except ValueError:
        return False
    return True
