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

**Answers before the app** (issue 15): while shedding, or while the refusal memo refuses
someone, some inference requests are answered here as soon as their headers are parsed,
and a read that repeats a refused one is answered without parsing it
(:class:`~modelgate.api.rest.early_answers.EarlyAnswers`, which this protocol mixes in:
what it answers, what it leaves to the app, what it costs).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from modelgate.api.credentials import PRINCIPAL
from modelgate.api.rest.asgi import ARRIVED, CONNECTION
from modelgate.api.rest.early_answers import EarlyAnswers
from modelgate.api.rest.early_refusals import EarlyRefusals
from modelgate.api.rest.response_writes import HeadHoldingTransport
from modelgate.api.rest.socket_state import last_received_at, peer_closed
from modelgate.core.admission.overload import QueueDelay
from modelgate.observability.tallies import Tally

__all__ = [
    "HeaderLimitsExceededError",
    "LimitedHttpToolsProtocol",
    "limited_protocol",
]


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


class LimitedHttpToolsProtocol(EarlyAnswers, HttpToolsProtocol):
    """Configured by :func:`limited_protocol` (class attributes, since uvicorn creates one
    instance per connection with its own arguments)."""

    max_header_bytes = 16 * 1024
    header_timeout_s = 10.0
    body_timeout_s = 60.0
    max_connections = 4096
    # connections refused since the last warning, and when that was (all instances)
    _refused = 0
    _refusals_logged_at = -math.inf

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
        self._start_early_answers()

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
            self._keep_for_replay(data, refused)
        if (
            self._awaiting_headers
            and self._header_bytes > self.max_header_bytes
            and not self.transport.is_closing()
        ):
            self._refuse(_TOO_LARGE)

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
        reads its bytes: in the socket's receive buffer, or the listener's accept queue
        (a connection's first request: that wait is also judged on its own,
        :meth:`EarlyAnswers._new_connection_answer`)."""
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
        if (
            overload is not None
            and self._messages == 1
            and self.accept_queue_drains
            and (early := self._new_connection_answer(overload)) is not None
        ):
            self._shed = True
            self._answer_early(*early)
            return
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
            cycle.transport = HeadHoldingTransport(self.transport)

    def on_message_begin(self) -> None:
        self._begun += 1
        self._messages += 1
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
    listener_queue: Callable[[], tuple[int, int] | None] | None = None,
    accept_queue_drains: bool = False,
) -> type[LimitedHttpToolsProtocol]:
    """The protocol class to hand uvicorn as ``Config(http=...)``; ``overload``: the
    shedding controller, for refusals before the app runs (None: shedding off);
    ``shed_answers``: where those refusals are counted; ``refusals``: the refusal memo's
    refusals of a connection's known caller, answered before the app runs (None: off);
    ``accept_queue_drains``: with ``overload``, each connection's first request reports
    its wait in the accept queue, and ``listener_queue`` how many connections queue there
    (:meth:`~modelgate.core.admission.overload.QueueDelay.connected`)."""
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
            "listener_queue": listener_queue,
            "accept_queue_drains": accept_queue_drains and overload is not None,
        },
    )
