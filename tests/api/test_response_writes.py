"""Answers over a real connection with each head held for its body
(api/rest/response_writes.py): pipelined requests are answered whole and in order, an
``Expect: 100-continue`` gets its interim answer before the body is sent, and a HEAD-like
empty answer and an error still arrive complete."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from modelgate.server import Server

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROW = orjson.dumps(
    {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
)


def post(path: str, body: bytes, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


async def answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode("latin-1")
    lines = head.split("\r\n")
    length = next(
        int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length")
    )
    body = await asyncio.wait_for(reader.readexactly(length), 10)
    return int(lines[0].split()[1]), body


async def test_pipelined_requests_are_answered_whole_and_in_order(server: Server) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.http_port)
    try:
        writer.write(
            post("/v2/models/doubler/infer", ROW)
            + post("/v2/models/missing/infer", ROW)
            + post("/v2/models/doubler/infer", ROW)
        )
        first, missing, last = [await answer(reader) for _ in range(3)]
    finally:
        writer.close()

    assert first[0] == 200 and orjson.loads(first[1])["outputs"][0]["data"] == [3, 6, 9, 12]
    assert missing[0] == 404 and b"error" in missing[1]
    assert last == first


async def test_an_expect_100_continue_is_answered_before_the_body_is_sent(server: Server) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.http_port)
    try:
        request = post("/v2/models/doubler/infer", ROW, "expect: 100-continue\r\n")
        head, _, body = request.partition(b"\r\n\r\n")
        writer.write(head + b"\r\n\r\n")
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        writer.write(body)
        status, answered = await answer(reader)
    finally:
        writer.close()

    assert interim.startswith(b"HTTP/1.1 100")
    assert status == 200 and orjson.loads(answered)["outputs"][0]["data"] == [3, 6, 9, 12]


async def test_a_head_request_gets_its_head_on_a_kept_connection(server: Server) -> None:
    """A HEAD answer announces a Content-Length but has no body to wait for: its head is
    written at once, and the connection serves the next request."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.http_port)
    try:
        writer.write(b"HEAD /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        writer.write(post("/v2/models/doubler/infer", ROW))
        status, answered = await answer(reader)
    finally:
        writer.close()

    assert head.startswith(b"HTTP/1.1 ") and b"content-length" in head.lower()
    assert status == 200 and orjson.loads(answered)["outputs"][0]["data"] == [3, 6, 9, 12]
