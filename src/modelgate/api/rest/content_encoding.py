"""Request bodies sent compressed: ``Content-Encoding: gzip | deflate | identity``.

tritonclient's ``request_compression_algorithm`` sends ``gzip`` (RFC 1952) or ``deflate``
(which HTTP means as the zlib format of RFC 1950, as tritonclient and RFC 9110 say), and
browsers and proxies may send ``x-gzip``. The body is inflated as it arrives, never more
than the route's limit past what it holds already (zlib's ``max_length``): a small body that
would inflate to gigabytes (a zip bomb) is refused with 413 once the limit is passed,
without allocating the rest. The compressed size is held to the same limit before (api/rest/
asgi.py ``receive_body``), so a request costs at most the limit in each form.

An unknown coding is refused with 415 in the route's error shape; a body that is not valid
data for its coding with 400. A request without the header never reaches this module.

Inflating costs about 2 µs per KiB of output (zlib, measured on JSON and on a run of one
byte), so a 64 KiB body that inflates to a 64 MiB limit held the event loop for about
200 ms, inflating and joining. So a body is inflated on the loop only up to its first
:data:`INLINE_BYTES` of output (about 65 µs at most); the rest, once the whole compressed
body has arrived, is inflated and joined by one of :data:`INFLATE_THREADS` threads of a
pool of their own. A hop to a thread costs about 50 µs of CPU, which pays from about that
size on; a pool of two means that however many tenants send large compressed bodies at
once, they occupy two threads and queue for them, never the default executor that audits
and file reads use. Measured with ``time.thread_time`` on the loop's thread (medians), that
64 MiB body now costs the loop about 6 ms instead of 200, a 256 KiB JSON body 0.3 ms
instead of 0.55. The limit holds as before: in the thread, inflating stops one byte past
it (413).

The pool's queue is bounded, so one tenant's stream of bombs (each about 130 ms of a
thread at a 64 MiB limit) cannot delay every other tenant's large bodies without end: at
most :data:`MAX_INFLATING` bodies are in the pool at once (inflating or waiting), and at
most :data:`MAX_INFLATING_PER_OWNER` of one owner (the caller's tenant, or its address
before it is authenticated). A body past either bound is refused at once, before any of
its rest is inflated: OVERLOADED, 503 with ``Retry-After: 1`` in the route's error shape.

Answers are not compressed, whatever ``Accept-Encoding`` says (HTTP allows it; tritonclient
reads an uncompressed answer to ``response_compression_algorithm`` as it is): zlib's
fastest level runs at about 90 MB/s on a JSON answer and 35 MB/s on float tensors (which
shrink by a tenth), several times the cost of encoding the answer, on the event loop, and
requests, httpx and aiohttp ask for gzip by default. A proxy in front can compress.
"""

from __future__ import annotations

import asyncio
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor

from modelgate.errors import ErrorKind, ModelgateError, invalid

__all__ = [
    "INFLATE_THREADS",
    "INLINE_BYTES",
    "MAX_INFLATING",
    "MAX_INFLATING_PER_OWNER",
    "BodyDecoder",
    "body_decoder",
]

#: output inflated on the event loop per body; what comes after is inflated in a thread
INLINE_BYTES = 32 * 1024
#: threads that inflate bodies, per process (queued beyond)
INFLATE_THREADS = 2
#: bodies in the inflating pool at once, per process (inflating or queued); more: 503
MAX_INFLATING = 8 * INFLATE_THREADS
#: of them, bodies of one owner (a tenant, or an address); more: 503
MAX_INFLATING_PER_OWNER = INFLATE_THREADS
#: what a refused body's sender is told to wait, in seconds
RETRY_AFTER_S = 1.0

#: zlib's ``wbits`` for each coding: gzip's header and trailer, or zlib's
_WBITS = {
    b"gzip": 16 + zlib.MAX_WBITS,
    b"x-gzip": 16 + zlib.MAX_WBITS,
    b"deflate": zlib.MAX_WBITS,
}
_IDENTITY = b"identity"


