"""A read that repeats, byte for byte, the last one (a whole request the refusal memo
refused in the HTTP protocol) is answered without being parsed again, and only while
everything that decided its refusal still holds (api/rest/http_protocol.py, ``_replayed``;
api/rest/early_refusals.py, ``EarlyRefusals.again``). The protocol here is uvicorn's, on a
transport that records what is written, with a memo on a clock the test moves."""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.server import ServerState

from modelgate.api.credentials import PRINCIPAL
from modelgate.api.rest.early_refusals import EarlyRefusals
from modelgate.api.rest.http_protocol import LimitedHttpToolsProtocol, limited_protocol
from modelgate.core.access.identity import Plan, Principal
from modelgate.core.admission.refusals import RefusalMemo
from modelgate.errors import ErrorKind, ModelgateError

CALLER = Principal("tenant", "key", frozenset({"infer"}), Plan(name="refusing"))
BODY = b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,1],"data":[1]}]}'


def request(extra: bytes = b"") -> bytes:
    return (
        b"POST /v2/models/m/infer HTTP/1.1\r\nhost: x\r\nauthorization: Bearer k\r\n"
        b"content-type: application/json\r\ncontent-length: %d\r\n"
        % len(BODY)
        + extra
        + b"\r\n"
        + BODY
    )


class Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def writelines(self, data: Any) -> None:
        self.written.append(b"".join(data))

    def close(self) -> None:
        self.closing = True

    abort = close

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class CountingParser:
    """httptools' parser, its feeds counted."""

    def __init__(self, parser: Any) -> None:
        self.parser = parser
        self.feeds = 0

    def feed_data(self, data: bytes) -> None:
        self.feeds += 1
        self.parser.feed_data(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.parser, name)


class World:
    def __init__(self) -> None:
        self.now = 1000.0
        self.memo = RefusalMemo(clock=lambda: self.now)
        self.app_calls = 0

    def refuse(self, seconds: float = 1.0) -> None:
        error = ModelgateError(ErrorKind.RATE_LIMITED, "rate limit exceeded", retry_after=5)
        self.memo.remember(
            CALLER, error, "rate_limit", asked_at=self.now, certain_s=seconds, reset_s=5
        )

    async def app(self, scope: Any, receive: Any, send: Any) -> None:
        self.app_calls += 1
        scope[PRINCIPAL] = CALLER  # whom modelgate's app found: the protocol remembers it
        await receive()
        headers = [(b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"{}"})

    async def connection(self) -> tuple[LimitedHttpToolsProtocol, Transport, CountingParser]:
        config = uvicorn.Config(
            self.app,
            interface="asgi3",
            lifespan="off",
            log_config=None,
            access_log=False,
            date_header=False,
            proxy_headers=False,
        )
        config.load()
        protocol_class = limited_protocol(
            max_header_bytes=16384,
            header_timeout_s=10,
            max_connections=4096,
            refusals=EarlyRefusals(self.memo),
        )
        protocol = protocol_class(config=config, server_state=ServerState(), app_state={})
        transport = Transport()
        protocol.connection_made(transport)  # type: ignore[arg-type]
        parser = protocol.parser = CountingParser(protocol.parser)
        await self.read(protocol, request())  # the app authenticates the connection's caller
        assert self.app_calls == 1
        return protocol, transport, parser

    async def read(self, protocol: LimitedHttpToolsProtocol, data: bytes) -> None:
        protocol.data_received(data)
        for _ in range(3):  # a request that went to the app runs and completes
            await asyncio.sleep(0)


def statuses(transport: Transport) -> list[int]:
    return [int(w.split(b" ", 2)[1]) for w in transport.written]


async def test_a_repeated_read_is_refused_without_parsing_counted_each_time() -> None:
    world = World()
    protocol, transport, parser = await world.connection()
    world.refuse()
    for _ in range(6):
        await world.read(protocol, request())
    assert statuses(transport) == [200] + [429] * 6
    assert world.app_calls == 1
    assert parser.feeds == 2  # the app's request and the first refusal: the rest replayed
    ids = {w.partition(b"x-request-id: ")[2].partition(b"\r\n")[0] for w in transport.written[1:]}
    assert len(ids) == 6  # each refusal its own request id
    assert world.memo.line(CALLER) is not None  # every refusal went through the memo


async def test_the_same_bytes_are_parsed_and_served_once_the_memo_lets_them_through() -> None:
    world = World()
    protocol, transport, parser = await world.connection()
    world.refuse(seconds=1.0)
    await world.read(protocol, request())
    await world.read(protocol, request())
    assert parser.feeds == 2
    world.now += 1.5  # the note lapsed: the next request is the app's (served here)
    await world.read(protocol, request())
    assert statuses(transport) == [200, 429, 429, 200]
    assert world.app_calls == 2 and parser.feeds == 3
    world.refuse()  # noted again: refused, read once, then replayed
    await world.read(protocol, request())
    await world.read(protocol, request())
    assert statuses(transport)[-2:] == [429, 429]
    assert parser.feeds == 4


async def test_only_a_read_that_was_one_whole_request_is_replayed() -> None:
    world = World()
    protocol, transport, parser = await world.connection()
    world.refuse(seconds=1000)
    whole = request()
    # split across two reads: refused, but not kept
    await world.read(protocol, whole[:40])
    await world.read(protocol, whole[40:])
    await world.read(protocol, whole)  # parsed, refused, kept
    await world.read(protocol, whole)  # replayed
    assert parser.feeds == 1 + 3
    # two pipelined requests in one read: refused in order, not kept
    await world.read(protocol, whole + whole)
    await world.read(protocol, whole + whole)
    assert parser.feeds == 1 + 5
    # other bytes (another request id) are parsed, and the client's id is answered
    await world.read(protocol, request(b"x-request-id: mine\r\n"))
    assert parser.feeds == 1 + 6
    assert b"x-request-id: mine" in transport.written[-1]
    assert statuses(transport) == [200] + [429] * 8
    assert world.app_calls == 1
