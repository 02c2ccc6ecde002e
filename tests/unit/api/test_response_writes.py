"""An answer's head and body leave in one write (api/rest/response_writes.py): what a
request cycle writes, as the transport under it sees it."""

from __future__ import annotations

import asyncio
from typing import cast

from hypothesis import given
from hypothesis import strategies as st

from modelgate.api.rest.response_writes import HeadHoldingTransport

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 7\r\n\r\n"


class RecordingTransport:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[bytes, ...]]] = []

    def write(self, data: bytes) -> None:
        self.calls.append(("write", (data,)))

    def writelines(self, data: tuple[bytes, ...]) -> None:
        self.calls.append(("writelines", tuple(data)))

    def close(self) -> None:
        self.calls.append(("close", ()))

    def is_closing(self) -> bool:
        return False


def holding() -> tuple[HeadHoldingTransport, RecordingTransport]:
    inner = RecordingTransport()
    return HeadHoldingTransport(cast(asyncio.Transport, inner)), inner


def test_a_head_with_a_length_leaves_with_its_body_in_one_call() -> None:
    transport, inner = holding()
    transport.write(HEAD)
    assert inner.calls == []
    transport.write(b'{"a":1}')
    assert inner.calls == [("writelines", (HEAD, b'{"a":1}'))]


def test_an_empty_body_still_sends_the_head() -> None:  # HEAD requests, 304
    transport, inner = holding()
    transport.write(HEAD)
    transport.write(b"")
    assert inner.calls == [("writelines", (HEAD, b""))]


def test_a_chunked_head_and_an_interim_answer_are_not_held() -> None:
    transport, inner = holding()
    transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    transport.write(chunked)
    transport.write(b"3\r\nabc\r\n")
    assert inner.calls == [
        ("write", (b"HTTP/1.1 100 Continue\r\n\r\n",)),
        ("write", (chunked,)),
        ("write", (b"3\r\nabc\r\n",)),
    ]


def test_a_head_held_when_the_cycle_closes_is_sent_before_the_close() -> None:
    transport, inner = holding()
    transport.write(HEAD)
    transport.close()
    assert inner.calls == [("write", (HEAD,)), ("close", ())]


@given(st.binary(max_size=64) | st.just(HEAD))
def test_writes_after_the_head_go_out_unchanged(data: bytes) -> None:
    transport, inner = holding()
    transport.write(HEAD)
    transport.write(b"1234567")
    transport.write(data)
    assert inner.calls[-1] == ("write", (data,))
    assert b"".join(b"".join(parts) for _, parts in inner.calls) == HEAD + b"1234567" + data
