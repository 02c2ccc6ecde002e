"""uvicorn's httptools protocol with the limits it lacks: the size of a request's headers,
the time a client may take to send them, and the number of open connections.

uvicorn 0.5x enforces none of these with httptools (h11 bounds header size only, and is
slower): a client could send 100 MiB of headers (httptools buffers a header value whole
before calling back) or open a connection and trickle a byte every few seconds for ever.
``limit_concurrency`` counts requests and answers 503 to new ones, so it bounds neither.

- **Header size.** The bytes received since the current request began are counted per read
  (one addition); past ``max_header_bytes`` with the headers still incomplete the client gets
  431 and the connection is closed, so a flood costs at most one read (64-256 KiB) past the
  limit. When the headers complete within a read that took the count past the limit, their
  exact size (request line plus headers) decides. The bytes of a pipelined request that
  arrived in the same read as the end of the previous one are not counted per read: its
  headers may pass the limit by up to one read.
- **Header time.** From a connection's start, or from the first byte of a request on a kept
  connection, the complete headers must arrive within ``header_timeout_s``; else 408 and
  close. One timer per connection, re-armed only when it fires: a request costs a clock read,
  not a timer.
- **Body time.** Once a request's headers are in, its whole body must arrive within
  ``body_timeout_s`` (a body trickled a byte at a time would hold its request for ever);
  else 408 and close (or just close, when the answer has started). Checked by the same
  timer, so it may fire up to ``header_timeout_s`` late.
- **Connections.** A connection over ``max_connections`` open in this process is closed at
  once, before it is read. The kernel's accept queue (``listen(2048)``) and the process's
  file-descriptor limit bound what waits outside.

The idle time of a kept-alive connection is uvicorn's own ``timeout_keep_alive``.

Two more things each request's ASGI scope carries, for the inference handler
(api/rest/inference.py): ``modelgate.arrived``, the ``time.monotonic()`` instant its first
bytes were read (the clock read the header timeout needs anyway; its *sojourn time* is
measured from there, or from when the kernel received them,
:meth:`~LimitedHttpToolsProtocol.received_at`, see core/admission/overload.py), and
``modelgate.connection``, this protocol, whose :meth:`~LimitedHttpToolsProtocol.client_gone`
says whether the client has disconnected, so that a request whose client gave up while it
waited is dropped without work, and whose :meth:`~LimitedHttpToolsProtocol.watch` cancels a
request waiting for its model when its client goes (both with shedding on).

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

**Refusal-memo refusals** (issue 15, with access control on): a request of that previous
request's caller that the refusal memo refuses is answered 429 here too, between the two
shedding checks (the app's order), by :class:`~modelgate.api.rest.early_refusals.
EarlyRefusals` (what it refuses, and what it leaves to the app, is in its module). Requests
parsed from one read are each answered in that read. An answer written here arms no
keep-alive timer of its own: one timer per idle period closes the connection
(:meth:`~LimitedHttpToolsProtocol._close_if_idle`), and a request's scope is built only
once it goes to the app. A read that repeats the last one byte for byte, when that was one
whole request refused from the memo, is answered without being parsed again
(:meth:`~LimitedHttpToolsProtocol._replayed`, at most ``_REPLAY_BYTES`` kept per
connection). Measured: 4.8 µs of CPU a repeated refusal in the protocol, 9 µs one that is
parsed, 15 µs end to end with the kernel's read and write; a served request pays 0.2 µs while
nobody is refused, about 2 µs while someone is (docs/access-control.md, "Refused before the
app runs").
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from modelgate.api.credentials import PRINCIPAL
from modelgate.api.rest.asgi import ARRIVED, CONNECTION
from modelgate.api.rest.early_refusals import EarlyRefusals, RefusedRequest
from modelgate.api.rest.response_writes import HeadHoldingTransport
from modelgate.api.rest.shedding import shed_answer
from modelgate.api.rest.socket_state import last_received_at, peer_closed
from modelgate.core.access.identity import Principal
from modelgate.core.admission.overload import QueueDelay
from modelgate.observability.tallies import Tally

__all__ = [
    "SHED_LOG_EVERY_S",
    "HeaderLimitsExceededError",
    "LimitedHttpToolsProtocol",
    "limited_protocol",
]

#: the early refusals' aggregated warning: at most one per this many seconds (per process)
SHED_LOG_EVERY_S = 10.0


#: a read kept to answer its repeats (:meth:`LimitedHttpToolsProtocol._replayed`) is at most
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


class HeaderLimitsExceededError(Exception):
    """Raised inside a parser callback: httptools turns it into a parser error, which uvicorn
    answers through ``send_400_response`` (here: 431)."""


def _answer(status: bytes, message: bytes) -> bytes:
    return b"".join(
        [
            b"HTTP/1.1 ",
            status,
            b"\r\ncontent-type: application/json\r\ncontent-length: ",
            str(len(message)).encode(),
            b"\r\nconnection: close\r\n\r\n",
            message,
        ]
    )


_TOO_LARGE = _answer(b"431 Request Header Fields Too Large", b'{"error":"headers too large"}')
_TIMEOUT = _answer(b"408 Request Timeout", b'{"error":"headers not received in time"}')
_BODY_TIMEOUT = _answer(b"408 Request Timeout", b'{"error":"body not received in time"}')


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """Configured by :func:`limited_protocol` (class attributes, since uvicorn creates one
    instance per connection with its own arguments)."""

    max_header_bytes = 16 * 1024
    header_timeout_s = 10.0
    body_timeout_s = 60.0
    max_connections = 4096
    #: the queueing-delay controller (None: shedding off): refusals decided before the app
    overload: QueueDelay | None = None
    #: the count of the early refusals' answers (the app's ``oip`` 503s); None: not counted
    shed_answers: Tally | None = None
    #: refusals from the refusal memo answered before the app (None: off)
    refusals: EarlyRefusals | None = None
    # connections refused since the last warning, and when that was (all instances)
    _refused = 0
    _refusals_logged_at = -math.inf
    # requests refused early since the last warning, and when that was (all instances)
    _shed_unlogged = 0
    _shed_logged_at = -math.inf

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # bytes read since the current request began, while its headers are incomplete
        self._header_bytes = 0
        self._awaiting_headers = True
        # loop time by which the current request's headers must be complete; None: no
        # request under way (an idle kept-alive connection: uvicorn's keep-alive timer)
        self._header_deadline: float | None = None
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_overflow = False
        # time.monotonic() when the current request's first bytes were read; None: not yet
        self._arrived: float | None = None
        # loop time by which the current request's body must be complete; None: no body due
        self._body_deadline: float | None = None
        # the task of a request waiting for (or running) its model: cancelled when the
        # client goes (:meth:`watch`)
        self._watched: asyncio.Task[Any] | None = None
        #: true once a watched request was cancelled because its client went
        self.abandoned = False
        # the connection's socket (None: not a socket), for TCP_INFO and MSG_PEEK
        self._socket: Any = None
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

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._socket = transport.get_extra_info("socket")  # asked once: ~2 µs a call
        if len(self.connections) > self.max_connections:
            self._refuse_connection()
            return
        self._header_deadline = self.loop.time() + self.header_timeout_s
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._check_headers)

    def _refuse_connection(self) -> None:
        # logged at most once a minute per process: a flood of connections is no flood of logs
        cls = LimitedHttpToolsProtocol
        cls._refused += 1
        now = self.loop.time()
        if now - cls._refusals_logged_at >= 60:
            self.logger.warning(
                "connections refused, %d open (the most): %d since the last warning",
                self.max_connections,
                cls._refused,
            )
            cls._refusals_logged_at, cls._refused = now, 0
        self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        super().connection_lost(exc)
        watched = self._watched
        if watched is not None:  # no one will read its answer: its model need not run
            self._watched = None
            self.abandoned = True
            watched.cancel()

    def watch(self, task: asyncio.Task[Any] | None) -> None:
        """Cancel ``task`` (a request's handler, while it waits for its model) if the
        client disconnects before :meth:`watch` is called again with None: the batcher
        drops a cancelled caller before its batch is formed, so a request whose client
        gave up in the model's queue costs no model time. uvicorn never cancels a handler
        itself; the handler tells this cancellation apart by :attr:`abandoned`."""
        self._watched = task

    # The overrides call HttpToolsProtocol's methods by name: super() costs a little more, on
    # every request.
    def data_received(self, data: bytes) -> None:
        replay = self._replay
        if replay is not None:
            if data == replay[0] and self._replayed(replay[1]):
                return
            self._replay = None
        if self._awaiting_headers:
            if not self._header_bytes:  # a request's first bytes: one clock read
                self._arrived = now = time.monotonic()
                if self._header_deadline is None:
                    self._header_deadline = now + self.header_timeout_s
            self._header_bytes += len(data)
        self._begun = 0
        self._memo_refused = None
        HttpToolsProtocol.data_received(self, data)
        refused = self._memo_refused
        if refused is not None:
            self._memo_refused = None
            # a read that was one whole request, refused from the memo and kept alive: the
            # same bytes again are the same request (:meth:`_replayed`)
            if (
                self._begun == 1
                and not self._header_bytes
                and len(data) <= _REPLAY_BYTES
                and not self.transport.is_closing()
            ):
                self._replay = (data, refused)
        if (
            self._awaiting_headers
            and self._header_bytes > self.max_header_bytes
            and not self.transport.is_closing()
        ):
            self._refuse(_TOO_LARGE)

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

    def _early_answer(self) -> tuple[bytes, bool] | None:
        """The answer of the request whose headers are in, when it is refused here, and
        whether the connection is then closed; None: the app answers it. Only an inference
        request with no request of this connection still answering (pipelined: the app
        keeps the order) is: shed whoever sent it
        (:meth:`QueueDelay.refuses_unread`, for its wait since the kernel received it);
        refused from the refusal memo, for the caller of this connection's previous request
        when it carries the same credential (:class:`EarlyRefusals`); shed for that caller
        (:meth:`QueueDelay.refuses`: fair share, priority). The app's order."""
        path = self.url.partition(b"?")[0]
        if not (path.startswith(b"/v2/models/") and path.endswith(b"/infer")):
            return None
        method = self.parser.get_method()
        if method not in _SHED_METHODS:
            return None
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            return None  # pipelined behind a request still answering: the app keeps order
        overload = self.overload
        shedding = overload is not None and overload.shedding
        if shedding:
            assert overload is not None
            # None: a pipelined request whose first bytes came with the previous one's body
            arrived = self._arrived or time.monotonic()
            received = self.received_at()
            if received is not None and received < arrived:
                arrived = received
            if overload.refuses_unread(overload.sojourn(arrived)):
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

    def client_gone(self, look: bool = False) -> bool:
        """Whether the client has disconnected: nothing sent on the connection would be
        read. ``look``: also ask the socket (one ``recv(MSG_PEEK)``, a few microseconds),
        since asyncio reads a client's FIN only in a loop iteration after its request's
        bytes, i.e. after the request's handler has started; without ``look`` only a close
        already seen counts. Once gone, uvicorn is told at once (as its ``connection_lost``
        will tell it later), so that a request dropped unanswered gets no 500 "returned
        without starting response" either."""
        if not self.transport.is_closing() and not (look and self._peer_closed()):
            return False
        cycle = self.cycle
        if cycle is not None:
            cycle.disconnected = True
        return True

    def received_at(self) -> float | None:
        """The ``time.monotonic()`` instant the kernel last received data on this
        connection (:func:`~modelgate.api.rest.socket_state.last_received_at`), None where
        unknown. Under CPU saturation most of a request's wait is here, before the loop
        reads its bytes: in the socket's receive buffer, or the listener's accept queue."""
        return None if self._socket is None else last_received_at(self._socket)

    def _peer_closed(self) -> bool:
        return self._socket is not None and peer_closed(self._socket)

    def on_headers_complete(self) -> None:
        if self._header_bytes > self.max_header_bytes:  # this read held more than headers
            size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
            if size > self.max_header_bytes:
                self._header_overflow = True
                raise HeaderLimitsExceededError
        self._awaiting_headers = False
        self._header_deadline = None
        self._body_deadline = self.loop.time() + self.body_timeout_s  # a skipped one's too
        overload = self.overload
        refusals = self.refusals
        if (
            (overload is not None and overload.shedding)
            or (refusals is not None and self._previous is not None and refusals.refusing())
        ) and (early := self._early_answer()) is not None:
            self._shed = True
            self._answer_early(*early)
            return
        # the request's scope, built only now (:meth:`on_message_begin`): uvicorn's, with the
        # url and headers parsed so far
        url, headers, expect = self.url, self.headers, self.expect_100_continue
        HttpToolsProtocol.on_message_begin(self)
        scope = self.scope
        self.url, self.headers, self.expect_100_continue = url, headers, expect
        scope["headers"] = headers
        arrived = self._arrived
        # None: a pipelined request whose first bytes came with the previous one's body
        scope[ARRIVED] = time.monotonic() if arrived is None else arrived  # type: ignore[literal-required]
        scope[CONNECTION] = self  # type: ignore[literal-required]
        previous = self.cycle
        HttpToolsProtocol.on_headers_complete(self)
        cycle = self.cycle
        # a new request's cycle (not an upgrade): one write per answer; a HEAD answer has no
        # body write to wait for, so its head goes out at once
        if cycle is not previous and self.scope["method"] != "HEAD":
            cycle.transport = HeadHoldingTransport(self.transport)  # type: ignore[assignment]

    def on_message_begin(self) -> None:
        self._begun += 1
        previous = self.scope
        if previous is not None and PRINCIPAL in previous:  # whom the app last found here
            self._previous = previous
        # what uvicorn's on_message_begin resets; its scope (a dict of nine and a copy of
        # the app state) is built once the request is known to go to the app
        self.url = b""
        self.expect_100_continue = False
        self.headers = []

    def on_body(self, body: bytes) -> None:
        if not self._shed:  # a shed request's body is skipped
            HttpToolsProtocol.on_body(self, body)

    def on_message_complete(self) -> None:
        self._awaiting_headers = True
        self._header_bytes = 0
        self._body_deadline = None
        self._arrived = None
        if self._shed:
            self._shed = False
            return
        HttpToolsProtocol.on_message_complete(self)

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
        cls = LimitedHttpToolsProtocol
        cls._shed_unlogged += 1
        now = self.loop.time()
        if now - cls._shed_logged_at >= SHED_LOG_EVERY_S:
            self.logger.warning(
                "overloaded: %d inference requests refused 503 before they were read, "
                "since the last warning",
                cls._shed_unlogged,
            )
            cls._shed_logged_at, cls._shed_unlogged = now, 0

    def send_400_response(self, msg: str) -> None:
        if self._header_overflow:
            self._refuse(_TOO_LARGE)
        else:
            super().send_400_response(msg)

    def _refuse(self, answer: bytes) -> None:
        self._awaiting_headers = False
        self.transport.write(answer)
        self.transport.close()

    def _check_headers(self) -> None:
        """The connection's timer: close it if a request's headers are overdue, else look
        again when they would be."""
        self._header_timer = None
        if self.transport.is_closing():
            return
        deadline = self._header_deadline
        now = self.loop.time()
        if self._awaiting_headers and deadline is not None and now >= deadline:
            self._refuse(_TIMEOUT)
            return
        body = self._body_deadline
        if body is not None and now >= body:
            cycle = getattr(self, "cycle", None)
            if self._shed or (cycle is not None and cycle.response_started):
                self.transport.close()  # answered (shed) or under way: only the connection goes
            else:
                self._refuse(_BODY_TIMEOUT)
            return
        due = [d for d in (deadline, body) if d is not None]
        wait = self.header_timeout_s if not due else max(min(due) - now, 0.05)
        self._header_timer = self.loop.call_later(wait, self._check_headers)


def limited_protocol(
    *,
    max_header_bytes: int,
    header_timeout_s: float,
    max_connections: int,
    body_timeout_s: float = LimitedHttpToolsProtocol.body_timeout_s,
    overload: QueueDelay | None = None,
    shed_answers: Tally | None = None,
    refusals: EarlyRefusals | None = None,
) -> type[LimitedHttpToolsProtocol]:
    """The protocol class to hand uvicorn as ``Config(http=...)``; ``overload``: the
    shedding controller, for refusals before the app runs (None: shedding off);
    ``shed_answers``: where those refusals are counted; ``refusals``: the refusal memo's
    refusals of a connection's known caller, answered before the app runs (None: off)."""
    return type(
        "LimitedHttpToolsProtocol",
        (LimitedHttpToolsProtocol,),
        {
            "max_header_bytes": max_header_bytes,
            "header_timeout_s": header_timeout_s,
            "body_timeout_s": body_timeout_s,
            "max_connections": max_connections,
            "overload": overload,
            "shed_answers": shed_answers,
            "refusals": refusals,
        },
    )
