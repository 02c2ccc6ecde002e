"""Inflating compressed request bodies (api/rest/content_encoding.py) on the loop up to a
small budget and in the inflating threads beyond it: whatever the split between the two and
however the body arrives in chunks, the result is zlib's own; a bomb is 413 and a broken
body 400 either way; and however many large bodies are inflated at once, at most
``INFLATE_THREADS`` threads inflate them."""

from __future__ import annotations

import asyncio
import gzip
import itertools
import threading
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelgate.api.rest import content_encoding
from modelgate.api.rest.content_encoding import INFLATE_THREADS, BodyDecoder, body_decoder
from modelgate.errors import ErrorKind, ModelgateError

LIMIT = 256 * 1024
CODINGS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "deflate": zlib.compress,
}


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


async def _inflate(coding: str, data: bytes, cuts: list[int], inline: int, limit: int) -> bytes:
    assert body_decoder(coding.encode(), limit) is not None  # a coding the server inflates
    decoder = BodyDecoder(coding, WBITS[coding], limit, inline)  # with the budget under test
    for chunk in _chunks(data, cuts):
        decoder.feed(chunk)
    return await decoder.finish()


_bodies = st.one_of(
    st.binary(max_size=4096),
    # compressible: long runs, as JSON and tensors have
    st.lists(st.tuples(st.binary(min_size=1, max_size=3), st.integers(1, 20_000)), max_size=8).map(
        lambda runs: b"".join(part * n for part, n in runs)
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=_bodies,
    coding=st.sampled_from(sorted(CODINGS)),
    members=st.integers(1, 3),
    cuts=st.lists(st.integers(0, 1 << 20), max_size=6),
    inline=st.sampled_from([0, 1, 7, 1024, content_encoding.INLINE_BYTES, LIMIT * 2]),
)
async def test_any_split_inflates_to_zlibs_result(
    body: bytes, coding: str, members: int, cuts: list[int], inline: int
) -> None:
    count = members if coding == "gzip" else 1  # deflate (zlib) has one stream
    data = CODINGS[coding](body) * count
    expected = body * count
    if len(expected) > LIMIT:
        with pytest.raises(ModelgateError) as over:
            await _inflate(coding, data, cuts, inline, LIMIT)
        assert over.value.kind is ErrorKind.PAYLOAD_TOO_LARGE
    else:
        assert await _inflate(coding, data, cuts, inline, LIMIT) == expected


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(LIMIT + 1, LIMIT * 64),
    coding=st.sampled_from(sorted(CODINGS)),
    cuts=st.lists(st.integers(0, 1 << 20), max_size=4),
    inline=st.sampled_from([0, 1024, content_encoding.INLINE_BYTES]),
)
async def test_a_bomb_is_413_on_the_loop_or_in_a_thread(
    size: int, coding: str, cuts: list[int], inline: int
) -> None:
    data = CODINGS[coding](b"\0" * size)
    with pytest.raises(ModelgateError) as over:
        await _inflate(coding, data, cuts, inline, LIMIT)
    assert over.value.kind is ErrorKind.PAYLOAD_TOO_LARGE
    assert over.value.message == f"the decompressed body is over the limit of {LIMIT} bytes"


@settings(max_examples=60, deadline=None)
@given(
    body=st.binary(min_size=1, max_size=200_000),
    coding=st.sampled_from(sorted(CODINGS)),
    flip=st.integers(0, 1 << 30),
    cut_end=st.integers(1, 64),
    inline=st.sampled_from([0, content_encoding.INLINE_BYTES]),
)
async def test_a_broken_body_is_invalid_argument_either_way(
    body: bytes, coding: str, flip: int, cut_end: int, inline: int
) -> None:
    data = bytearray(CODINGS[coding](body))
    truncated = bytes(data[: max(len(data) - cut_end, 0)])
    with pytest.raises(ModelgateError) as broken:
        await _inflate(coding, truncated, [], inline, LIMIT * 4)
    assert broken.value.kind is ErrorKind.INVALID_ARGUMENT
    data[flip % len(data)] ^= 0xFF
    found = await _outcome(_inflate(coding, bytes(data), [], inline, LIMIT * 4))
    # most flips break the data or its checksum; one in a gzip header's time field does not
    assert found == body or (
        isinstance(found, ModelgateError) and found.kind is ErrorKind.INVALID_ARGUMENT
    )


async def _outcome(inflating: Awaitable[bytes]) -> bytes | ModelgateError:
    try:
        return await inflating
    except ModelgateError as exc:
        return exc


