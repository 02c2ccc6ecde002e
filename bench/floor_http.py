"""HTTP floors: what answering costs before any model or JSON work.

- ``python -m bench.floor_http --port 9000``: a uvloop Protocol with httptools that answers
  every request with a canned credit-risk response: the machine's own round trip.
- ``uvicorn bench.floor_http:app``: a bare ASGI callable that reads the body and sends the
  same canned response through uvicorn: what uvicorn itself costs per request.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import httptools
import uvloop

BODY = (
    b'{"model_name":"credit-risk","model_version":"2","outputs":[{"name":"label",'
    b'"datatype":"INT64","shape":[1],"data":[0]},{"name":"probabilities","datatype":"FP32",'
    b'"shape":[1,2],"data":[0.92158574,0.07841426]}]}'
)
RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
    + str(len(BODY)).encode()
    + b"\r\n\r\n"
    + BODY
)
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": BODY})


class Floor(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_message_complete(self) -> None:
        self.transport.write(RESPONSE)  # type: ignore[attr-defined]


async def serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Floor, "127.0.0.1", port, backlog=2048)
    print(f"floor HTTP ready on {port}", flush=True)
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    uvloop.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
