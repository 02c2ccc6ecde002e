"""An open-loop HTTP/1.1 load generator: requests leave on a fixed schedule whatever the server
does, and each is timed from the moment it was due.

wrk is a closed loop: a slow server slows the client down, the queue the server would face never
forms and the wait is hidden (coordinated omission). Here every stream has a rate and a window;
a request due while all of the stream's connections are busy waits at the client, and that wait
counts in its latency. One request at a time per keep-alive connection (no pipelining, as browsers
and most clients), raw asyncio protocols (uvloop when installed) so that one Python process can
offer a few thousand requests per second. A request not answered within the stream's timeout is
cut off (its connection closed) and counted as unanswered (status 0), as a client that gives up
would; so is a request that never found a free connection in that time.

``events`` run callbacks at set offsets during the run (e.g. cut a database off), on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import math
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import cast

__all__ = [
    "Outcome",
    "Run",
    "Stream",
    "http_request",
    "percentile",
    "run",
    "schedule",
    "windows",
]

_OPEN = "not sent"
#: how often cut-off requests are looked for: a timeout is honoured within this
_SWEEP_S = 0.02


@dataclass(frozen=True)
class Stream:
    """``rate`` requests per second from ``start`` for ``seconds`` (offsets from the run's
    start), each ``request`` (the whole HTTP/1.1 request), on at most ``connections``.
    ``dues``, when given, are the requests' due times instead (offsets from the run's start,
    ascending, within ``start`` and ``start + seconds``): a rate that changes over the run."""

    name: str
    request: bytes
    rate: float
    seconds: float
    start: float = 0.0
    connections: int = 16
    timeout: float = 3.0
    dues: tuple[float, ...] = ()


@dataclass
class Outcome:
    """One request: ``due`` (s after the run's start); ``status`` 0 when there was no answer
    (``error`` says why); ``latency`` from due to the answer's last byte (None: no answer)."""

    due: float
    status: int = 0
    latency: float | None = None
    retry_after: bool = False
    error: str = "not sent"  # until it is answered or given up on

    @property
    def answered(self) -> bool:
        return self.status != 0


@dataclass
class Run:
    outcomes: dict[str, list[Outcome]]
    #: how late the generator itself submitted requests (s, its p99 and worst): when this is
    #: not small the client, not the server, set the pace
    submit_lag_p99: float = 0.0
    submit_lag_max: float = 0.0
    #: ``"<stream> connections"``: how many connections each stream opened in all
    extra: dict[str, float] = field(default_factory=dict)


def schedule(rate: float, seconds: float, start: float = 0.0) -> list[float]:
    """Due times, evenly spaced: ``round(rate * seconds)`` requests from ``start``."""
    if rate <= 0 or seconds <= 0:
        return []
    count = round(rate * seconds)
    return [start + i / rate for i in range(count)]


def percentile(values: list[float], q: float) -> float | None:
    """The nearest-rank ``q`` percentile (0 < q <= 100): the smallest value with at least q%
    of the values at or below it; None for no values."""
    if not values:
        return None
    if not 0 < q <= 100:
        raise ValueError(f"percentile {q} is not in (0, 100]")
    ordered = sorted(values)
    rank = math.ceil(q / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


def windows(
    outcomes: list[Outcome], start: float, end: float, width: float
) -> Iterator[tuple[float, list[Outcome]]]:
    """The outcomes due in ``[start, end)``, in consecutive windows of ``width`` seconds
    (window start, outcomes); empty windows included."""
    count = math.ceil((end - start) / width - 1e-9)
    buckets: list[list[Outcome]] = [[] for _ in range(count)]
    for outcome in outcomes:
        if start <= outcome.due < end:
            buckets[min(int((outcome.due - start) / width), count - 1)].append(outcome)
    for index, bucket in enumerate(buckets):
        yield start + index * width, bucket


def http_request(
    method: str,
    path: str,
    *,
    host: str,
    authorization: str | None = None,
    body: bytes = b"",
    content_type: str = "application/json",
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    if authorization:
        lines.append(f"Authorization: {authorization}")
    if body or method in ("POST", "PUT"):
        lines += [f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class _Connection(asyncio.Protocol):
    def __init__(self, pool: _Pool):
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.current: int | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def send(self, index: int) -> None:
        assert self.transport is not None
        self.current = index
        self.pool.busy.add(self)
        self.transport.write(self.pool.stream.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if len(self.buffer) < end + 4 + length:
            return
        del self.buffer[: end + 4 + length]
        status = int(head[0].split(" ", 2)[1])
        index, self.current = self.current, None
        self.pool.busy.discard(self)
        if index is not None:
            self.pool.answer(index, status, "retry-after" in headers)
        if headers.get("connection", "").lower() == "close":
            assert self.transport is not None
            self.transport.close()  # connection_lost gives the slot back
        else:
            self.pool.released(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.busy.discard(self)
        index, self.current = self.current, None
        if index is not None:
            self.pool.fail(index, f"connection lost: {exc or 'closed by the server'}")
        self.pool.lost(self)

    def cut(self) -> None:
        """Give up on the request in flight (its timeout passed): close at once."""
        self.pool.busy.discard(self)
        self.current = None
        if self.transport is not None:
            self.transport.abort()


class _Pool:
    """One stream's connections and the requests waiting for one of them."""

    def __init__(
        self, stream: Stream, address: tuple[str, int], t0: float, outcomes: list[Outcome]
    ):
        self.stream = stream
        self.address = address
        self.t0 = t0
        self.outcomes = outcomes
        self.loop = asyncio.get_running_loop()
        self.idle: list[_Connection] = []
        self.busy: set[_Connection] = set()
        self.opened = 0
        #: connections this stream opened in all (``opened`` counts those open now)
        self.connects = 0
        self.waiting: deque[int] = deque()
        self.tasks: set[asyncio.Task[None]] = set()
        #: outcomes not yet answered or given up on; ``done`` is set when none is left
        self.left = len(outcomes)
        self.done = asyncio.Event()
        if not outcomes:
            self.done.set()

    def submit(self, index: int) -> None:
        if self.idle:
            self.idle.pop().send(index)
        elif self.opened < self.stream.connections:
            self.open(index)
        else:
            self.waiting.append(index)

    def open(self, index: int) -> None:
        self.opened += 1
        self.connects += 1
        task = self.loop.create_task(self._connect(index))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _connect(self, index: int) -> None:
        try:
            transport, connection = await self.loop.create_connection(
                lambda: _Connection(self), *self.address
            )
            # uvloop may call connection_made only after create_connection has returned
            connection.transport = transport
        except OSError as exc:
            self.opened -= 1
            self.fail(index, f"connect: {exc}")
            return
        if self.expired(index):  # its time ran out while connecting
            self.fail(index, "timeout")
            self.released(connection)
        else:
            connection.send(index)

    def expired(self, index: int) -> bool:
        return self.loop.time() > self.t0 + self.outcomes[index].due + self.stream.timeout

    def answer(self, index: int, status: int, retry_after: bool) -> None:
        outcome = self.outcomes[index]
        if outcome.error == _OPEN:
            outcome.status = status
            outcome.latency = self.loop.time() - self.t0 - outcome.due
            outcome.retry_after = retry_after
            outcome.error = ""
            self._settled()

    def fail(self, index: int, error: str) -> None:
        """No answer: the first reason given is kept."""
        outcome = self.outcomes[index]
        if outcome.error == _OPEN:
            outcome.error = error
            self._settled()

    def _settled(self) -> None:
        self.left -= 1
        if self.left == 0:
            self.done.set()

    def released(self, connection: _Connection) -> None:
        while self.waiting:
            index = self.waiting.popleft()
            if self.expired(index):
                self.fail(index, "timeout")
                continue
            connection.send(index)
            return
        self.idle.append(connection)

    def lost(self, connection: _Connection) -> None:
        with contextlib.suppress(ValueError):
            self.idle.remove(connection)
        self.opened -= 1
        if self.waiting:
            self.open(self.waiting.popleft())

    def sweep(self) -> None:
        """Cut off the requests whose timeout passed, in flight or still waiting."""
        now = self.loop.time()
        for connection in list(self.busy):
            index = connection.current
            if index is not None and now > self.t0 + self.outcomes[index].due + self.stream.timeout:
                self.fail(index, "timeout")
                connection.cut()
        while self.waiting and self.expired(self.waiting[0]):
            self.fail(self.waiting.popleft(), "timeout")

    def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for connection in [*self.idle, *self.busy]:
            if connection.transport is not None:
                connection.transport.abort()


async def _run(
    address: tuple[str, int],
    streams: list[Stream],
    events: list[tuple[float, Callable[[], None]]],
) -> Run:
    loop = asyncio.get_running_loop()
    t0 = loop.time() + 0.1
    outcomes = {
        s.name: [Outcome(due) for due in (s.dues or schedule(s.rate, s.seconds, s.start))]
        for s in streams
    }
    pools = [_Pool(s, address, t0, outcomes[s.name]) for s in streams]
    for offset, callback in events:
        loop.call_at(t0 + offset, callback)
    merged = heapq.merge(*(_due(n, outcomes[s.name]) for n, s in enumerate(streams)))
    stop = asyncio.Event()

    async def sweeper() -> None:
        while not stop.is_set():
            for pool in pools:
                pool.sweep()
            await asyncio.sleep(_SWEEP_S)

    sweeping = loop.create_task(sweeper())
    lags: list[float] = []
    try:
        for due, stream_index, index in merged:
            delay = t0 + due - loop.time()
            if delay > 0.0005:
                await asyncio.sleep(delay)
            lags.append(max(0.0, loop.time() - t0 - due))
            pools[stream_index].submit(index)
        end = t0 + max((s.start + s.seconds + s.timeout for s in streams), default=0.0) + 0.2
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(pool.done.wait() for pool in pools)), end - loop.time()
            )
    finally:
        stop.set()
        await sweeping
        for pool in pools:
            pool.close()
    for pool in pools:  # whatever is still open ran out of time
        for outcome in pool.outcomes:
            if outcome.error == _OPEN:
                outcome.error = "timeout"
    extra = {f"{pool.stream.name} connections": float(pool.connects) for pool in pools}
    return Run(outcomes, percentile(lags, 99) or 0.0, max(lags, default=0.0), extra)


def _due(stream: int, outcomes: list[Outcome]) -> Iterator[tuple[float, int, int]]:
    return ((o.due, stream, i) for i, o in enumerate(outcomes))


def run(
    host: str,
    port: int,
    streams: list[Stream],
    events: list[tuple[float, Callable[[], None]]] | None = None,
) -> Run:
    """Run ``streams`` against ``host:port`` to the end (the last request answered or cut
    off), in this thread, on uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - the venv has it
        return asyncio.run(_run((host, port), streams, events or []))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_run((host, port), streams, events or []))