async def test_small_bodies_never_leave_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_thread() -> Any:
        raise AssertionError("a small body was sent to a thread")

    monkeypatch.setattr(content_encoding, "_pool", no_thread)
    body = b'{"inputs": []}' * (content_encoding.INLINE_BYTES // 15)
    assert len(body) <= content_encoding.INLINE_BYTES
    for cuts in ([], [5, 50, 500]):
        data = gzip.compress(body)
        assert await _inflate("gzip", data, cuts, content_encoding.INLINE_BYTES, LIMIT) == body


async def test_at_most_inflate_threads_inflate_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Twelve large bodies finishing together: the inflating threads take INFLATE_THREADS of
    them, the others wait their turn (counted inside the threads), and all end inflated."""
    release = threading.Event()
    lock = threading.Lock()
    running = [0, 0]  # now, most at once
    inflate = BodyDecoder._inflate
    loop = asyncio.get_running_loop()
    full = asyncio.Event()  # every inflating thread has a body

    def counted(self: BodyDecoder, data: bytes, budget: int | None) -> bytes | None:
        if threading.current_thread() is threading.main_thread():  # the loop's share
            return inflate(self, data, budget)
        with lock:
            running[0] += 1
            running[1] = max(running)
            if running[0] == INFLATE_THREADS:
                loop.call_soon_threadsafe(full.set)
        try:
            release.wait(timeout=60)
            return inflate(self, data, budget)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(BodyDecoder, "_inflate", counted)
    bodies = [bytes([i]) * (LIMIT // 2) for i in range(12)]
    decoders = []
    for body in bodies:
        decoder = BodyDecoder("gzip", WBITS["gzip"], LIMIT, inline=1024)
        decoder.feed(gzip.compress(body))
        decoders.append(decoder)
    finishing = [asyncio.create_task(d.finish()) for d in decoders]
    await full.wait()  # the threads have taken their bodies...
    for _ in range(20):  # ...and the others, given every chance, wait
        await asyncio.sleep(0.01)
    assert running == [INFLATE_THREADS, INFLATE_THREADS]
    assert not any(task.done() for task in finishing)
    release.set()
    assert await asyncio.gather(*finishing) == bodies
    assert running == [0, INFLATE_THREADS]


# -- the pool's bounded queue --------------------------------------------------------------
def _large(owner: str | None, fill: int = 0) -> BodyDecoder:
    decoder = BodyDecoder("gzip", WBITS["gzip"], LIMIT, inline=1024, owner=owner)
    decoder.feed(gzip.compress(bytes([fill]) * (LIMIT // 2)))
    return decoder


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(owners=st.lists(st.sampled_from(["a", "b", "c", "d", "e", None]), max_size=40))
async def test_the_pool_admits_bodies_up_to_its_bounds_and_refuses_503_beyond(
    owners: list[str | None],
) -> None:
    """With the inflating threads busy, bodies finishing one after another are admitted
    while the pool holds fewer than MAX_INFLATING and their owner fewer than
    MAX_INFLATING_PER_OWNER; any other is refused at once, OVERLOADED with Retry-After
    (503 in the route's shape), and the bounds free up as the admitted ones end."""
    release = threading.Event()
    blockers = [content_encoding._pool().submit(release.wait, 60) for _ in range(INFLATE_THREADS)]
    admitted: list[asyncio.Task[bytes]] = []
    total, mine = 0, dict.fromkeys("abcde", 0)
    try:
        for index, owner in enumerate(owners):
            decoder = _large(owner, index % 256)
            expect = total < content_encoding.MAX_INFLATING and (
                owner is None or mine[owner] < content_encoding.MAX_INFLATING_PER_OWNER
            )
            task = asyncio.create_task(decoder.finish())
            await asyncio.sleep(0)  # finish() runs to its first wait: admitted, or refused
            if expect:
                assert not task.done()
                admitted.append(task)
                total += 1
                if owner is not None:
                    mine[owner] += 1
            else:
                with pytest.raises(ModelgateError) as refused:
                    await task
                assert refused.value.kind is ErrorKind.OVERLOADED
                assert refused.value.retry_after is not None and refused.value.retry_after > 0
    finally:
        release.set()
        for blocker in blockers:
            await asyncio.wrap_future(blocker)
        await asyncio.gather(*admitted)
    for _ in range(100):  # each admitted body leaves the count from its thread
        if content_encoding._QUEUE.total == 0:
            break
        await asyncio.sleep(0.01)
    assert content_encoding._QUEUE.total == 0 and not content_encoding._QUEUE.owners
    assert await _large("a").finish() == bytes([0]) * (LIMIT // 2)  # free again
