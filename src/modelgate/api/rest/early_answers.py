"""Answers the HTTP protocol (api/rest/http_protocol.py) writes itself, before the app runs
(issue 15): shedding's 503s, the refusal memo's 429s, and the same answer again for a read
that repeats a refused one. :class:`EarlyAnswers` is mixed into
:class:`~modelgate.api.rest.http_protocol.LimitedHttpToolsProtocol`, whose parser callbacks
call it; it keeps its per-connection state on the protocol.

**Early shedding** (issue 15, with shedding on): while the queueing-delay controller
(:class:`~modelgate.core.admission.overload.QueueDelay`) sheds, an inference request that
would be shed whoever sent it (every request is shed, or this one waited past
``max_wait_s``: :meth:`~modelgate.core.admission.overload.QueueDelay.refuses_unread`), or
whose credential is the one the app authenticated for the previous request on this
connection and whose caller is shed
(:meth:`~modelgate.core.admission.overload.QueueDelay.refuses`: fair share, priority), is
answered 503 with ``Retry-After`` here, from bytes built once, as soon as its headers are
parsed: no request-response cycle, no task, no authentication, no app. Its wait is measured
from when the kernel received its bytes (``TCP_INFO``) and fed to the controller. Its body
is skipped by httptools (C), so that the connection stays usable: a client on a kept-alive
connection is refused without reconnecting (a body of unknown or large length closes it
instead). A request behind another still answering on the same connection (pipelined) is
left to the app, so that answers stay in order; so is a connection's first request from a
caller whose refusal depends on who it is. While not shedding this costs one attribute
read per request. These refusals are counted with the app's answers
(``modelgate_http_requests_total{api="oip",status="503"}``, an integer added to per
refusal) and in ``modelgate_queue_shed_requests_total``; they write no request log line
each, but one warning at most every ``SHED_LOG_EVERY_S`` seconds with how many there were
since the last one.

**Draining** (with shedding and ``MODELGATE_SHED_ACCEPT_QUEUE`` on): a connection's first
request reports its wait since the kernel received it, and the accept queue's length, to
the controller (:meth:`~modelgate.core.admission.overload.QueueDelay.connected`, one
``TCP_INFO`` on the connection and one on the listener, per connection). While the
controller drains, that request, if an inference request, is answered 503 here, and so is
every inference request on a kept connection (the early shedding above, whoever sends it).

**Refusal-memo refusals** (issue 15, with access control on): a request of that previous
request's caller that the refusal memo refuses is answered 429 here too, between the two
shedding checks (the app's order), by :class:`~modelgate.api.rest.early_refusals.
EarlyRefusals` (what it refuses, and what it leaves to the app, is in its module). Requests
parsed from one read are each answered in that read. An answer written here arms no
keep-alive timer of its own: one timer per idle period closes the connection
(:meth:`EarlyAnswers._close_if_idle`), and a request's scope is built only
once it goes to the app. A read that repeats the last one byte for byte, when that was one
whole request refused from the memo, is answered without being parsed again
(:meth:`EarlyAnswers._replayed`, at most ``_REPLAY_BYTES`` kept per
connection). Measured: 4.8 µs of CPU a repeated refusal in the protocol, 9 µs one that is
parsed, 13-17 µs end to end with the kernel's read and write; a served request pays 0.2 µs while
nobody is refused, about 2 µs while someone is (docs/access-control.md, "Refused before the
app runs").
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

from modelgate.api.credentials import PRINCIPAL
from modelgate.api.rest.early_refusals import EarlyRefusals, RefusedRequest
from modelgate.api.rest.shedding import shed_answer
from modelgate.core.access.identity import Principal
from modelgate.core.admission.overload import QueueDelay
from modelgate.observability.tallies import Tally

__all__ = ["SHED_LOG_EVERY_S", "EarlyAnswers"]

#: the early refusals' aggregated warning: at most one per this many seconds (per process)
SHED_LOG_EVERY_S = 10.0


#: a read kept to answer its repeats (:meth:`EarlyAnswers._replayed`) is at most
#: this long: what a connection holds for it (4,096 connections: 32 MiB at most)
_REPLAY_BYTES = 8 * 1024
#: the methods of inference requests (GET: a cached model's edge request)
_SHED_METHODS = frozenset((b"POST", b"GET"))
#: a shed request's body is skipped on a kept connection up to this size (the app's bound,
#: api/rest/asgi.py); over it, or of unknown length, the connection is closed instead
_SKIP_BODY_BYTES = 64 * 1024


def _credential(headers: list[tuple[bytes, bytes]]) -> tuple[bytes, ...]:
    return tuple(v for n, v in headers if n in (b"authorization", b"x-api-key"))


def _large_body(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"transfer-encoding" or (
            name == b"content-length" and (not value.isdigit() or int(value) > _SKIP_BODY_BYTES)
        ):
            return True
    return False


class EarlyAnswers:
    """The early answers of one connection's protocol. Configured, as the protocol is, by
    class attributes (:func:`~modelgate.api.rest.http_protocol.limited_protocol`)."""

    #: the queueing-delay controller (None: shedding off): refusals decided before the app
    overload: QueueDelay | None = None
    #: the count of the early refusals' answers (the app's ``oip`` 503s); None: not counted
    shed_answers: Tally | None = None
    #: refusals from the refusal memo answered before the app (None: off)
    refusals: EarlyRefusals | None = None
    #: drain on the accept queue (:meth:`_new_connection_answer`, with ``overload`` only)
    accept_queue_drains = False
    #: the listening socket's accept queue, (waiting, bound) or None (None: unknown)
    listener_queue: Callable[[], tuple[int, int] | None] | None = None
    # requests refused early since the last warning, and when that was (all instances)
    _shed_unlogged = 0
    _shed_logged_at = -math.inf

    if TYPE_CHECKING:  # the protocol's own, which these methods read (uvicorn's, untyped)
        url: bytes
        headers: list[tuple[bytes, bytes]]
        parser: Any
        cycle: Any
        transport: asyncio.Transport
        loop: asyncio.AbstractEventLoop
        logger: Any
        server_state: Any
        flow: Any
        timeout_keep_alive: int
        timeout_keep_alive_task: asyncio.TimerHandle | None
        _arrived: float | None
        _awaiting_headers: bool
        _header_bytes: int

        def received_at(self) -> float | None: ...

    def _start_early_answers(self) -> None:
        """The connection's state for early answers (called from the protocol's
        ``__init__``)."""
        # the current request is refused here (early shedding): its bytes are skipped
        self._shed = False
        # the scope of the last request on this connection that the app authenticated (its
        # caller, for early shedding; requests refused early leave it)
        self._previous: Mapping[str, object] | None = None
        # the request of this read that the refusal memo refused here (set while it is
        # parsed), and the messages begun in this read: one read holding exactly one such
        # request is kept, with what decided its refusal, as ``_replay`` (:meth:`_replayed`)
        self._memo_refused: RefusedRequest | None = None
        self._begun = 0
        self._replay: tuple[bytes, RefusedRequest] | None = None
        # when the last answer written here went out (time.monotonic()), and the timer that
        # closes the connection if nothing comes for timeout_keep_alive since
        self._idle_at = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None
        # requests begun on this connection: the first one's wait is the accept queue's
        # (:meth:`_new_connection_answer`)
        self._messages = 0

    def _keep_for_replay(self, data: bytes, refused: RefusedRequest) -> None:
        """After a read in which the refusal memo refused ``refused`` here: when the read
        was that whole request and nothing else, and the connection is kept, the same
        bytes again are the same request (:meth:`_replayed`)."""
        self._memo_refused = None
        if (
            self._begun == 1
            and not self._header_bytes
            and len(data) <= _REPLAY_BYTES
            and not self.transport.is_closing()
        ):
            self._replay = (data, refused)

    def _replayed(self, request: RefusedRequest) -> bool:
        """Answer a read that holds the same bytes as the last one, a whole request the
        refusal memo refused here (a client that resends one request as fast as it is
        refused): its method, path, headers and body are the ones read then, so only what
        may have changed since is asked again (:meth:`EarlyRefusals.again`), without
        parsing it; False: the read is parsed and answered as any (the memo no longer
        refuses, shedding started, back-pressure would hold it, ...)."""
        refusals = self.refusals
        overload = self.overload
        cycle = self.cycle
        if (
            refusals is None
            or (overload is not None and overload.shedding)
            or (cycle is not None and not cycle.response_complete)
            or self.timeout_keep_alive_task is not None
            or not refusals.refusing()
        ):
            return False
        answer = refusals.again(request, time.monotonic())
        if answer is None:
            return False
        self._answer_early(answer, False)
        return True

    def _new_connection_answer(self, overload: QueueDelay) -> tuple[bytes, bool] | None:
        """A connection's first request, its headers in: its wait since the kernel received
        its bytes (most of it in the listener's accept queue) is fed to the controller
        (:meth:`QueueDelay.connected`); the answer when it is an inference request the
        controller refuses for that wait, else None (the app, or the other early answers,
        take it). One ``TCP_INFO`` per connection, with shedding on."""
        listener = self.listener_queue
        queue = None if listener is None else listener()
        queued = None if queue is None else queue[0]
        waited = time.monotonic() - self._queued_since()
        if not overload.connected(waited, queued) or self._inference_target() is None:
            return None
        overload.shed_new()
        return self._shed_answer(overload)

    def _inference_target(self) -> tuple[bytes, bytes] | None:
        """(path, method) of the request whose headers are in, if it is an inference
        request (the only ones answered early), else None."""
        path = self.url.partition(b"?")[0]
        if not (path.startswith(b"/v2/models/") and path.endswith(b"/infer")):
            return None
        method = self.parser.get_method()
        return (path, method) if method in _SHED_METHODS else None

    def _queued_since(self) -> float:
        """When the request whose headers are in began to wait (``time.monotonic()``): when
        the kernel received its bytes, or else when they were first read (now, for a
        pipelined request whose first bytes came with the previous one's body)."""
        arrived = self._arrived or time.monotonic()
        received = self.received_at()
        return received if received is not None and received < arrived else arrived

    def _early_answer(self) -> tuple[bytes, bool] | None:
        """The answer of the request whose headers are in, when it is refused here, and
        whether the connection is then closed; None: the app answers it. Only an inference
        request with no request of this connection still answering (pipelined: the app
        keeps the order) is: shed whoever sent it
        (:meth:`QueueDelay.refuses_unread`, for its wait since the kernel received it);
        refused from the refusal memo, for the caller of this connection's previous request
        when it carries the same credential (:class:`EarlyRefusals`); shed for that caller
        (:meth:`QueueDelay.refuses`: fair share, priority). The app's order."""
        target = self._inference_target()
        if target is None:
            return None
        path, method = target
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            return None  # pipelined behind a request still answering: the app keeps order
        overload = self.overload
        shedding = overload is not None and overload.shedding
        if shedding:
            assert overload is not None
            if overload.refuses_unread(overload.sojourn(self._queued_since())):
                return self._shed_answer(overload)
        refusals = self.refusals
        previous = self._previous
        if (
            refusals is not None
            and previous is not None
            and method == b"POST"
            and refusals.refusing()
            and self.parser.should_keep_alive()
            and self.parser.get_http_version() == "1.1"
        ):
            refused = refusals.answer(path, self.headers, previous, self._arrived)
            if refused is not None:
                answer, close, self._memo_refused = refused
                return answer, close
        if shedding:
            assert overload is not None
            caller = self._known_caller()
            if caller is not None and overload.refuses(caller):
                return self._shed_answer(overload)
        return None

    def _known_caller(self) -> Principal | None:
        """The caller the app last authenticated on this connection, if this request
        carries the same credential (a refusal only: a key revoked since is refused
        503 rather than 401, never served)."""
        previous = self._previous
        if previous is None:
            return None
        caller = previous.get(PRINCIPAL)
        if not isinstance(caller, Principal):
            return None
        headers = cast("list[tuple[bytes, bytes]]", previous["headers"])
        return caller if _credential(headers) == _credential(self.headers) else None

    def _shed_answer(self, overload: QueueDelay) -> tuple[bytes, bool]:
        """503 with ``Retry-After``, counted and logged; the connection is kept unless the
        body, to be skipped, may be large (then closed: the client resends nothing it has
        not yet sent)."""
        close = _large_body(self.headers)
        answers = self.shed_answers
        if answers is not None:
            answers.total += 1
        self._log_shed()
        return shed_answer(overload.retry_after_s, close=close), close

    def _answer_early(self, answer: bytes, close: bool) -> None:
        """Write a refusal made here; its body is skipped (``_shed``)."""
        self.transport.write(answer)
        if close:
            # nothing more is read: what httptools still parses of this read is skipped
            self._awaiting_headers = False
            self.transport.close()
            return
        # what uvicorn does once an answer is complete (on_response_complete), but for its
        # keep-alive timer: one per request (armed here, cancelled by the next read) would
        # cost a refusal more than its parsing. Instead one timer per idle period:
        # :meth:`_close_if_idle`.
        self.server_state.total_requests += 1
        self.flow.resume_reading()
        self._idle_at = time.monotonic()
        if self._idle_timer is None:
            self._idle_timer = self.loop.call_later(self.timeout_keep_alive, self._close_if_idle)

    def _close_if_idle(self) -> None:
        """uvicorn's keep-alive timeout for a connection whose last answer was written
        here: closed once nothing came for ``timeout_keep_alive`` seconds since."""
        self._idle_timer = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if (
            not self._awaiting_headers
            or self._header_bytes
            or (cycle is not None and not cycle.response_complete)
            or self.timeout_keep_alive_task is not None
        ):
            return  # a request under way: its own timers (header, body, keep-alive) rule
        left = self._idle_at + self.timeout_keep_alive - time.monotonic()
        if left > 0:
            self._idle_timer = self.loop.call_later(left, self._close_if_idle)
        else:
            self.transport.close()

    def _log_shed(self) -> None:
        """One warning for many early refusals: a flood of them is no flood of logs."""
        cls = EarlyAnswers
        cls._shed_unlogged += 1
        now = self.loop.time()
        if now - cls._shed_logged_at >= SHED_LOG_EVERY_S:
            self.logger.warning(
                "overloaded: %d inference requests refused 503 before they were read, "
                "since the last warning",
                cls._shed_unlogged,
            )
            cls._shed_logged_at, cls._shed_unlogged = now, 0