class BodyDecoder:
    """Inflates one body chunk by chunk, refusing it once it inflates past ``limit``: the
    first ``inline`` bytes of output as the chunks arrive (:meth:`feed`), the rest in an
    inflating thread once all have (:meth:`finish`)."""

    __slots__ = (
        "_coding",
        "_deferred",
        "_inflater",
        "_inline",
        "_limit",
        "_owner",
        "_parts",
        "_size",
        "_wbits",
    )

    def __init__(
        self,
        coding: str,
        wbits: int,
        limit: int,
        inline: int = INLINE_BYTES,
        owner: str | None = None,
    ):
        #: whose body it is, for the per-owner bound of the pool (None: the total only)
        self._owner = owner
        self._coding = coding
        self._wbits = wbits
        self._limit = limit
        self._inline = inline
        self._inflater = zlib.decompressobj(wbits)
        self._parts: list[bytes] = []
        self._size = 0
        #: input left for the thread, once the inline output is spent (None: not yet)
        self._deferred: list[bytes] | None = None

    def feed(self, data: bytes) -> None:
        deferred = self._deferred
        if deferred is not None:
            deferred.append(data)
            return
        left = self._inflate(data, self._inline - self._size)
        if left is not None:
            self._deferred = [left]

    async def finish(self) -> bytes:
        deferred = self._deferred
        if deferred is None:
            return self._body()
        self._deferred = None
        owner = self._owner
        _QUEUE.enter(owner)  # OVERLOADED when the pool, or the owner's share, is full
        try:
            future = _pool().submit(self._finish_rest, deferred)
        except BaseException:
            _QUEUE.leave(owner)
            raise
        # counted until the thread is done with it (or it is dropped unstarted)
        future.add_done_callback(lambda _done: _QUEUE.leave(owner))
        # a cancelled request drops its work if it waits; running, it ends within the limit
        return await asyncio.wrap_future(future)

    def _finish_rest(self, deferred: list[bytes]) -> bytes:
        """In an inflating thread: the rest of the body, and the join of all of it (copying
        megabytes is loop time too)."""
        self._inflate(deferred[0] if len(deferred) == 1 else b"".join(deferred), None)
        body = self._body()
        self._parts.clear()  # freed here too, not on the loop with the decoder
        return body

    def _body(self) -> bytes:
        if not self._inflater.eof:
            raise invalid(f"the {self._coding} body ends before its compressed data does")
        parts = self._parts
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _inflate(self, data: bytes, budget: int | None) -> bytes | None:
        """Inflate ``data``; None once all of it is, or (with a ``budget``) the input left
        when ``budget`` bytes came out, which may be b"" with output still held in zlib."""
        inflater = self._inflater
        produced = 0
        while True:
            if inflater.eof:
                if not data:
                    return None
                # a gzip body may hold several members (RFC 1952 2.2)
                inflater = self._inflater = zlib.decompressobj(self._wbits)
            room = self._limit - self._size + 1  # one byte past the limit tells it is over
            if budget is not None:
                if produced >= budget:
                    return data
                room = min(room, budget - produced)
            try:
                part = inflater.decompress(data, room)
            except zlib.error as exc:
                raise invalid(f"the body is not valid {self._coding} data: {exc}") from None
            self._size += len(part)
            if self._size > self._limit:
                raise ModelgateError(
                    ErrorKind.PAYLOAD_TOO_LARGE,
                    f"the decompressed body is over the limit of {self._limit} bytes",
                )
            if part:
                self._parts.append(part)
            produced += len(part)
            # what follows the end of a member, or the input zlib had no room to inflate
            data = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
            if not data and len(part) < room:  # all inflated, nothing held back
                return None


class _BoundedQueue:
    """How many bodies are in the inflating pool, in all and per owner; entered on the
    loop, left from the thread that ran the body (hence the lock)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.total = 0
        self.owners: dict[str, int] = {}

    def enter(self, owner: str | None) -> None:
        with self._lock:
            mine = self.owners.get(owner, 0) if owner is not None else 0
            if self.total >= MAX_INFLATING or mine >= MAX_INFLATING_PER_OWNER:
                raise ModelgateError(
                    ErrorKind.OVERLOADED,
                    "too many compressed bodies are being inflated"
                    + (" for this caller" if mine >= MAX_INFLATING_PER_OWNER else "")
                    + ": retry later, or send the body uncompressed",
                    retry_after=RETRY_AFTER_S,
                )
            self.total += 1
            if owner is not None:
                self.owners[owner] = mine + 1

    def leave(self, owner: str | None) -> None:
        with self._lock:
            self.total -= 1
            if owner is not None:
                left = self.owners[owner] - 1
                if left:
                    self.owners[owner] = left
                else:
                    del self.owners[owner]  # bounded: only owners with a body in the pool


_QUEUE = _BoundedQueue()
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    """The inflating threads, started on first use (a process that never sees a large
    compressed body starts none)."""
    global _POOL  # one pool per process, made once
    if _POOL is None:
        with _POOL_LOCK:
            if _POOL is None:
                _POOL = ThreadPoolExecutor(INFLATE_THREADS, thread_name_prefix="inflate")
    return _POOL


def body_decoder(
    content_encoding: bytes, limit: int, owner: str | None = None
) -> BodyDecoder | None:
    """The decoder of a ``Content-Encoding`` value (None: ``identity``, nothing to undo);
    UNSUPPORTED (answered 415) for a coding modelgate does not inflate, or for more than
    one coding. ``owner``: whose body it is (a tenant, an address), for the pool's bound
    per owner."""
    coding = content_encoding.strip().lower()
    if coding == _IDENTITY or not coding:
        return None
    wbits = _WBITS.get(coding)
    if wbits is None:
        raise ModelgateError(
            ErrorKind.UNSUPPORTED,
            f"Content-Encoding '{content_encoding.decode('latin-1')}' is not supported; "
            "send gzip, deflate or identity",
            details={"http_status": 415},
        )
    return BodyDecoder(coding.decode("ascii"), wbits, limit, owner=owner)
